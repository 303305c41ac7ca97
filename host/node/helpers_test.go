package node_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newNode starts a node that is shut down when the test ends. With logs
// non-nil it logs at debug level into logs.
func newNode(t testing.TB, logs *logBuffer, cfg node.Config) *node.Node {
	t.Helper()
	if logs != nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	}
	n, err := node.New(cfg)
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
	return n
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitLog(t testing.TB, logs *logBuffer, parts ...string) {
	t.Helper()
	eventually(t, "log containing "+strings.Join(parts, ", "), func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	})
}

func route(s string) routing.Route { return routing.MustParseRoute(s) }

// recorder forwards every message it handles to a channel.
type recorder struct{ ch chan *routing.Message }

func newRecorder(size int) *recorder { return &recorder{ch: make(chan *routing.Message, size)} }

func (r *recorder) HandleMessage(_ *node.Context, m *routing.Message) error {
	c := *m
	r.ch <- &c
	return nil
}

func (r *recorder) next(t testing.TB) *routing.Message {
	t.Helper()
	select {
	case m := <-r.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message arrived")
		return nil
	}
}

// gate is a worker whose handler signals entry and blocks until released
// (or its context ends).
type gate struct {
	entered chan string
	release chan struct{}
	handled chan string
}

func newGate() *gate {
	return &gate{entered: make(chan string, 1024), release: make(chan struct{}), handled: make(chan string, 1024)}
}

func (g *gate) HandleMessage(c *node.Context, m *routing.Message) error {
	g.entered <- string(m.Payload)
	select {
	case <-g.release:
	case <-c.Done():
	}
	g.handled <- string(m.Payload)
	return nil
}

func (g *gate) waitEntered(t testing.TB) string {
	t.Helper()
	select {
	case p := <-g.entered:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("handler was not entered")
		return ""
	}
}

func newDebugLogger(logs *logBuffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
}
