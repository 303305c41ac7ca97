package portals

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// lossyHop forwards like services.Hop but drops, reorders and duplicates
// messages at random, as a lossy UDP hop does.
type lossyHop struct {
	mu      sync.Mutex
	rng     *rand.Rand
	drop    float64 // share of messages dropped
	reorder float64 // share held back until after the next message
	dup     float64 // share forwarded twice
	held    *routing.Message

	dropped, reordered, duplicated int
}

func newLossyHop(seed uint64, drop, reorder, dup float64) *lossyHop {
	return &lossyHop{rng: rand.New(rand.NewPCG(seed, seed)), drop: drop, reorder: reorder, dup: dup}
}

func cloneMessage(m *routing.Message) *routing.Message {
	return &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: bytes.Clone(m.Payload)}
}

func (h *lossyHop) HandleMessage(c *node.Context, m *routing.Message) error {
	h.mu.Lock()
	r := h.rng.Float64()
	var send []*routing.Message
	switch {
	case r < h.drop:
		h.dropped++
	case r < h.drop+h.reorder && h.held == nil:
		h.reordered++
		h.held = cloneMessage(m) // the node reuses m once this returns
	case r < h.drop+h.reorder+h.dup:
		h.duplicated++
		send = append(send, m, cloneMessage(m))
	default:
		send = append(send, m)
	}
	if h.held != nil && h.held != m {
		send = append(send, h.held)
		h.held = nil
	}
	h.mu.Unlock()
	for _, x := range send {
		if err := c.Forward(c, x); err != nil {
			return err
		}
	}
	return nil
}

func (h *lossyHop) counts() (int, int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dropped, h.reordered, h.duplicated
}

// Across a hop that loses 5% of messages and reorders and duplicates some,
// every byte arrives once and in order, both ways.
func TestLossyRouteDeliversEverything(t *testing.T) {
	checkLeaks(t)
	hop := newLossyHop(1, 0.05, 0.03, 0.03)
	p := newPair(t, startTarget(t), pairOptions{
		route:   "/service/lossy/service/outlet",
		session: SessionOptions{KeepaliveInterval: 200 * time.Millisecond},
		inletOpts: func(o *InletOptions) {
			o.OpenTimeout = 20 * time.Second // an open or opened may be lost too
		},
	})
	if _, err := p.n.StartWorker("lossy", hop); err != nil {
		t.Fatal(err)
	}
	size := int64(16 << 20)
	if raceEnabled || testing.Short() {
		size = 2 << 20
	}
	start := time.Now()
	if err := upload(p.dial(t), size, 11); err != nil {
		t.Fatalf("upload: %v", err)
	}
	c := p.dial(t)
	if err := download(c, size, 12); err != nil {
		t.Fatalf("download: %v", err)
	}
	c.CloseWrite() // the download's session ends cleanly once both sides are done
	d, r, u := hop.counts()
	rt := p.inlet.Status().Retransmits + p.outlet.Status().Retransmits
	dups := p.inlet.Status().Duplicates + p.outlet.Status().Duplicates
	t.Logf("%d MiB each way in %s; hop dropped %d, reordered %d, duplicated %d; sessions retransmitted %d, dropped %d duplicates",
		size>>20, time.Since(start).Round(time.Millisecond), d, r, u, rt, dups)
	if d == 0 || r == 0 || u == 0 {
		t.Fatalf("the hop did not lose, reorder and duplicate (%d, %d, %d)", d, r, u)
	}
	// With the full volume hundreds of data messages cross the hop, so
	// some are lost and some duplicated; the small race-detector volume may
	// lose only acks (TestDuplicatesSuppressed covers duplicates for sure).
	if size >= 16<<20 && (rt == 0 || dups == 0) {
		t.Fatalf("no retransmissions (%d) or no suppressed duplicates (%d)", rt, dups)
	}
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
}

// Every message forwarded twice: the receiver drops each copy and the
// stream is intact.
func TestDuplicatesSuppressed(t *testing.T) {
	checkLeaks(t)
	hop := newLossyHop(2, 0, 0, 1)
	p := newPair(t, startTarget(t), pairOptions{route: "/service/dup/service/outlet"})
	if _, err := p.n.StartWorker("dup", hop); err != nil {
		t.Fatal(err)
	}
	if err := upload(p.dial(t), 1<<20, 5); err != nil {
		t.Fatal(err)
	}
	if dups := p.outlet.Status().Duplicates; dups == 0 {
		t.Fatal("no duplicates dropped at the outlet")
	}
}

// Past the session timeout with the path down, the client is reset and the
// reason logged; before it, the session only pauses.
func TestSessionTimeoutResetsClient(t *testing.T) {
	checkLeaks(t)
	hop := &switchHop{}
	p := newPair(t, startTarget(t), pairOptions{
		route:   "/service/flaky/service/outlet",
		session: SessionOptions{KeepaliveInterval: 100 * time.Millisecond, SessionTimeout: 1500 * time.Millisecond},
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
	if _, err := c.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	// A short outage: the session survives it.
	hop.mu.Lock()
	hop.drop = true
	hop.mu.Unlock()
	c.Write([]byte("during"))
	time.Sleep(500 * time.Millisecond) // an outage shorter than the timeout, not a wait for an event
	hop.mu.Lock()
	hop.drop = false
	hop.mu.Unlock()
	got := make([]byte, len("during"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(got[:1]); err != nil {
		t.Fatalf("after a short outage: %v", err)
	}
	if _, err := c.Read(got[1:]); err != nil || string(got) != "during" {
		t.Fatalf("after a short outage: %q %v", got, err)
	}
	// A long one: reset, with the reason in the log.
	hop.mu.Lock()
	hop.drop = true
	hop.mu.Unlock()
	start := time.Now()
	expectClosed(t, c, 10*time.Second)
	if d := time.Since(start); d < time.Second {
		t.Fatalf("client closed after %s, before the session timeout", d)
	}
	waitFor(t, "a log line with 'session timeout'", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "session timeout 1.5s")
	})
}
