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
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/routing"
)

// checkLeaks fails the test if goroutines or file descriptors started during
// it are still there once it ends (polled with a deadline: teardown is
// asynchronous).
func checkLeaks(t *testing.T) {
	t.Helper()
	g0, fd0, fds0 := runtime.NumGoroutine(), countFDs(), listFDs()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			g, fd := runtime.NumGoroutine(), countFDs()
			if g <= g0 && fd <= fd0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("leak: %d goroutines (was %d), %d fds (was %d: %v, now %v)\n%s", g, g0, fd, fd0, fds0, listFDs(), buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func listFDs() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"="+l)
	}
	return out
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

// syncBuffer collects log output for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newNode(t testing.TB, name string) (*node.Node, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	// Info is collected so tests can check the reasons sessions end; it is
	// printed only with -v.
	lvl := hclog.Info
	if os.Getenv("FERRY_TEST_DEBUG") != "" {
		lvl = hclog.Debug
	}
	n, err := node.New(node.Config{Name: name, Logger: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: lvl, Output: io.MultiWriter(logs, testWriter{t})})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n, logs
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// pair is an inlet and an outlet on one node, with the outlet's target.
type pair struct {
	n      *node.Node
	logs   *syncBuffer
	inlet  *Inlet
	outlet *Outlet
	target string
}

type pairOptions struct {
	session   SessionOptions
	route     string // default /service/outlet
	inletOpts func(*InletOptions)
	noOutlet  bool
	portal    portal.Portal // default: an in-process tcpportal
}

func newPair(t *testing.T, target string, po pairOptions) *pair { return newPairTB(t, target, po) }

func newPairTB(t testing.TB, target string, po pairOptions) *pair {
	t.Helper()
	n, logs := newNode(t, "n1")
	p := &pair{n: n, logs: logs, target: target}
	var pt portal.Portal = po.portal
	if pt == nil {
		tp := tcpportal.New()
		t.Cleanup(func() { tp.Close() })
		pt = tp
	}
	if !po.noOutlet {
		o, err := NewOutlet(n, OutletOptions{Target: target, Portal: pt, Session: po.session})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		p.outlet = o
	}
	route := po.route
	if route == "" {
		route = "/service/outlet"
	}
	iopts := InletOptions{ListenAddress: "127.0.0.1:0", Route: routing.MustParseRoute(route), Portal: pt, Session: po.session}
	if po.inletOpts != nil {
		po.inletOpts(&iopts)
	}
	in, err := NewInlet(context.Background(), n, iopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	p.inlet = in
	return p
}

func (p *pair) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.inlet.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// Target server modes, chosen by the first byte a client sends.
const (
	modeUpload   = 'U' // hash everything until EOF, reply with the 32-byte sum
	modeDownload = 'D' // 8-byte size, 8-byte seed: send that many bytes, then their sum
	modeEcho     = 'E' // copy back until EOF, then half-close
)

// startTarget runs a TCP server speaking the modes above and returns its
// address. It stops when the test ends.
func startTarget(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				serveTarget(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func serveTarget(c *net.TCPConn) {
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case modeUpload:
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		c.Write(h.Sum(nil))
	case modeDownload:
		var hdr [16]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		size, seed := binary.BigEndian.Uint64(hdr[:8]), binary.BigEndian.Uint64(hdr[8:])
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(newGen(seed), int64(size))); err != nil {
			return
		}
		c.Write(h.Sum(nil))
	case modeEcho:
		// Wrapped so io.Copy does not splice: splice keeps a pool of pipes
		// that the fd leak check would count.
		io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		c.CloseWrite()
		io.Copy(io.Discard, c)
	}
}

// newGen returns a fast deterministic byte source.
func newGen(seed uint64) io.Reader {
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// upload sends size bytes through c in upload mode and checks the sum the
// target computed against ours.
func upload(c *net.TCPConn, size int64, seed uint64) error {
	if _, err := c.Write([]byte{modeUpload}); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(newGen(seed), size)); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read sum: %w", err)
	}
	if !bytes.Equal(got, h.Sum(nil)) {
		return fmt.Errorf("target's sum %x, ours %x", got, h.Sum(nil))
	}
	return nil
}

// download asks for size bytes and checks our sum of what arrived against
// the target's sum of what it sent and against the expected stream.
func download(c *net.TCPConn, size int64, seed uint64) error {
	var req [17]byte
	req[0] = modeDownload
	binary.BigEndian.PutUint64(req[1:9], uint64(size))
	binary.BigEndian.PutUint64(req[9:], seed)
	if _, err := c.Write(req[:]); err != nil {
		return err
	}
	h := sha256.New()
	if n, err := io.CopyN(h, c, size); err != nil {
		return fmt.Errorf("download: after %d of %d bytes: %w", n, size, err)
	}
	var sum [32]byte
	if _, err := io.ReadFull(c, sum[:]); err != nil {
		return fmt.Errorf("read sum: %w", err)
	}
	want := sha256.New()
	io.Copy(want, io.LimitReader(newGen(seed), size))
	if !bytes.Equal(sum[:], h.Sum(nil)) || !bytes.Equal(sum[:], want.Sum(nil)) {
		return fmt.Errorf("sums differ: target %x, received %x, expected %x", sum, h.Sum(nil), want.Sum(nil))
	}
	return nil
}

// echo sends payload in echo mode while reading the echo concurrently.
func echo(c *net.TCPConn, payload []byte) error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(append([]byte{modeEcho}, payload...))
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if rerr != nil {
		return fmt.Errorf("read: %w", rerr)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		return fmt.Errorf("echo of %d bytes came back as %d different bytes", len(payload), len(got))
	}
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectClosed reads from c until EOF or an error, failing if that takes
// longer than d.
func expectClosed(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("client connection still open after %s", d)
	}
}
