package relays

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/logging"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// rawPeer is an attacker with a plain TCP socket speaking the tcp
// transport's frames.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
}

func dialRaw(t *testing.T, addr string) *rawPeer {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c}
}

func (p *rawPeer) send(onward, ret string, payload []byte) {
	p.t.Helper()
	m := routing.Message{Onward: routing.MustParseRoute(onward), Return: routing.MustParseRoute(ret), Payload: payload}
	b, err := routing.Codec{}.Encode(&m)
	if err != nil {
		p.t.Fatal(err)
	}
	h := []byte{tcptransport.FrameVersion, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[2:], uint32(len(b)))
	if _, err := p.conn.Write(append(h, b...)); err != nil {
		p.t.Fatal(err)
	}
}

// recv reads the next data frame and decodes it.
func (p *rawPeer) recv() routing.Message {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(testDeadline))
	for {
		h := make([]byte, 6)
		if _, err := ioFull(p.conn, h); err != nil {
			p.t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint32(h[2:]))
		if _, err := ioFull(p.conn, b); err != nil {
			p.t.Fatal(err)
		}
		if h[1] != 1 {
			continue
		}
		m, err := routing.Codec{}.Decode(b)
		if err != nil {
			p.t.Fatal(err)
		}
		return m
	}
}

func ioFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A name registered by one registrant cannot be taken by another: an
// attacker re-registering forward_to_n3 from a raw socket is refused every
// time, the refusals are logged rate-limited, and n3 keeps getting its
// traffic.
func TestOwnedNameCannotBeTaken(t *testing.T) {
	logs := &syncBuf{}
	n2 := newNode(t, "n2")
	tr := tcptransport.New()
	t.Cleanup(func() { tr.Close() })
	b2, err := transports.Attach(n2, tr, transports.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	svc, err := StartService(n2, ServiceConfig{Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}), Flows: ListenerFlows("", b2)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	l, err := b2.Listen(ctxT(t), "127.0.0.1:0", "relay")
	if err != nil {
		t.Fatal(err)
	}

	n3, b3 := tcpNode(t, "n3")
	if _, err := n3.StartWorker("echo3", services.Echo{}); err != nil {
		t.Fatal(err)
	}
	reg, err := Register(ctxT(t), n3, routing.MustParseRoute("/tcp/"+l.Address+"/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	_ = b3

	attacker := dialRaw(t, l.Address)
	const tries = 50
	for i := 0; i < tries; i++ {
		req, _ := (&control{Kind: kindRegister, Nonce: uint64(i + 1), Name: "n3", Proof: fmt.Sprintf("forged-%d", i)}).encode()
		attacker.send("/service/relay", "/service/attacker", req)
		m := attacker.recv()
		resp, err := decodeControl(m.Payload)
		if err != nil || resp.Kind != kindError || !strings.Contains(resp.Error, "another registrant") {
			t.Fatalf("forged registration %d answered %+v, %v", i, resp, err)
		}
	}
	// A registration with no proof at all is refused too.
	req, _ := (&control{Kind: kindRegister, Nonce: 99, Name: "n3"}).encode()
	attacker.send("/service/relay", "/service/attacker", req)
	if resp, _ := decodeControl(attacker.recv().Payload); resp.Kind != kindError {
		t.Fatalf("proofless registration: %+v", resp)
	}
	// n3 still owns the name: a client through n2 reaches n3's echo.
	client, bc := tcpNode(t, "client")
	_ = bc
	for i := 0; i < 10; i++ {
		got, err := node.Request(ctxT(t), client, routing.MustParseRoute("/tcp/"+l.Address+"/service/forward_to_n3/service/echo3"), fmt.Sprint("msg ", i))
		if err != nil || got != fmt.Sprint("msg ", i) {
			t.Fatalf("message %d for n3: %q, %v", i, got, err)
		}
	}
	if fi, _ := svc.Get("n3"); fi.Registrations != 1 || fi.Forwarded != 10 {
		t.Fatalf("forwarder: %+v", fi)
	}
	refusals := strings.Count(logs.String(), "belongs to another registrant")
	t.Logf("%d forged registrations refused; %d log lines about them", tries, refusals)
	if refusals == 0 || refusals > 10 {
		t.Fatalf("%d log lines for %d refusals; want a few (rate-limited)", refusals, tries)
	}
}

// Registrations are capped per relay service and expire without
// keepalive, so a flood of them neither grows without limit nor stays.
func TestRegistrationFloodCappedAndExpires(t *testing.T) {
	now := time.Unix(1e9, 0)
	var clock sync.Mutex
	n := newNode(t, "n2")
	logs := &syncBuf{}
	svc, err := StartService(n, ServiceConfig{MaxRegistrations: 20, ExpireChecks: 2,
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
		now:    func() time.Time { clock.Lock(); defer clock.Unlock(); return now }, sweep: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	accepted, refused := 0, 0
	for i := 0; i < 200; i++ {
		req, _ := (&control{Kind: kindRegister, Name: fmt.Sprint("flood", i), Proof: "p", Interval: time.Second}).encode()
		m, err := n.SendAndReceive(ctxT(t), routing.MustParseRoute("/service/relay"), req)
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := decodeControl(m.Payload)
		switch {
		case resp.Kind == kindRegistered:
			accepted++
		case resp.Kind == kindError && strings.Contains(resp.Error, "maximum"):
			refused++
		default:
			t.Fatalf("%+v", resp)
		}
	}
	if accepted != 20 || refused != 180 || len(svc.List()) != 20 {
		t.Fatalf("accepted %d, refused %d, held %d; cap 20", accepted, refused, len(svc.List()))
	}
	// The flood writes a few lines at info level, not one per registration
	// or refusal.
	registered := strings.Count(logs.String(), "relay registered")
	full := strings.Count(logs.String(), "holds its maximum")
	if registered == 0 || registered > logging.DefaultBurst || full == 0 || full > logging.DefaultBurst {
		t.Fatalf("%d lines for 20 registrations, %d for 180 refusals; want 1 to %d each (rate-limited):\n%s", registered, full, logging.DefaultBurst, logs)
	}
	// Without a word from their registrants they expire after 2 intervals
	// (plus slack)...
	clock.Lock()
	now = now.Add(2 * time.Second)
	clock.Unlock()
	svc.expire()
	if len(svc.List()) != 20 {
		t.Fatal("expired too early")
	}
	clock.Lock()
	now = now.Add(2 * time.Second)
	clock.Unlock()
	svc.expire()
	if got := len(svc.List()); got != 0 {
		t.Fatalf("%d registrations left after expiry", got)
	}
	eventually(t, "forwarder workers stopped", func() bool {
		for _, w := range n.Workers() {
			if strings.HasPrefix(w.Addresses[0], ForwarderPrefix) {
				return false
			}
		}
		return true
	})
}

// A registrant that keeps checking in keeps its forwarder past the expiry,
// and a Set keeps its secret in SecretFile, so a restarted node gets its
// name back.
func TestSecretFileKeepsTheName(t *testing.T) {
	n := newNode(t, "n2")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	file := filepath.Join(t.TempDir(), "relay.secret")
	var first Set
	first.SecretFile = file
	if _, err := first.Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", Options{CheckInterval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", st, err)
	}
	// The "restarted" node: a new Set with the same file takes over the
	// name; one with another secret cannot.
	var other Set
	if _, err := other.Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", Options{CheckInterval: time.Hour}); err == nil || !strings.Contains(err.Error(), "another registrant") {
		t.Fatalf("another registrant: %v", err)
	}
	var again Set
	again.SecretFile = file
	if _, err := again.Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", Options{CheckInterval: time.Hour}); err != nil {
		t.Fatalf("same secret file: %v", err)
	}
	_ = first.Close(context.Background())
	_ = again.Close(context.Background())
}
