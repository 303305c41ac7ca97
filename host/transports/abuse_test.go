package transports_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// tcpFrame wraps an encoded message in a tcp transport data frame.
func tcpFrame(p []byte) []byte {
	h := []byte{tcptransport.FrameVersion, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[2:], uint32(len(p)))
	return append(h, p...)
}

// readFrame reads one data frame from a raw tcp transport connection,
// skipping heartbeats.
func readFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		h := make([]byte, 6)
		if _, err := readFull(c, h); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		n := binary.BigEndian.Uint32(h[2:])
		p := make([]byte, n)
		if _, err := readFull(c, p); err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if h[1] == 1 {
			return p
		}
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
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

func encode(t *testing.T, onward, ret string, payload []byte) []byte {
	t.Helper()
	m := routing.Message{Onward: routing.MustParseRoute(ret), Payload: payload}
	m.Onward = routing.MustParseRoute(onward)
	if ret != "" {
		m.Return = routing.MustParseRoute(ret)
	}
	b, err := routing.Codec{}.Encode(&m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A route from the network that names a transport address after a hop must
// not make the node dial it: the attempt is refused, nothing connects to
// the address, and the sender gets an error back on its connection.
func TestNoDiallingForTheNetwork(t *testing.T) {
	n := newNode(t, "n2")
	b := attach(t, n, newTCP(t))
	if _, err := n.StartWorker("hop", services.Hop{}); err != nil {
		t.Fatal(err)
	}
	l, err := b.Listen(tctx(t), "127.0.0.1:0", "hop")
	if err != nil {
		t.Fatal(err)
	}
	// The victim: a port that must see no connection.
	victim, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	dialled := make(chan struct{}, 1)
	go func() {
		if c, err := victim.Accept(); err == nil {
			dialled <- struct{}{}
			c.Close()
		}
	}()
	raw, err := net.Dial("tcp", l.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, onward := range []string{
		"/service/hop/tcp/" + victim.Addr().String() + "/service/echo",
		"/tcp/" + victim.Addr().String() + "/service/echo", // a remote first hop
	} {
		start := time.Now()
		if _, err := raw.Write(tcpFrame(encode(t, onward, "/service/attacker", []byte("attack")))); err != nil {
			t.Fatal(err)
		}
		m, err := routing.Codec{}.Decode(readFrame(t, raw))
		if err != nil {
			t.Fatal(err)
		}
		re, ok := node.AsRemoteError(&m)
		if !ok || re.Code != node.CodeNoDial || re.Node != "n2" {
			t.Fatalf("%s: got %q, want a dial-refused error from n2", onward, m.Payload)
		}
		if m.Onward.String() != "/service/attacker" {
			t.Fatalf("error sent to %s", m.Onward)
		}
		t.Logf("%s: refused in %s: %v", onward, time.Since(start).Round(time.Microsecond), re)
	}
	select {
	case <-dialled:
		t.Fatal("the node dialled the address the network named")
	case <-time.After(300 * time.Millisecond):
	}
	if len(b.Connections()) != 1 {
		t.Fatalf("connections: %+v", b.Connections())
	}
}

// Errors travel back across a transport: a missing remote service, an
// unknown remote address type and a denied worker are each answered with
// the remote node's cause, well before the caller's deadline.
func TestRemoteErrorsComeBack(t *testing.T) {
	a, bn := newNode(t, "n1"), newNode(t, "n2")
	ba, bb := attach(t, a, newTCP(t)), attach(t, bn, newTCP(t))
	for _, s := range []string{"hop", "hop2"} {
		if _, err := bn.StartWorker(s, services.Hop{}); err != nil {
			t.Fatal(err)
		}
	}
	startEcho(t, bn, "echo")
	l, err := bb.Listen(tctx(t), "127.0.0.1:0", "hop")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ba.Connect(tctx(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		to       string
		sentinel error
		code     node.ErrorCode
	}{
		{"/service/hop/service/missing", node.ErrNoRoute, node.CodeNoWorker},
		{"/service/hop/servce/outlet", node.ErrUnknownTranspt, node.CodeNoTransport},
		{"/service/echo", node.ErrAccessDenied, node.CodeAccessDenied},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		_, err := node.Request(ctx, a, route(t, c.Worker, tc.to), "x")
		el := time.Since(start)
		cancel()
		var re *node.RemoteError
		if !errors.As(err, &re) || re.Code != tc.code || re.Node != "n2" || !errors.Is(err, tc.sentinel) {
			t.Fatalf("%s: %v", tc.to, err)
		}
		if el > 10*time.Second {
			t.Fatalf("%s: the error took %s", tc.to, el)
		}
		t.Logf("%s: %v (%s)", tc.to, err, el.Round(time.Microsecond))
	}
}

// loop passes every message to the other node's loop worker, like two
// relays configured to point at each other; messages on their way back
// (an error travelling along the return route) it passes on like a hop.
type loop struct{ to routing.Address }

func (w *loop) HandleMessage(c *node.Context, m *routing.Message) error {
	if len(m.Onward) > 1 {
		return c.Forward(c, m)
	}
	ret, err := m.Return.Prepend(c.Address())
	if err != nil {
		err = errors.Join(node.ErrHopLimit, err)
		c.ReportUndeliverable(m, err)
		return err
	}
	return c.SendMessage(c, &routing.Message{Onward: routing.Route{w.to, routing.Local("loop")}, Return: ret, Payload: m.Payload, Local: routing.LocalInfo{Origin: m.Local.Origin}})
}

func TestTwoNodeLoopStoppedByHopLimit(t *testing.T) {
	a, bn := newNode(t, "n1"), newNode(t, "n2")
	ba, bb := attach(t, a, newTCP(t)), attach(t, bn, newTCP(t))
	l, err := bb.Listen(tctx(t), "127.0.0.1:0", "loop")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ba.Connect(tctx(t), l.Address, "loop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.StartWorker("loop", &loop{to: c.Worker}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "accepted link", func() bool { return len(bb.Connections()) == 1 })
	if _, err := bn.StartWorker("loop", &loop{to: bb.Connections()[0].Worker}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = node.Request(ctx, a, routing.MustParseRoute("/service/loop"), "round and round")
	el := time.Since(start)
	var re *node.RemoteError
	if !errors.As(err, &re) || !errors.Is(err, node.ErrHopLimit) {
		t.Fatalf("a two-node loop: %v after %s, want a hop-limit error", err, el)
	}
	t.Logf("loop stopped after %s: %v", el.Round(time.Microsecond), err)
}

// A peer that sends large echo requests and never reads the replies loses
// its link; the node does not buffer the replies without limit.
func TestPeerThatDoesNotReadIsCutOff(t *testing.T) {
	n := newNode(t, "n")
	b, err := transports.Attach(n, newTCP(t), transports.Options{QueueBytes: 4 << 20, TotalQueueBytes: 16 << 20, StallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	startEcho(t, n, "echo")
	l, err := b.Listen(tctx(t), "127.0.0.1:0", "echo")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.DialTCP("tcp", nil, mustResolve(t, l.Address))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetReadBuffer(4 << 10) // a peer that reads nothing
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	req := tcpFrame(encode(t, "/service/echo", "/service/me", make([]byte, 1<<20)))
	start := time.Now()
	var peak uint64
	sent := 0
	for ; sent < 200; sent++ {
		_ = raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := raw.Write(req); err != nil {
			break // the node closed the link (or stopped reading it)
		}
		if sent%10 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	eventually(t, "the link to be closed", func() bool { return len(b.Connections()) == 0 })
	el := time.Since(start)
	grown := int64(peak) - int64(before.HeapInuse)
	t.Logf("peer sent %d echo requests of 1 MiB without reading: link closed after %s; heap grew by at most %d MiB; queued now %d",
		sent, el.Round(time.Millisecond), grown>>20, b.QueuedBytes())
	if sent == 200 {
		t.Fatal("the node took 200 MiB of requests from a peer that reads nothing")
	}
	if grown > 96<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
	eventually(t, "queued bytes released", func() bool { return b.QueuedBytes() == 0 })
}

func mustResolve(t *testing.T, addr string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A flood of malformed packets does not flood the log: warnings are
// rate-limited per cause and the file is capped.
func TestMalformedFloodDoesNotFloodTheLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.log")
	rf, err := logging.OpenRotating(path, logging.RotateOptions{MaxBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	log := hclog.New(&hclog.LoggerOptions{Output: rf, Level: hclog.Info})
	n, err := node.New(node.Config{Name: "n", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	b := attach(t, n, newTCP(t))
	l, err := b.Listen(tctx(t), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", l.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// 7-byte frames whose one-byte payload is no message.
	const count = 100000
	frame := tcpFrame([]byte{0xff})
	buf := make([]byte, 0, len(frame)*1000)
	for i := 0; i < 1000; i++ {
		buf = append(buf, frame...)
	}
	for i := 0; i < count/1000; i++ {
		if _, err := raw.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	// The link survives bad packets; a good one after them is answered.
	startEcho(t, n, "echo")
	l2, err := b.Listen(tctx(t), "127.0.0.1:0", "echo")
	if err != nil {
		t.Fatal(err)
	}
	_ = l2
	var size int64
	for _, p := range []string{path, path + ".1"} {
		if st, err := os.Stat(p); err == nil {
			size += st.Size()
		}
	}
	// Wait until the node has read everything: the warnings stop coming.
	eventually(t, "the flood to be read", func() bool {
		data, _ := os.ReadFile(path)
		return strings.Contains(string(data), "does not decode")
	})
	time.Sleep(500 * time.Millisecond) // let the reader finish the backlog
	size = 0
	lines := 0
	for _, p := range []string{path, path + ".1"} {
		data, err := os.ReadFile(p)
		if err == nil {
			size += int64(len(data))
			lines += strings.Count(string(data), "\n")
		}
	}
	t.Logf("%d malformed frames: log holds %d lines, %d bytes", count, lines, size)
	if size > 128<<10 {
		t.Fatalf("log is %d bytes, cap 2×64 KiB", size)
	}
	if lines > 50 {
		t.Fatalf("%d log lines for one cause", lines)
	}
}

// Error messages are rate-limited per link: a peer that provokes errors as
// fast as it can gets a few, and another peer on the same listener still
// gets its own at once.
func TestErrorsRateLimitedPerLink(t *testing.T) {
	n := newNode(t, "n2")
	b := attach(t, n, newTCP(t))
	l, err := b.Listen(tctx(t), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	attacker, err := net.Dial("tcp", l.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	req := tcpFrame(encode(t, "/service/missing", "/service/attacker", []byte("x")))
	var flood []byte
	for i := 0; i < 500; i++ {
		flood = append(flood, req...)
	}
	if _, err := attacker.Write(flood); err != nil {
		t.Fatal(err)
	}
	eventually(t, "errors to be suppressed", func() bool { return n.ErrorsSuppressed() >= 400 })
	// The attacker got at most the burst (plus a refill), not 500.
	_ = attacker.SetReadDeadline(time.Now().Add(time.Second))
	var all []byte
	buf := make([]byte, 64<<10)
	for {
		k, err := attacker.Read(buf)
		all = append(all, buf[:k]...)
		if err != nil {
			break
		}
	}
	total := len(all)
	got := 0
	for len(all) >= 6 {
		n := int(binary.BigEndian.Uint32(all[2:6]))
		if len(all) < 6+n {
			break
		}
		if all[1] == 1 {
			got++
		}
		all = all[6+n:]
	}
	if got > 30 {
		t.Fatalf("the flooding peer got %d error messages (%d bytes) for 500 bad messages", got, total)
	}
	honest, err := net.Dial("tcp", l.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	if _, err := honest.Write(tcpFrame(encode(t, "/service/missing", "/service/me", []byte("x")))); err != nil {
		t.Fatal(err)
	}
	m, err := routing.Codec{}.Decode(readFrame(t, honest))
	if err != nil {
		t.Fatal(err)
	}
	if re, ok := node.AsRemoteError(&m); !ok || re.Code != node.CodeNoWorker {
		t.Fatalf("the honest peer got %q", m.Payload)
	}
	t.Logf("flooding peer: %d error messages (%d bytes) for 500 bad messages; %d suppressed; the honest peer still got its error", got, total, n.ErrorsSuppressed())
}
