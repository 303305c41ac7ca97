package securechannel

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

// mitm sits on the path between the two channel workers and does to the
// initiator's data frames whatever the test asks: change, cut, repeat or
// hold them back. A message addressed to mitm alone releases what it holds.
type mitm struct {
	mu     sync.Mutex
	toward string // the responder direction is every frame not sent to this wire address
	mode   func(p []byte) [][]byte
	held   []*routing.Message
	hold   bool
}

func (m *mitm) set(f func(p []byte) [][]byte) {
	m.mu.Lock()
	m.mode = f
	m.mu.Unlock()
}

func (m *mitm) HandleMessage(c *node.Context, msg *routing.Message) error {
	if len(msg.Onward) == 1 {
		m.mu.Lock()
		held := m.held
		m.held = nil
		m.mu.Unlock()
		for _, h := range held {
			if err := c.SendMessage(c, h); err != nil {
				return err
			}
		}
		return nil
	}
	_, onward, _ := msg.Onward.Step()
	ret, err := msg.Return.Prepend(c.Address())
	if err != nil {
		return err
	}
	m.mu.Lock()
	mode := m.mode
	m.mu.Unlock()
	payloads := [][]byte{msg.Payload}
	if mode != nil && onward[0].Value != m.toward && len(msg.Payload) > 1 && (msg.Payload[1] == typeData || msg.Payload[1] == typeBatch) {
		payloads = mode(append([]byte(nil), msg.Payload...))
	}
	for _, p := range payloads {
		out := &routing.Message{Onward: onward, Return: ret, Payload: p}
		m.mu.Lock()
		if m.hold {
			m.hold = false
			m.held = append(m.held, out)
			m.mu.Unlock()
			continue
		}
		m.mu.Unlock()
		if err := c.SendMessage(c, out); err != nil {
			return err
		}
	}
	return nil
}

func TestDamagedFramesDroppedAndCounted(t *testing.T) {
	n := newNode(t, "one")
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	s := newSink()
	startService(t, n, "sink", s)
	m := &mitm{}
	startService(t, n, "mitm", m)
	lis, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR}, Allow: []string{"sink"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), n, route(t, "/service/mitm/service/api"), Config{Identity: idI, RekeyAfter: 64})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.toward = ch.ch.wire.Value
	m.mu.Unlock()
	to := routing.Route{ch.Address(), routing.Local("sink")}
	send := func(p string) {
		t.Helper()
		if err := n.Send(tctx(t), to, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	// expect checks the next delivered message: whatever was damaged before
	// it was sent through the same path earlier, so had it been delivered
	// it would have arrived first.
	expect := func(p string) {
		t.Helper()
		if got := s.next(t); got != p {
			t.Fatalf("delivered %q, want %q", got, p)
		}
	}
	// queue makes the mitm apply each function to one data frame, in
	// order; the frames after those pass unchanged. Sends are
	// asynchronous, so every damage for a step is queued before its sends.
	var queue []func(p []byte) [][]byte
	m.set(func(p []byte) [][]byte {
		m.mu.Lock()
		if len(queue) == 0 {
			m.mu.Unlock()
			return [][]byte{p}
		}
		f := queue[0]
		queue = queue[1:]
		m.mu.Unlock()
		return f(p)
	})
	once := func(fs ...func(p []byte) [][]byte) {
		m.mu.Lock()
		queue = append(queue, fs...)
		m.mu.Unlock()
	}
	stats := func() Stats { return lis.Stats() }

	send("clean")
	expect("clean")

	// Tampered: one bit of the ciphertext, of the counter, of the tag.
	for i, pos := range []func(p []byte) int{
		func(p []byte) int { return dataHeaderLen + 1 },
		func(p []byte) int { return frameHeaderLen + 7 },
		func(p []byte) int { return len(p) - 1 },
	} {
		once(func(p []byte) [][]byte { p[pos(p)] ^= 0x40; return [][]byte{p} })
		send(fmt.Sprintf("tampered %d", i))
		send(fmt.Sprintf("after tampered %d", i))
		expect(fmt.Sprintf("after tampered %d", i))
	}
	if st := stats(); st.Tampered != 3 {
		t.Fatalf("tampered not counted: %v", st)
	}

	// Truncated: to less than a header, and short of its tag.
	once(func(p []byte) [][]byte { return [][]byte{p[:5]} },
		func(p []byte) [][]byte { return [][]byte{p[:len(p)-3]} })
	send("truncated short")
	send("truncated tag")
	send("after truncated")
	expect("after truncated")
	if st := stats(); st.Malformed != 1 || st.Tampered != 4 {
		t.Fatalf("truncated frames not counted: %v", st)
	}

	// Replayed: the same frame three times.
	once(func(p []byte) [][]byte { return [][]byte{p, p, p} })
	send("replayed")
	send("after replayed")
	expect("replayed")
	expect("after replayed")
	if st := stats(); st.Replayed != 2 {
		t.Fatalf("replays not counted: %v", st)
	}

	// Reordered within the window: delivered once, late.
	m.mu.Lock()
	m.hold = true
	m.mu.Unlock()
	send("late")
	send("on time")
	expect("on time")
	if err := n.Send(tctx(t), routing.Route{routing.Local("mitm")}, nil); err != nil {
		t.Fatal(err)
	}
	expect("late")

	// Reordered beyond the window (and several rekeys later): dropped.
	m.mu.Lock()
	m.hold = true
	m.mu.Unlock()
	send("too late")
	for i := 0; i < windowSize+1; i++ {
		send(fmt.Sprint(i))
		expect(fmt.Sprint(i))
	}
	if err := n.Send(tctx(t), routing.Route{routing.Local("mitm")}, nil); err != nil {
		t.Fatal(err)
	}
	send("last")
	expect("last")
	st := stats()
	if st.TooOld != 1 {
		t.Fatalf("a frame older than the window was not counted: %v", st)
	}
	if st.Rekeys == 0 {
		t.Fatalf("no rekey in %d frames with RekeyAfter 64: %v", windowSize, st)
	}
	if st.Delivered != uint64(windowSize+1+10) {
		t.Fatalf("delivered %d messages, want %d: %v", st.Delivered, windowSize+1+10, st)
	}
	select {
	case v := <-s.ch:
		t.Fatalf("a damaged frame was delivered: %q", v)
	default:
	}
}

// A message larger than one Noise frame travels as one batch of data
// frames. A batch with one inner frame tampered with, a truncated batch and
// a replayed batch deliver nothing damaged and nothing twice; each inner
// frame is counted on its own.
func TestDamagedBatchesDroppedAndCounted(t *testing.T) {
	n := newNode(t, "one")
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	s := newSink()
	startService(t, n, "sink", s)
	m := &mitm{}
	startService(t, n, "mitm", m)
	lis, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR}, Allow: []string{"sink"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), n, route(t, "/service/mitm/service/api"), Config{Identity: idI})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.toward = ch.ch.wire.Value
	m.mu.Unlock()
	var damage func(p []byte) [][]byte
	m.set(func(p []byte) [][]byte {
		m.mu.Lock()
		f := damage
		damage = nil
		m.mu.Unlock()
		if f == nil || p[1] != typeBatch {
			return [][]byte{p}
		}
		return f(p)
	})
	once := func(f func(p []byte) [][]byte) {
		m.mu.Lock()
		damage = f
		m.mu.Unlock()
	}
	big := func(tag byte) string { return string(bytes.Repeat([]byte{tag}, 100<<10)) }
	send := func(p string) {
		t.Helper()
		if err := n.Send(tctx(t), routing.Route{ch.Address(), routing.Local("sink")}, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(p string) {
		t.Helper()
		if got := s.next(t); got != p {
			t.Fatalf("delivered %d bytes starting %q, want %d starting %q", len(got), got[:1], len(p), p[:1])
		}
	}
	send(big('a'))
	expect(big('a'))
	if st := ch.Stats(); st.FramesSent < 2 {
		t.Fatalf("a 100 KiB message took %d frames", st.FramesSent)
	}

	// The last byte is the second inner frame's tag.
	once(func(p []byte) [][]byte { p[len(p)-1] ^= 1; return [][]byte{p} })
	send(big('b'))
	send(big('c'))
	expect(big('c'))
	if st := lis.Stats(); st.Tampered != 1 {
		t.Fatalf("tampered inner frame not counted: %v", st)
	}

	once(func(p []byte) [][]byte { return [][]byte{p[:len(p)/2]} })
	send(big('d'))
	send(big('e'))
	expect(big('e'))
	if st := lis.Stats(); st.Malformed != 1 {
		t.Fatalf("truncated batch not counted: %v", st)
	}

	once(func(p []byte) [][]byte { return [][]byte{p, p} })
	send(big('f'))
	send(big('g'))
	expect(big('f'))
	expect(big('g'))
	if st := lis.Stats(); st.Replayed != 2 {
		t.Fatalf("replayed batch not counted per inner frame: %v", st)
	}
	select {
	case v := <-s.ch:
		t.Fatalf("a damaged or repeated message was delivered: %d bytes of %q", len(v), v[:1])
	default:
	}
}

func TestIdentityPolicy(t *testing.T) {
	n := newNode(t, "one")
	idA, idB, idR := newIdentity(t, "a"), newIdentity(t, "b"), newIdentity(t, "resp")
	p, err := NewPolicy(idA.Identifier)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewPolicy(); err == nil {
		t.Fatal("an empty policy was accepted")
	}
	if _, err := NewPolicy("nonsense"); err == nil {
		t.Fatal("a malformed identifier was accepted")
	}
	startService(t, n, "guarded", p.Wrap(services.Uppercase{}))
	if _, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR}, Allow: []string{"guarded"}}); err != nil {
		t.Fatal(err)
	}
	chA, err := Create(tctx(t), n, route(t, "/service/api"), Config{Identity: idA})
	if err != nil {
		t.Fatal(err)
	}
	chB, err := Create(tctx(t), n, route(t, "/service/api"), Config{Identity: idB})
	if err != nil {
		t.Fatal(err)
	}
	if got := request(t, n, routing.Route{chA.Address(), routing.Local("guarded")}, "a"); got != "A" {
		t.Fatalf("allowed identity: %q", got)
	}
	// Not through a channel, and through a channel from another identity:
	// nothing reaches the service.
	if err := n.Send(tctx(t), route(t, "/service/guarded"), []byte("direct")); err != nil {
		t.Fatal(err)
	}
	if err := n.Send(tctx(t), routing.Route{chB.Address(), routing.Local("guarded")}, []byte("b")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two refusals", func() bool { return p.Denied() == 2 })
	// The allowed identity still gets through afterwards; nothing else
	// arrived in between.
	if got := request(t, n, routing.Route{chA.Address(), routing.Local("guarded")}, "again"); got != "AGAIN" {
		t.Fatalf("allowed identity: %q", got)
	}
	if !p.Allows(routing.LocalInfo{Identity: idA.Identifier}) || p.Allows(routing.LocalInfo{}) {
		t.Fatal("Allows disagrees with the policy")
	}
}

func TestHandshakeTimeout(t *testing.T) {
	n := newNode(t, "one")
	// A black hole where the listener should be.
	startService(t, n, "void", node.WorkerFunc(func(*node.Context, *routing.Message) error { return nil }))
	before := n.WorkerCount()
	_, err := Create(tctx(t), n, route(t, "/service/void"), Config{Identity: newIdentity(t, "i"), HandshakeTimeout: 100e6})
	if !errors.Is(err, ErrHandshake) {
		t.Fatalf("Create toward nothing: %v", err)
	}
	eventually(t, "the initiator worker gone", func() bool { return n.WorkerCount() == before })
}

// lossy drops the first frame of each handshake step (hello, message 2,
// message 3 and the responder's ready), as a route over an unreliable
// transport may.
type lossy struct {
	mu      sync.Mutex
	dropped map[byte]bool
	drops   int
}

func (l *lossy) HandleMessage(c *node.Context, m *routing.Message) error {
	if len(m.Payload) > 1 {
		typ := m.Payload[1]
		l.mu.Lock()
		drop := !l.dropped[typ]
		if typ == typeData && l.dropped[typeData] {
			drop = false
		}
		if drop {
			l.dropped[typ] = true
			l.drops++
		}
		l.mu.Unlock()
		if drop {
			return nil
		}
	}
	return services.Hop{}.HandleMessage(c, m)
}

func TestHandshakeSurvivesLoss(t *testing.T) {
	n := newNode(t, "one")
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	startService(t, n, "echo", services.Echo{})
	l := &lossy{dropped: map[byte]bool{}}
	startService(t, n, "lossy", l)
	lis, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR}, Allow: []string{"echo"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), n, route(t, "/service/lossy/service/api"), Config{Identity: idI, Retransmit: 20e6})
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	drops := l.drops
	l.mu.Unlock()
	if drops != 4 {
		t.Fatalf("the lossy hop dropped %d frames, want 4 (one of each handshake step)", drops)
	}
	if got := request(t, n, routing.Route{ch.Address(), routing.Local("echo")}, "after loss"); got != "after loss" {
		t.Fatal(got)
	}
	// One responder, not one per retransmitted hello.
	lis.mu.Lock()
	nch := len(lis.channels)
	lis.mu.Unlock()
	if nch != 1 {
		t.Fatalf("the listener runs %d channels", nch)
	}
}

// cuttable forwards like a hop until cut, then drops everything.
type cuttable struct{ cut atomic.Bool }

func (h *cuttable) HandleMessage(c *node.Context, m *routing.Message) error {
	if h.cut.Load() {
		return nil
	}
	return services.Hop{}.HandleMessage(c, m)
}

func TestKeepaliveAndIdleClose(t *testing.T) {
	n := newNode(t, "one")
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	startService(t, n, "echo", services.Echo{})
	path := &cuttable{}
	startService(t, n, "path", path)
	const every = 100 * time.Millisecond // idle close after 300 ms: not within one scheduling hiccup of a loaded machine
	lis, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR, Keepalive: every}, Allow: []string{"echo"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), n, route(t, "/service/path/service/api"), Config{Identity: idI, Keepalive: every, Retransmit: every})
	if err != nil {
		t.Fatal(err)
	}
	// Idle for many keepalive intervals: both ends stay open because
	// keepalives flow.
	eventually(t, "keepalives both ways", func() bool {
		return ch.Stats().FramesReceived >= 10 && lis.Stats().FramesReceived >= 10
	})
	if !ch.Info().Open || len(lis.Channels()) != 1 {
		t.Fatalf("an idle channel with keepalives closed: %+v", ch.Info())
	}
	if got := request(t, n, routing.Route{ch.Address(), routing.Local("echo")}, "still there"); got != "still there" {
		t.Fatal(got)
	}
	// The path goes away for good: both ends notice and close.
	path.cut.Store(true)
	eventually(t, "both ends closed", func() bool {
		lis.mu.Lock()
		left := len(lis.channels)
		lis.mu.Unlock()
		return left == 0 && !ch.Info().Open
	})
	if n.WorkerCount() != 4 { // app, echo, path, api
		t.Fatalf("%d workers left: %+v", n.WorkerCount(), n.Workers())
	}
}
