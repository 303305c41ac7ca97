package portals

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// bigSize is the transfer size each way: 256 MiB normally, scaled down
// under the race detector, which slows the byte path about tenfold.
func bigSize() int64 {
	if raceEnabled || testing.Short() {
		return 64 << 20
	}
	return 256 << 20
}

func TestLargeTransferEachDirection(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{})
	size := bigSize()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	up, down := p.dial(t), p.dial(t)
	go func() { defer wg.Done(); errs <- upload(up, size, 1); up.Close() }()
	go func() { defer wg.Done(); errs <- download(down, size, 2); down.Close() }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
	in, out := p.inlet.Status(), p.outlet.Status()
	// upload: size+1 mode byte; download: 17 request bytes; sums: 32 each.
	if want := uint64(size + 1 + 17); in.BytesOut != want || out.BytesIn != want {
		t.Errorf("bytes towards the target: inlet %d, outlet %d, want %d", in.BytesOut, out.BytesIn, want)
	}
	if want := uint64(size + 64); in.BytesIn != want || out.BytesOut != want {
		t.Errorf("bytes from the target: inlet %d, outlet %d, want %d", in.BytesIn, out.BytesOut, want)
	}
	if in.TotalSessions != 2 || out.TotalSessions != 2 || in.State != StateUp {
		t.Errorf("status: inlet %+v outlet %+v", in, out)
	}
}

func TestConcurrentSessions(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{})
	const sessions = 100
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 64<<10+i*1021)
			rand.NewChaCha8([32]byte{byte(i), byte(i >> 8)}).Read(payload)
			c, err := net.DialTimeout("tcp", p.inlet.Addr(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := echo(c.(*net.TCPConn), payload); err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := p.outlet.Status().TotalSessions; got != sessions {
		t.Errorf("outlet saw %d sessions, want %d", got, sessions)
	}
}

func TestHalfClose(t *testing.T) {
	checkLeaks(t)
	// The target reads the whole request, then answers with a response much
	// larger than the window, so the answer flows only after our FIN.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const respSize = 3 << 20
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		req, err := io.ReadAll(c)
		if err != nil {
			served <- err
			return
		}
		resp := bytes.Repeat(req, respSize/len(req))
		_, err = c.Write(resp)
		served <- err
	}()
	p := newPair(t, l.Addr().String(), pairOptions{session: SessionOptions{Window: 256 << 10}})
	c := p.dial(t)
	req := []byte("0123456789abcdef")
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Repeat(req, respSize/len(req)); !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestHTTPThroughPortal(t *testing.T) {
	checkLeaks(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Query().Get("name"))
	})
	mux.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		io.Copy(h, r.Body)
		fmt.Fprintf(w, "%x", h.Sum(nil))
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()
	p := newPair(t, l.Addr().String(), pairOptions{})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "http://" + p.inlet.Addr()
	for i := range 5 {
		resp, err := client.Get(fmt.Sprintf("%s/hello?name=n%d", base, i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != fmt.Sprintf("hello n%d", i) {
			t.Fatalf("GET: %d %q", resp.StatusCode, body)
		}
	}
	payload := bytes.Repeat([]byte("ferry"), 1<<20)
	resp, err := client.Post(base+"/sum", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%x", sha256.Sum256(payload)); string(body) != want {
		t.Fatalf("POST sum %q, want %q", body, want)
	}
	// keep-alive reused one connection for all requests
	if got := p.outlet.Status().TotalSessions; got != 1 {
		t.Logf("the client used %d connections", got)
	}
}

func TestTargetRefuses(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := l.Addr().String()
	l.Close() // nothing listens there now
	p := newPair(t, target, pairOptions{})
	// The outlet answers the open before its dial fails, so the refusal
	// resets an opened session (RST), which can reach the client while it
	// is still connecting.
	start := time.Now()
	c, err := net.DialTimeout("tcp", p.inlet.Addr(), 5*time.Second)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if err == nil {
		defer c.Close()
		expectClosed(t, c, 5*time.Second)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("client closed after %s; expected promptly", d)
	}
	waitFor(t, "the inlet to log why", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "cannot reach its target")
	})
	if st := p.outlet.Status(); !strings.Contains(st.LastError, "refused") {
		t.Errorf("outlet last error %q", st.LastError)
	}
	waitFor(t, "sessions to end", 5*time.Second, func() bool { return p.inlet.Status().ActiveSessions == 0 })
}

func TestTargetClosesMidStream(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.CopyN(io.Discard, c, 100<<10)
		c.(*net.TCPConn).SetLinger(0) // reset, like a crashing server
		c.Close()
	}()
	p := newPair(t, l.Addr().String(), pairOptions{})
	c := p.dial(t)
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, newGen(3)) // endless: only a broken session stops it
		werr <- err
	}()
	expectClosed(t, c, 10*time.Second)
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("writing into a dead session succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client writes still accepted 10s after the target closed")
	}
	waitFor(t, "sessions to end", 5*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
}

func TestSlowReaderBoundsMemory(t *testing.T) {
	checkLeaks(t)
	const window = 256 << 10
	p := newPair(t, startTarget(t), pairOptions{session: SessionOptions{Window: window, ChunkSize: 32 << 10}})
	c := p.dial(t)
	const size = 64 << 20
	// Ask for a lot and read nothing: the outlet must stop reading the
	// target once the window is in flight.
	var req [17]byte
	req[0] = modeDownload
	binary.BigEndian.PutUint64(req[1:9], size)
	binary.BigEndian.PutUint64(req[9:], 9)
	if _, err := c.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	var last uint64
	stable := 0
	waitFor(t, "the outlet to stop reading", 20*time.Second, func() bool {
		time.Sleep(50 * time.Millisecond)
		cur := p.outlet.Status().BytesOut
		if cur == last && cur > 0 {
			stable++
		} else {
			stable = 0
		}
		last = cur
		return stable >= 4
	})
	in, out := p.inlet.Status(), p.outlet.Status()
	if inflight := out.BytesOut - in.BytesIn; inflight > window {
		t.Fatalf("%d bytes held between outlet and inlet, window is %d", inflight, window)
	}
	// The outlet's retransmission buffer and the inlet's reorder and write
	// queues hold at most the window.
	p.outlet.mu.Lock()
	for _, s := range p.outlet.sessions {
		if s == nil {
			continue
		}
		s.mu.Lock()
		var kept int
		for _, tf := range s.out {
			kept += len(tf.wire)
		}
		s.mu.Unlock()
		if kept > window+maxInFlight*dataHeadroom {
			t.Errorf("outlet session keeps %d bytes for retransmission, window is %d", kept, window)
		}
	}
	p.outlet.mu.Unlock()
	p.inlet.mu.Lock()
	for s := range p.inlet.sessions {
		s.mu.Lock()
		queued := s.recvBytes - s.consumed.Load() + s.oooBytes
		s.mu.Unlock()
		if queued > window {
			t.Errorf("inlet session holds %d bytes to write, window is %d", queued, window)
		}
	}
	p.inlet.mu.Unlock()
	// Socket buffers hold the rest; the portal read only a few MiB of 64.
	if out.BytesOut > 16<<20 {
		t.Fatalf("outlet read %d bytes from a target whose client reads nothing", out.BytesOut)
	}
	t.Logf("held: outlet read %d, inlet wrote %d", out.BytesOut, in.BytesIn)
	// Now read it all: nothing was lost while paused.
	h := sha256.New()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.CopyN(h, c, size); err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	io.Copy(want, io.LimitReader(newGen(9), size))
	if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatal("stream corrupted after backpressure")
	}
}

// switchHop forwards like services.Hop until told to drop, which simulates a
// path that breaks silently or loses one message.
type switchHop struct {
	mu       sync.Mutex
	drop     bool
	dropOne  bool // drop the next data frame only
	dropKind byte // drop the next frame of this kind only
}

func (h *switchHop) HandleMessage(c *node.Context, m *routing.Message) error {
	h.mu.Lock()
	drop := h.drop
	if !drop && h.dropOne && len(m.Payload) > 0 && m.Payload[0] == kindData {
		h.dropOne, drop = false, true
	}
	if !drop && h.dropKind != 0 && len(m.Payload) > 0 && m.Payload[0] == h.dropKind {
		h.dropKind, drop = 0, true
	}
	h.mu.Unlock()
	if drop {
		return nil
	}
	return c.Forward(c, m)
}

func TestPathBreaksSilently(t *testing.T) {
	checkLeaks(t)
	hop := &switchHop{}
	p := newPair(t, startTarget(t), pairOptions{
		route:   "/service/flaky/service/outlet",
		session: SessionOptions{KeepaliveInterval: 50 * time.Millisecond, SessionTimeout: 300 * time.Millisecond},
	})
	if _, err := p.n.StartWorker("flaky", hop); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'a' {
		t.Fatalf("echo before the break: %q %v", b, err)
	}
	hop.mu.Lock()
	hop.drop = true
	hop.mu.Unlock()
	expectClosed(t, c, 5*time.Second)
	waitFor(t, "both ends to time out", 5*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
	// The session logs why it ended just after its count drops.
	waitFor(t, "a log line with 'session timeout'", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "session timeout")
	})
}

// A lost data message is retransmitted: the bytes after it wait for it and
// arrive in order.
func TestLostMessageIsRetransmitted(t *testing.T) {
	checkLeaks(t)
	hop := &switchHop{}
	p := newPair(t, startTarget(t), pairOptions{route: "/service/flaky/service/outlet"})
	if _, err := p.n.StartWorker("flaky", hop); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	hop.mu.Lock()
	hop.dropOne = true
	hop.mu.Unlock()
	// Two writes: the first is lost, the second arrives out of sequence.
	c.Write([]byte("lost"))
	waitFor(t, "the first write to be dropped", 5*time.Second, func() bool {
		hop.mu.Lock()
		defer hop.mu.Unlock()
		return !hop.dropOne
	})
	c.Write([]byte("gap"))
	got := make([]byte, len("lostgap"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "lostgap" {
		t.Fatalf("received %q, %v; want the lost message retransmitted, in order", got, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := readUntilEnd(t, c, 10*time.Second); err != nil {
		t.Fatalf("the session ended with %v, want a clean end", err)
	}
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
}

func TestOutletCloseEndsSessions(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{})
	c := p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'x'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	if err := p.outlet.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 5*time.Second)
	if st := p.outlet.Status(); st.State != StateClosed || st.ActiveSessions != 0 {
		t.Fatalf("outlet after close: %+v", st)
	}
}

func TestInletWaitsForOutlet(t *testing.T) {
	checkLeaks(t)
	target := startTarget(t)
	p := newPair(t, target, pairOptions{noOutlet: true, inletOpts: func(o *InletOptions) {
		o.WaitTimeout = 20 * time.Second
		o.OpenTimeout = 10 * time.Second
	}})
	if st := p.inlet.Status().State; st != StateConnecting {
		t.Fatalf("state before any outlet: %s", st)
	}
	done := make(chan error, 1)
	go func() {
		c, err := net.DialTimeout("tcp", p.inlet.Addr(), 5*time.Second)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- upload(c.(*net.TCPConn), 1<<20, 5)
	}()
	// The client is waiting for its session; the outlet comes up later.
	waitFor(t, "the client to be accepted", 5*time.Second, func() bool { return p.inlet.Status().TotalSessions == 1 })
	o, err := NewOutlet(p.n, OutletOptions{Target: target, Portal: p.inlet.opts.Portal})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("client never got through")
	}
	waitFor(t, "state up", 5*time.Second, func() bool { return p.inlet.Status().State == StateUp })
}

func TestInletPathDownClosesClientPromptly(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{noOutlet: true, inletOpts: func(o *InletOptions) {
		o.WaitTimeout = 100 * time.Millisecond
	}})
	waitFor(t, "state down", 10*time.Second, func() bool { return p.inlet.Status().State == StateDown })
	start := time.Now()
	// The client is reset at once, sometimes before its connect returns.
	c, err := net.DialTimeout("tcp", p.inlet.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		expectClosed(t, c, 5*time.Second)
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("client closed after %s; expected promptly", d)
	}
	waitFor(t, "a log line saying why", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "outlet not reachable")
	})
	st := p.inlet.Status()
	if !strings.Contains(st.LastError, "no worker at address") {
		t.Errorf("last error %q", st.LastError)
	}
}

func TestOutletRespectsAccessControl(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{})
	ping := (&frame{kind: kindPing}).encode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := &routing.Message{Onward: routing.Route{p.outlet.Address()}, Return: routing.MustParseRoute("/service/app"), Payload: ping, Local: routing.LocalInfo{Flow: "listener-1"}}
	if err := p.n.Deliver(ctx, msg); !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("network input reached the outlet without being allowed: %v", err)
	}
	p.n.AllowConsumer("listener-1", p.outlet.Address().Value)
	if err := p.n.Deliver(ctx, msg); err != nil {
		t.Fatalf("allowed flow refused: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	n, _ := newNode(t, "v")
	if _, err := NewOutlet(n, OutletOptions{Target: "x:1"}); err == nil {
		t.Error("outlet without portal accepted")
	}
	if _, err := NewInlet(context.Background(), n, InletOptions{ListenAddress: "127.0.0.1:0"}); err == nil {
		t.Error("inlet without route accepted")
	}
	for _, so := range []SessionOptions{{ChunkSize: 2 << 20}, {ChunkSize: 64 << 10, Window: 1024}, {KeepaliveInterval: time.Second, SessionTimeout: time.Second}} {
		if _, err := so.withDefaults(); err == nil {
			t.Errorf("accepted %+v", so)
		}
	}
}

// A lost last message (here the fin) has nothing after it to reveal a gap;
// the retransmission timer sends it again.
func TestLostFinIsRetransmitted(t *testing.T) {
	checkLeaks(t)
	hop := &switchHop{dropKind: kindFin}
	p := newPair(t, startTarget(t), pairOptions{
		route:   "/service/flaky/service/outlet",
		session: SessionOptions{KeepaliveInterval: 50 * time.Millisecond, SessionTimeout: time.Minute},
	})
	if _, err := p.n.StartWorker("flaky", hop); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	if err := upload(c, 100<<10, 3); err != nil { // this fin is lost on the way
		t.Fatal(err)
	}
	hop.mu.Lock()
	dropped := hop.dropKind == 0
	hop.mu.Unlock()
	if !dropped {
		t.Fatal("the hop did not drop the fin")
	}
	waitFor(t, "both ends to finish", 10*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
}

func TestNodeShutdownClosesInlet(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{})
	c := p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 5*time.Second)
	waitFor(t, "the inlet to close", 5*time.Second, func() bool { return p.inlet.Status().State == StateClosed })
	if c2, err := net.DialTimeout("tcp", p.inlet.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("the inlet still accepts after its node stopped")
	}
}
