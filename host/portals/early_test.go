package portals

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// holdHop forwards like services.Hop but holds back opened frames until a
// message addressed to the hop itself releases them, so a test can fix what
// the inlet does before its session opens.
type holdHop struct {
	mu        sync.Mutex
	release   bool
	held      []*routing.Message
	earlyData [][]byte // data of the opens that carried some
}

func (h *holdHop) HandleMessage(c *node.Context, m *routing.Message) error {
	if len(m.Onward) == 1 {
		h.mu.Lock()
		h.release = true
		held := h.held
		h.held = nil
		h.mu.Unlock()
		for _, m := range held {
			_ = c.Forward(c, m)
		}
		return nil
	}
	if f, err := decodeFrame(m.Payload); err == nil {
		h.mu.Lock()
		if f.kind == kindOpen && len(f.data) > 0 {
			h.earlyData = append(h.earlyData, bytes.Clone(f.data))
		}
		if f.kind == kindOpened && !h.release {
			// The node reuses m once this returns: keep a copy.
			h.held = append(h.held, &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: bytes.Clone(m.Payload), Local: m.Local})
			h.mu.Unlock()
			return nil
		}
		h.mu.Unlock()
	}
	return c.Forward(c, m)
}

func (h *holdHop) releaseOpened(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Send(ctx, routing.Route{routing.Local("hold")}, []byte("release")); err != nil {
		t.Fatal(err)
	}
}

func (h *holdHop) early() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.earlyData
}

// TestEarlyDataGoesWithTheOpen: a client's first bytes, read before the
// outlet answers, reach the target in an open (no round trip waited) and
// are not sent a second time once the session opens.
func TestEarlyDataGoesWithTheOpen(t *testing.T) {
	checkLeaks(t)
	hop := &holdHop{}
	p := newPair(t, startTarget(t), pairOptions{route: "/service/hold/service/outlet"})
	if _, err := p.n.StartWorker("hold", hop); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	req := append([]byte{modeEcho}, []byte("early bytes")...)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an open carrying the client's bytes", 5*time.Second, func() bool { return len(hop.early()) > 0 })
	hop.releaseOpened(t, p.n)
	got := make([]byte, len(req)-1)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "early bytes" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if e := hop.early(); len(e) != 1 || !bytes.Equal(e[0], req) {
		t.Fatalf("early data %q, want one open with %q", e, req)
	}
	c.CloseWrite()
	expectClosed(t, c, 5*time.Second)
	if d := p.outlet.Status().Duplicates; d != 0 {
		t.Errorf("outlet dropped %d duplicates: the early data was sent again", d)
	}
	if r := p.inlet.Status().Retransmits; r != 0 {
		t.Errorf("inlet retransmitted %d messages", r)
	}
}

// TestClientClosesBeforeOpened: a client that half-closes before the
// session opens has its end of file delivered once it does.
func TestClientClosesBeforeOpened(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	eof := make(chan error, 1)
	go func() {
		tc, err := l.Accept()
		if err != nil {
			eof <- err
			return
		}
		defer tc.Close()
		tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, tc)
		if err == nil && n != 0 {
			err = io.ErrUnexpectedEOF
		}
		tc.Write([]byte("bye"))
		eof <- err
	}()
	hop := &holdHop{}
	p := newPair(t, l.Addr().String(), pairOptions{route: "/service/hold/service/outlet"})
	if _, err := p.n.StartWorker("hold", hop); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the inlet to read the client's end of file", 5*time.Second, func() bool {
		p.inlet.mu.Lock()
		defer p.inlet.mu.Unlock()
		for s := range p.inlet.sessions {
			s.mu.Lock()
			fin := s.finSent
			s.mu.Unlock()
			if fin {
				return true
			}
		}
		return false
	})
	hop.releaseOpened(t, p.n)
	select {
	case err := <-eof:
		if err != nil {
			t.Fatalf("target: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the target never saw the client's end of file")
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if len(hop.early()) != 0 {
		t.Errorf("an open carried data although the client sent none")
	}
}

// An inlet of another protocol version (here version 3, before early data)
// gets a close whose reason names both versions, instead of a session.
func TestOutletRefusesOtherProtocolVersion(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, startTarget(t), pairOptions{})
	old := (&frame{kind: kindOpen, version: ProtocolVersion - 1, id: newSessionID(), window: 1 << 20}).encode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := p.n.SendAndReceive(ctx, routing.Route{p.outlet.Address()}, old)
	if err != nil {
		t.Fatal(err)
	}
	f, err := decodeFrame(m.Payload)
	if err != nil || f.kind != kindClose {
		t.Fatalf("reply %+v, %v; want a close", f, err)
	}
	want := fmt.Sprintf("outlet speaks portal protocol %d, the inlet %d", ProtocolVersion, ProtocolVersion-1)
	if f.reason != want {
		t.Fatalf("reason %q, want %q", f.reason, want)
	}
	if st := p.outlet.Status(); st.TotalSessions != 0 {
		t.Fatalf("outlet started %d sessions for an open of another version", st.TotalSessions)
	}
}
