package securechannel

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

func newNode(t testing.TB, name string) *node.Node {
	t.Helper()
	n, err := node.New(node.Config{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	return n
}

func newIdentity(t testing.TB, name string) *identity.Identity {
	t.Helper()
	id, err := identity.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func route(t testing.TB, parts ...string) routing.Route {
	t.Helper()
	var s string
	for _, p := range parts {
		s += p
	}
	r, err := routing.ParseRoute(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startService(t testing.TB, n *node.Node, addr string, w node.Worker) {
	t.Helper()
	if _, err := n.StartWorker(addr, w); err != nil {
		t.Fatal(err)
	}
}

func request(t testing.TB, n *node.Node, r routing.Route, payload string) string {
	t.Helper()
	m, err := n.SendAndReceive(tctx(t), r, []byte(payload))
	if err != nil {
		t.Fatalf("request %s: %v", r, err)
	}
	return string(m.Payload)
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// whoami replies with the identity the message carries.
type whoami struct{}

func (whoami) HandleMessage(c *node.Context, m *routing.Message) error {
	return c.Reply(c, m, []byte(m.Local.Identity))
}

// sink records the payloads it receives.
type sink struct{ ch chan string }

func newSink() *sink { return &sink{ch: make(chan string, 4096)} }

func (s *sink) HandleMessage(_ *node.Context, m *routing.Message) error {
	s.ch <- string(m.Payload)
	return nil
}

func (s *sink) next(t testing.TB) string {
	t.Helper()
	select {
	case v := <-s.ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("nothing arrived at the sink")
		return ""
	}
}

// recordingHop is a hop that keeps a copy of every payload it forwards, as
// a relay node's worker would see it.
type recordingHop struct {
	mu   sync.Mutex
	seen [][]byte
}

func (h *recordingHop) HandleMessage(c *node.Context, m *routing.Message) error {
	h.mu.Lock()
	h.seen = append(h.seen, append([]byte(nil), m.Payload...))
	h.mu.Unlock()
	return services.Hop{}.HandleMessage(c, m)
}

func (h *recordingHop) contains(needle []byte) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.seen {
		if bytes.Contains(p, needle) {
			return len(h.seen), true
		}
	}
	return len(h.seen), false
}
