package portals

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialEnd dials the inlet and returns how the connection ended: a reset
// may come before connect even returns.
func dialEnd(t *testing.T, addr string, d time.Duration) error {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return err
		}
		t.Fatal(err)
	}
	defer c.Close()
	return readUntilEnd(t, c, d)
}

// readUntilEnd reads c until it ends and returns how it ended.
func readUntilEnd(t *testing.T, c net.Conn, d time.Duration) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("client connection still open after %s", d)
	}
	return err // nil: a clean end of file
}

// A session that ends because its path failed resets the client's
// connection (an error, not a short file); a clean end is a clean close.
func TestBrokenPathResetsClient(t *testing.T) {
	t.Run("in-process", func(t *testing.T) {
		checkLeaks(t)
		brokenPathResetsClient(t, pairOptions{})
	})
	t.Run("plugin", func(t *testing.T) {
		brokenPathResetsClient(t, pairOptions{portal: launchPlugin(t).Portal()})
	})
}

func brokenPathResetsClient(t *testing.T, po pairOptions) {
	hop := &switchHop{}
	po.route = "/service/flaky/service/outlet"
	// Short enough to notice the break quickly, long enough that a clean
	// session on a loaded machine does not time out.
	po.session = SessionOptions{KeepaliveInterval: 100 * time.Millisecond, SessionTimeout: 2 * time.Second}
	p := newPair(t, startTarget(t), po)
	if _, err := p.n.StartWorker("flaky", hop); err != nil {
		t.Fatal(err)
	}
	// Clean: echo, half-close, the target half-closes back: EOF.
	c := p.dial(t)
	if err := echo(c, []byte("clean")); err != nil {
		t.Fatal(err)
	}
	if err := readUntilEnd(t, c, 5*time.Second); err != nil {
		t.Fatalf("a clean session ended with %v, want EOF", err)
	}
	// Broken: the path drops everything mid-session.
	c = p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	hop.mu.Lock()
	hop.drop = true
	hop.mu.Unlock()
	start := time.Now()
	err := readUntilEnd(t, c, 15*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a broken path ended the client with %v, want a connection reset", err)
	}
	t.Logf("broken path: client reset after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// The outlet's connection to its target is reset as well when the path
// fails, so the server sees an error too.
func TestBrokenPathResetsTarget(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.Copy(io.Discard, c)
		got <- err
	}()
	hop := &switchHop{}
	p := newPair(t, l.Addr().String(), pairOptions{
		route:   "/service/flaky/service/outlet",
		session: SessionOptions{KeepaliveInterval: 50 * time.Millisecond, SessionTimeout: 300 * time.Millisecond},
	})
	if _, err := p.n.StartWorker("flaky", hop); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to open", 5*time.Second, func() bool { return p.outlet.Status().ActiveSessions == 1 })
	hop.mu.Lock()
	hop.drop = true
	hop.mu.Unlock()
	select {
	case err := <-got:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the target saw %v, want a connection reset", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the target's connection was not ended")
	}
}

// An inlet whose outlet route is wrong closes its client at once (the error
// comes back from the node that could not deliver) and logs the reason.
func TestWrongOutletRouteClosesClientAtOnce(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{route: "/service/hop/service/no-such-outlet", inletOpts: func(o *InletOptions) {
		o.OpenTimeout = 20 * time.Second
		o.WaitTimeout = time.Millisecond
	}})
	if _, err := p.n.StartWorker("hop", &switchHop{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dialEnd(t, p.inlet.Addr(), 15*time.Second)
	el := time.Since(start)
	if el > 10*time.Second {
		t.Fatalf("client closed after %s (the open timeout is 20s)", el)
	}
	waitFor(t, "the reason in the log", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "no worker at address")
	})
	t.Logf("client closed after %s", el.Round(time.Millisecond))
}

// Sessions per inlet are capped: a client beyond MaxSessions is reset at
// once, and room comes back when a session ends.
func TestInletMaxSessions(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{inletOpts: func(o *InletOptions) { o.MaxSessions = 3 }})
	var conns []*net.TCPConn
	for i := 0; i < 3; i++ {
		c := p.dial(t)
		if _, err := c.Write([]byte{modeEcho}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "three sessions", 5*time.Second, func() bool { return p.inlet.Status().ActiveSessions == 3 })
	for i := 0; i < 5; i++ {
		if err := dialEnd(t, p.inlet.Addr(), 5*time.Second); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client %d beyond the cap: %v, want a reset", i, err)
		}
	}
	if p.inlet.refused.Load() != 5 {
		t.Fatalf("refused %d", p.inlet.refused.Load())
	}
	conns[0].Close()
	waitFor(t, "a session to end", 5*time.Second, func() bool { return p.inlet.Status().ActiveSessions == 2 })
	if err := echo(p.dial(t), []byte("room again")); err != nil {
		t.Fatal(err)
	}
}
