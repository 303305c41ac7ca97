package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/api/daemon"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// inproc runs the TCP transport in this process: the daemon is the same
// whether its transport is a plugin subprocess or not.
type inproc struct{ t transport.Transport }

func (p *inproc) Transport(ctx context.Context, name string) (transport.Transport, error) {
	if name != "tcp" {
		return nil, errors.New("only tcp here")
	}
	p.t = tcptransport.New()
	return p.t, p.t.Configure(ctx, map[string]string{})
}

func (p *inproc) Plugins(context.Context) ([]api.Plugin, error) {
	return []api.Plugin{{Name: "tcp", Running: p.t != nil}}, nil
}

func (p *inproc) Watch(transport.Transport, func()) func() { return func() {} }

func (p *inproc) Close() error {
	if p.t != nil {
		return p.t.Close()
	}
	return nil
}

type runningNode struct {
	c    *api.Client
	st   api.Status
	done chan error
	h    *state.Home
}

func startNode(t *testing.T, h *state.Home, name string) *runningNode {
	t.Helper()
	cfg := &state.NodeConfig{Name: name, Listeners: []state.Listener{{Transport: "tcp", Address: "127.0.0.1:0", Default: true}}}
	if !h.Exists(name) {
		if err := h.Create(cfg); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan api.Status, 1)
	rn := &runningNode{done: make(chan error, 1), h: h}
	go func() {
		rn.done <- daemon.Run(ctx, daemon.Options{Config: *cfg, Home: h, Logger: hclog.NewNullLogger(),
			Transports: &inproc{}, Ready: func(st api.Status) { ready <- st }})
	}()
	select {
	case rn.st = <-ready:
	case err := <-rn.done:
		cancel()
		t.Fatalf("node %s did not start: %v", name, err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("node %s not ready in time", name)
	}
	rn.c = api.NewClient(h.SocketPath(name))
	t.Cleanup(func() {
		rn.c.Close()
		cancel()
		select {
		case <-rn.done:
		case <-time.After(10 * time.Second):
			t.Errorf("node %s did not stop", name)
		}
	})
	return rn
}

func TestControlAPI(t *testing.T) {
	h, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n1 := startNode(t, h, "n1")
	n2 := startNode(t, h, "n2")

	st, err := os.Stat(h.SocketPath("n1"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if got := n1.st; got.Name != "n1" || got.Pid != os.Getpid() || len(got.Listeners) != 1 || !got.Listeners[0].Default {
		t.Fatalf("status %+v", got)
	}
	svcs, err := n1.c.Services(ctx)
	if err != nil || len(svcs) != 4 { // echo, uppercase, the relay service and the secure channel listener
		t.Fatalf("services %v, %v", svcs, err)
	}
	if _, err := n1.c.StartService(ctx, api.StartServiceRequest{Type: "hop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.c.StartService(ctx, api.StartServiceRequest{Type: "hop"}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second hop: %v", err)
	}
	if _, err := n1.c.StartService(ctx, api.StartServiceRequest{Type: "nope"}); err == nil || !strings.Contains(err.Error(), `unknown service type "nope"; the types are: echo, hop, relay`) {
		t.Fatalf("unknown service: %v", err)
	}
	ws, err := n1.c.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, w := range ws {
		addrs = append(addrs, w.Addresses...)
	}
	for _, want := range []string{"/service/echo", "/service/uppercase", "/service/hop"} {
		if !strings.Contains(strings.Join(addrs, " "), want) {
			t.Errorf("workers %v lack %s", addrs, want)
		}
	}

	r, err := n1.c.Send(ctx, api.SendRequest{Route: "/service/hop/service/uppercase", Payload: []byte("hello")})
	if err != nil || string(r.Payload) != "HELLO" {
		t.Fatalf("local send: %q, %v", r.Payload, err)
	}
	_, err = n1.c.Send(ctx, api.SendRequest{Route: "/service/missing", Payload: []byte("x")})
	if !api.IsNotFound(err) {
		t.Fatalf("send to missing worker: %v, want not found", err)
	}
	_, err = n1.c.Send(ctx, api.SendRequest{Route: "service/echo"})
	if err == nil || !strings.Contains(err.Error(), "must start with '/'") {
		t.Fatalf("bad route: %v", err)
	}

	// Over TCP: n2 sends to n1's listener; a connection's worker is usable.
	l1 := n1.st.Listeners[0].Address
	r, err = n2.c.Send(ctx, api.SendRequest{Route: "/tcp/" + l1 + "/service/echo", Payload: []byte("over tcp")})
	if err != nil || string(r.Payload) != "over tcp" {
		t.Fatalf("tcp send: %q, %v", r.Payload, err)
	}
	conn, err := n2.c.CreateConnection(ctx, api.CreateRequest{Transport: "tcp", Address: l1})
	if err != nil || !strings.HasPrefix(conn.Worker, "/worker/") {
		t.Fatalf("connection %+v, %v", conn, err)
	}
	r, err = n2.c.Send(ctx, api.SendRequest{Route: conn.Worker + "/service/uppercase", Payload: []byte("abc")})
	if err != nil || string(r.Payload) != "ABC" {
		t.Fatalf("send over connection: %q, %v", r.Payload, err)
	}
	// Network input may not reach the node's "app" mailbox.
	_, err = n2.c.Send(ctx, api.SendRequest{Route: conn.Worker + "/service/app", Payload: []byte("x"), Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("send to a denied worker: %v", err)
	}
	if err := n2.c.DeleteConnection(ctx, conn.ID); err != nil {
		t.Fatal(err)
	}
	if err := n2.c.DeleteConnection(ctx, conn.ID); !api.IsNotFound(err) {
		t.Fatalf("delete twice: %v", err)
	}

	l, err := n1.c.CreateListener(ctx, api.CreateRequest{Transport: "tcp", Address: "127.0.0.1:0"})
	if err != nil || strings.HasSuffix(l.Address, ":0") {
		t.Fatalf("listener %+v, %v", l, err)
	}
	if _, err := n1.c.CreateListener(ctx, api.CreateRequest{Transport: "tcp", Address: "not an address"}); err == nil {
		t.Fatal("bad listener address accepted")
	}
	ls, _ := n1.c.Listeners(ctx)
	if len(ls) != 2 || !ls[0].Default || ls[1].Requested != "127.0.0.1:0" || ls[1].AddressType != "tcp" || !ls[1].Up {
		t.Fatalf("listeners %+v", ls)
	}
	if got, err := n1.c.Listener(ctx, l.Address); err != nil || got.ID != l.ID {
		t.Fatalf("listener by address: %+v, %v", got, err)
	}
	if _, err := n1.c.Listener(ctx, "nope"); !api.IsNotFound(err) {
		t.Fatalf("unknown listener: %v", err)
	}
	// Settings belong to the whole transport: other ones are refused.
	_, err = n1.c.CreateListener(ctx, api.CreateRequest{Transport: "tcp", Address: "127.0.0.1:0", Settings: map[string]string{"keepalive": "1s"}})
	if err == nil || !strings.Contains(err.Error(), "already runs on this node with settings") {
		t.Fatalf("listener with other settings: %v", err)
	}
	if _, err := n1.c.CreateListener(ctx, api.CreateRequest{Address: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "--transport") {
		t.Fatalf("listener without a transport: %v", err)
	}
	// An explicit allow list is what network input may reach.
	la, err := n1.c.CreateListener(ctx, api.CreateRequest{Transport: "tcp", Address: "127.0.0.1:0", Allow: []string{"/service/echo"}})
	if err != nil || len(la.Allow) != 1 || la.Allow[0] != "/service/echo" {
		t.Fatalf("listener with allow: %+v, %v", la, err)
	}
	if _, err := n2.c.Send(ctx, api.SendRequest{Route: "/tcp/" + la.Address + "/service/uppercase", Payload: []byte("x"), Timeout: 300 * time.Millisecond}); err == nil {
		t.Fatal("uppercase reached over a listener that allows only echo")
	}
	if err := n1.c.DeleteListener(ctx, la.ID); err != nil {
		t.Fatal(err)
	}
	if err := n1.c.DeleteListener(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := n1.c.DeleteListener(ctx, l.ID); !api.IsNotFound(err) {
		t.Fatalf("delete listener twice: %v", err)
	}
	ps, err := n1.c.Plugins(ctx)
	if err != nil || len(ps) != 1 || !ps[0].Running {
		t.Fatalf("plugins %+v, %v", ps, err)
	}

	// A second server on a live socket is refused; shutdown stops Run.
	if _, err := api.Listen(h.SocketPath("n1"), nil, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen: %v", err)
	}
	if err := n1.c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-n1.done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
		n1.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not stop the node")
	}
	if _, err := os.Stat(h.SocketPath("n1")); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if _, err := n1.c.Status(ctx); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("status of a stopped node: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	h, _ := state.Open(t.TempDir())
	h.Create(&state.NodeConfig{Name: "n1"})
	// A socket file nobody serves, as a SIGKILLed node leaves behind.
	if err := os.WriteFile(h.SocketPath("n1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, h, "n1")
	if _, err := n.c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLooseSocketDirRefused(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	_, err := api.Listen(dir+"/api.sock", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzAPIRequest throws arbitrary bodies at every POST endpoint of a real
// node over its socket: the answer is always a JSON reply, never a crash.
func FuzzAPIRequest(f *testing.F) {
	for _, s := range []string{`{"route":"/service/echo","payload":"aGk="}`, `{"type":"hop"}`, `{"address":"127.0.0.1:0"}`,
		`{`, `{"route":"/tcp/x"}{}`, `{"bogus":1}`, `{"route":"/node/n1/service/echo"}`, `null`, ``} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
	}
	h, err := state.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	h.Create(&state.NodeConfig{Name: "fz"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		// No transports: nothing a fuzzed body says can reach the network.
		done <- daemon.Run(ctx, daemon.Options{Config: state.NodeConfig{Name: "fz"}, Home: h, Logger: hclog.NewNullLogger(),
			Ready: func(api.Status) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		f.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", h.SocketPath("fz"))
	}}}
	paths := []string{"/v1/messages", "/v1/services", "/v1/listeners", "/v1/connections", "/v1/no-such-route"}
	f.Fuzz(func(t *testing.T, body string, which uint8) {
		// A message to a worker that never replies waits for its timeout;
		// the client gives up early, which cancels the call on the node.
		rctx, rcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer rcancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodPost, "http://fz"+paths[int(which)%len(paths)], bytes.NewBufferString(body))
		resp, err := hc.Do(req)
		if err != nil {
			if rctx.Err() != nil {
				return
			}
			t.Fatalf("node stopped answering: %v", err)
		}
		defer resp.Body.Close()
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("reply %d with content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
	cancel()
	<-done
}

// A status reply carries counts and a bounded first page, whatever the
// number of workers (or relay forwarders) the node holds.
func TestStatusStaysSmall(t *testing.T) {
	h, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := startNode(t, h, "n1")
	extra := api.StatusListLimit + 20
	for i := range extra {
		if _, err := n.c.StartService(ctx, api.StartServiceRequest{Type: "echo", Address: fmt.Sprintf("echo%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := n.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Workers) != api.StatusListLimit || st.WorkersTotal < extra {
		t.Fatalf("status has %d workers of %d; want %d of at least %d", len(st.Workers), st.WorkersTotal, api.StatusListLimit, extra)
	}
	if st.Relays == nil || len(st.Relays.Forwarders) > api.StatusListLimit {
		t.Fatalf("status relays %+v", st.Relays)
	}
	ws, err := n.c.Workers(ctx)
	if err != nil || len(ws) != st.WorkersTotal {
		t.Fatalf("worker list: %d workers, %v; want %d", len(ws), err, st.WorkersTotal)
	}
}
