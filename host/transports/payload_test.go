package transports_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/internal/payloadbuf"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// pattern fills a payload so that each message's bytes are its own: any
// byte of another message left in a buffer shows.
func pattern(i, size int) []byte {
	p := make([]byte, size)
	for off := 0; off+8 <= size; off += 8 {
		binary.LittleEndian.PutUint64(p[off:], uint64(i)<<32|uint64(off))
	}
	return p
}

// payloadCheck checks each arriving payload against its pattern; a recycling
// one then gives the buffer back to the payload pools (as a portal session
// does after writing it out), a keeping one holds on to it.
type payloadCheck struct {
	recycle bool
	size    int
	mu      sync.Mutex
	kept    map[int][]byte
	bad     []string
	got     int
}

func (w *payloadCheck) HandleMessage(_ *node.Context, m *routing.Message) error {
	i := int(binary.LittleEndian.Uint64(m.Payload) >> 32)
	ok := bytes.Equal(m.Payload, pattern(i, w.size))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got++
	if !ok {
		w.bad = append(w.bad, fmt.Sprintf("message %d arrived corrupted", i))
	}
	if w.recycle {
		// Scribble over it first: a buffer still referenced elsewhere
		// would show the scribble.
		for j := range m.Payload {
			m.Payload[j] = 0xEE
		}
		payloadbuf.Put(m.Payload)
	} else {
		w.kept[i] = m.Payload
	}
	return nil
}

func (w *payloadCheck) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got
}

// TestDecodedPayloadsNotShared sends bulk messages (decoded into pooled
// buffers) over TCP, alternately to a worker that recycles each payload
// after use and one that keeps every payload: no kept payload may change
// afterwards, and every payload must arrive as sent. A binding that reused
// a decoded buffer, or handed one payload to two messages, fails here even
// though the race detector sees nothing.
func TestDecodedPayloadsNotShared(t *testing.T) {
	const size, count = 64<<10 + 25, 200
	if !payloadbuf.Fits(size) {
		t.Fatalf("size %d is not pooled; the test would prove nothing", size)
	}
	n1, n2 := newNode(t, "n1"), newNode(t, "n2")
	b1 := attach(t, n1, tcptransport.New())
	b2 := attach(t, n2, tcptransport.New())
	rec := &payloadCheck{recycle: true, size: size}
	keep := &payloadCheck{size: size, kept: map[int][]byte{}}
	for addr, w := range map[string]*payloadCheck{"recycle": rec, "keep": keep} {
		if _, err := n2.StartWorker(addr, w); err != nil {
			t.Fatal(err)
		}
	}
	ctx := tctx(t)
	l, err := b2.Listen(ctx, "127.0.0.1:0", "recycle", "keep")
	if err != nil {
		t.Fatal(err)
	}
	c, err := b1.Connect(ctx, l.Address)
	if err != nil {
		t.Fatal(err)
	}
	for i := range count {
		to := "keep"
		if i%2 == 1 {
			to = "recycle"
		}
		if err := n1.Send(ctx, routing.Route{c.Worker, routing.Local(to)}, pattern(i, size)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(testTimeout)
	for rec.count()+keep.count() < count {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived", rec.count()+keep.count(), count)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, w := range []*payloadCheck{rec, keep} {
		w.mu.Lock()
		for _, b := range w.bad {
			t.Error(b)
		}
		w.mu.Unlock()
	}
	keep.mu.Lock()
	defer keep.mu.Unlock()
	for i, p := range keep.kept {
		if !bytes.Equal(p, pattern(i, size)) {
			t.Errorf("kept payload of message %d changed after it was delivered", i)
		}
	}
}

// ownedSender sends count pattern payloads handed over with SendOwned when
// it gets any message, scribbling over a fresh pool buffer after each send:
// a link that recycled a payload before it was done with it would send the
// scribble.
type ownedSender struct {
	route       routing.Route
	size, count int
	done        chan error
}

func (w *ownedSender) HandleMessage(c *node.Context, _ *routing.Message) error {
	for i := range w.count {
		p := payloadbuf.Get(w.size)
		copy(p, pattern(i, w.size))
		if err := c.SendOwned(c, w.route, p); err != nil {
			w.done <- err
			return nil
		}
		junk := payloadbuf.Get(w.size)
		for j := range junk {
			junk[j] = 0xEE
		}
		payloadbuf.Put(junk)
	}
	w.done <- nil
	return nil
}

// TestOwnedPayloadsRecycledAfterEncoding: payloads handed over to a link
// come back to the pool only once their bytes are encoded; every message
// arrives as sent.
func TestOwnedPayloadsRecycledAfterEncoding(t *testing.T) {
	const size, count = 64<<10 + 25, 300
	// 20 MB through a link under -race: on a loaded 2-core machine that
	// took longer than testTimeout once; this test checks what arrives,
	// not how fast.
	const wait = 6 * testTimeout
	n1, n2 := newNode(t, "n1"), newNode(t, "n2")
	b1 := attach(t, n1, tcptransport.New())
	b2 := attach(t, n2, tcptransport.New())
	keep := &payloadCheck{size: size, kept: map[int][]byte{}}
	if _, err := n2.StartWorker("keep", keep); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	l, err := b2.Listen(ctx, "127.0.0.1:0", "keep")
	if err != nil {
		t.Fatal(err)
	}
	c, err := b1.Connect(ctx, l.Address)
	if err != nil {
		t.Fatal(err)
	}
	s := &ownedSender{route: routing.Route{c.Worker, routing.Local("keep")}, size: size, count: count, done: make(chan error, 1)}
	if _, err := n1.StartWorker("sender", s); err != nil {
		t.Fatal(err)
	}
	if err := n1.Send(ctx, routing.Route{routing.Local("sender")}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("sender did not finish")
	}
	deadline := time.Now().Add(wait)
	for keep.count() < count {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived", keep.count(), count)
		}
		time.Sleep(5 * time.Millisecond)
	}
	keep.mu.Lock()
	defer keep.mu.Unlock()
	for _, b := range keep.bad {
		t.Error(b)
	}
	for i, p := range keep.kept {
		if !bytes.Equal(p, pattern(i, size)) {
			t.Errorf("kept payload of message %d changed after it was delivered", i)
		}
	}
}
