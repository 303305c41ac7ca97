package node_test

import (
	"sync/atomic"
	"testing"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// sender is a worker whose context a test uses from its own goroutine, as
// a portal session's reader uses its session's.
type sender struct{ c *node.Context }

func (s *sender) Initialize(c *node.Context) error                    { s.c = c; return nil }
func (s *sender) HandleMessage(*node.Context, *routing.Message) error { return nil }

func startSender(t *testing.T, n *node.Node) *sender {
	t.Helper()
	s := &sender{}
	if _, err := n.StartWorker("sender", s); err != nil {
		t.Fatal(err)
	}
	return s
}

// An idle destination handles the message before SendOwnedInline returns.
func TestSendOwnedInlineHandlesOnCaller(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	s := startSender(t, n)
	var got []string
	if _, err := n.StartWorker("dst", node.WorkerFunc(func(_ *node.Context, m *routing.Message) error {
		got = append(got, string(m.Payload)) // no lock: the handler runs before the send returns
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b", "c"} {
		if err := s.c.SendOwnedInline(testCtx(t), route("/service/dst"), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("handled %q, want a b c in order, each before its send returned", got)
	}
}

// A busy destination gets the message queued: it is handled after the
// message being handled and the ones queued before it, one at a time.
func TestSendOwnedInlineQueuesBehindBusyWorker(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	s := startSender(t, n)
	g := newGate()
	if _, err := n.StartWorker("dst", g); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Send(testCtx(t), route("/service/dst"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if p := g.waitEntered(t); p != "1" {
		t.Fatalf("entered with %q", p)
	}
	if err := s.c.Send(testCtx(t), route("/service/dst"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	// Returns at once although the gate blocks: the message is queued.
	if err := s.c.SendOwnedInline(testCtx(t), route("/service/dst"), []byte("3")); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	for _, want := range []string{"1", "2", "3"} {
		if got := <-g.handled; got != want {
			t.Fatalf("handled %q, want %q", got, want)
		}
	}
	// Idle again: the next one runs on the caller, after everything above.
	if err := s.c.SendOwnedInline(testCtx(t), route("/service/dst"), []byte("4")); err != nil {
		t.Fatal(err)
	}
	if got := <-g.handled; got != "4" {
		t.Fatalf("handled %q, want 4", got)
	}
}

type stopper struct {
	handled, shutdowns atomic.Int32
	panic              bool
}

func (w *stopper) HandleMessage(c *node.Context, _ *routing.Message) error {
	w.handled.Add(1)
	if w.panic {
		panic("handler failed")
	}
	c.Stop()
	return nil
}

func (w *stopper) Shutdown(*node.Context) error { w.shutdowns.Add(1); return nil }

// A worker that stops itself, or panics, in a handler run inline is
// finished by the caller: its shutdown hook runs once, it is gone, and
// later sends fail.
func TestSendOwnedInlineStopInHandler(t *testing.T) {
	for _, panics := range []bool{false, true} {
		n := newNode(t, nil, node.Config{})
		s := startSender(t, n)
		w := &stopper{panic: panics}
		if _, err := n.StartWorker("dst", w); err != nil {
			t.Fatal(err)
		}
		before := n.WorkerCount()
		if err := s.c.SendOwnedInline(testCtx(t), route("/service/dst"), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if w.handled.Load() != 1 || w.shutdowns.Load() != 1 {
			t.Fatalf("panics=%v: handled %d, shutdown hook ran %d times; want 1 and 1", panics, w.handled.Load(), w.shutdowns.Load())
		}
		if n.WorkerCount() != before-1 {
			t.Fatalf("panics=%v: %d workers, want %d", panics, n.WorkerCount(), before-1)
		}
		if err := s.c.SendOwnedInline(testCtx(t), route("/service/dst"), []byte("y")); err == nil {
			t.Fatalf("panics=%v: send to a stopped worker succeeded", panics)
		}
	}
}
