package transporttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// The unreliable profile checks what a transport that may lose, reorder
// (and, with Config.MayDuplicate, duplicate) packets still promises:
// everything delivered is byte-exact one of the packets sent on that link,
// nothing is delivered more often than it was sent, most packets arrive on
// loopback (Config.MinDelivered), oversize packets are refused, and the
// lifecycle (close, peer death, listener close, cancellation) behaves as in
// the reliable profile. It never asserts order.
//
// Senders are paced: at most a small window of packets (and bytes) is in
// flight per link, and a window that makes no progress for a while is
// written off as lost. Without pacing a fast sender overruns a datagram
// socket's receive buffer and the delivered fraction measures the test, not
// the transport.

const (
	// windowBytes and windowPackets bound what a paced sender has in flight.
	windowBytes   = 64 << 10
	windowPackets = 32
	// stallAfter is how long a paced sender waits for progress before it
	// counts the packets in flight as lost and sends more.
	stallAfter = 200 * time.Millisecond
)

func (s *suite) unreliableTests() []namedTest {
	return []namedTest{
		{"Info", s.testInfo},
		{"Delivery", s.uTestDelivery},
		{"Sizes", s.uTestSizes},
		{"Oversize", s.uTestOversize},
		{"ConcurrentLinks", s.uTestConcurrentLinks},
		{"BothDirections", s.uTestBothDirections},
		{"CloseNoticedByPeer", s.uTestCloseNoticed},
		{"CloseUnblocksRecv", s.testCloseUnblocksRecv},
		{"RecvContext", s.testRecvContext},
		{"PeerDeath", s.uTestPeerDeath},
		{"ListenerClose", s.uTestListenerClose},
		{"AcceptContext", s.uTestAcceptContext},
		{"TransportClose", s.testTransportClose},
		{"DialRefused", s.testDialRefused},
		{"BadBytes", s.uTestBadBytes},
	}
}

// ledger records what was sent on one link in one direction and checks
// every delivered packet against it.
type ledger struct {
	stream uint32
	mayDup bool

	mu        sync.Mutex
	sent      map[uint32]*entry // by sequence number
	small     map[int]uint32    // size below 8 bytes -> sequence number
	distinct  int               // sequence numbers delivered at least once
	writtenOf int               // packets counted as lost by a stalled sender
	sentN     int               // distinct sequence numbers sent
	errs      []string
	progress  chan struct{} // signalled (non-blocking) after each delivery
}

type entry struct {
	size       int
	sends, got int
}

func newLedger(stream uint32, mayDup bool) *ledger {
	return &ledger{stream: stream, mayDup: mayDup, sent: map[uint32]*entry{},
		small: map[int]uint32{}, progress: make(chan struct{}, 1)}
}

// record notes that packet (stream, seq) of size bytes is about to be sent.
func (l *ledger) record(seq uint32, size int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.sent[seq]
	if e == nil {
		e = &entry{size: size}
		l.sent[seq] = e
		l.sentN++
		if size < 8 {
			if _, ok := l.small[size]; ok {
				panic("transporttest: two short packets of one size on one ledger")
			}
			l.small[size] = seq
		}
	}
	e.sends++
	return packet(l.stream, seq, size)
}

// check identifies and verifies one delivered packet.
func (l *ledger) check(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkLocked(p); err != nil {
		if len(l.errs) < 10 {
			l.errs = append(l.errs, err.Error())
		}
		return
	}
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

func (l *ledger) checkLocked(p []byte) error {
	var seq uint32
	if len(p) < 8 {
		s, ok := l.small[len(p)]
		if !ok {
			return fmt.Errorf("stream %d: a %d-byte packet arrived that was never sent on this link", l.stream, len(p))
		}
		seq = s
	} else {
		if st := binary.BigEndian.Uint32(p[:4]); st != l.stream {
			return fmt.Errorf("stream %d: a packet of stream %d arrived (delivered on the wrong link, or corrupted)", l.stream, st)
		}
		seq = binary.BigEndian.Uint32(p[4:8])
	}
	e := l.sent[seq]
	if e == nil {
		return fmt.Errorf("packet %d/%d arrived but was never sent (or was refused by Send)", l.stream, seq)
	}
	if len(p) != e.size {
		return fmt.Errorf("packet %d/%d: got %d bytes, sent %d (a partial or merged packet)", l.stream, seq, len(p), e.size)
	}
	want := packet(l.stream, seq, e.size)
	if !bytes.Equal(p, want) {
		return fmt.Errorf("packet %d/%d: content corrupted", l.stream, seq)
	}
	e.got++
	if e.got > e.sends && !l.mayDup {
		return fmt.Errorf("packet %d/%d delivered %d times, sent %d (duplicated; set Config.MayDuplicate if the transport may)", l.stream, seq, e.got, e.sends)
	}
	if e.got == 1 {
		l.distinct++
	}
	return nil
}

func (l *ledger) delivered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.distinct
}

func (l *ledger) got(seq uint32) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.sent[seq]; e != nil {
		return e.got
	}
	return 0
}

func (l *ledger) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sentN - l.distinct - l.writtenOf
}

func (l *ledger) writeOff() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writtenOf = l.sentN - l.distinct
}

// waitProgress waits until a packet is delivered; false after quiet
// without one (or when ctx ends).
func (l *ledger) waitProgress(ctx context.Context, quiet time.Duration) bool {
	t := time.NewTimer(quiet)
	defer t.Stop()
	select {
	case <-l.progress:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// waitFor waits until cond holds or nothing was delivered for quiet.
func (l *ledger) waitFor(ctx context.Context, quiet time.Duration, cond func() bool) {
	for !cond() && ctx.Err() == nil {
		if !l.waitProgress(ctx, quiet) && !cond() {
			return
		}
	}
}

// failed reports whether a wrong packet arrived.
func (l *ledger) failed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.errs) > 0
}

// verify reports every wrong packet the ledger saw.
func (l *ledger) verify(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.errs {
		t.Error(e)
	}
}

// receiver runs Recv on a link in the background and checks every packet.
type receiver struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Recv's final error, valid after done
}

func startReceiver(ctx context.Context, l transport.Link, led *ledger) *receiver {
	ctx, cancel := context.WithCancel(ctx)
	r := &receiver{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			b, err := l.Recv(ctx)
			for _, p := range b {
				led.check(p)
			}
			if err != nil {
				r.err = err
				return
			}
		}
	}()
	return r
}

// stop ends the receiver and waits for it.
func (r *receiver) stop() {
	r.cancel()
	<-r.done
}

// wait waits for the receiver to end by itself (its link failed or
// closed) and returns Recv's final error; ok is false if ctx ended first.
func (r *receiver) wait(ctx context.Context) (err error, ok bool) {
	select {
	case <-r.done:
		return r.err, true
	case <-ctx.Done():
		return nil, false
	}
}

func window(size int) int {
	if size <= 0 {
		return windowPackets
	}
	return max(1, min(windowPackets, windowBytes/size))
}

// sendPaced sends packets (led.stream, first+i, sizes[i]) in batches of up
// to batch packets, keeping at most a window in flight.
func sendPaced(ctx context.Context, l transport.Link, led *ledger, first uint32, sizes []int, batch int) error {
	var b [][]byte
	for i := 0; i < len(sizes); {
		win := window(sizes[i])
		for led.inFlight() >= win && ctx.Err() == nil {
			if !led.waitProgress(ctx, stallAfter) && led.inFlight() >= win {
				led.writeOff()
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b = b[:0]
		for k := 0; k < min(batch, win) && i < len(sizes); k++ {
			b = append(b, led.record(first+uint32(i), sizes[i]))
			i++
		}
		if err := l.Send(ctx, b); err != nil {
			return fmt.Errorf("link.Send of packets up to %d/%d: %w", led.stream, first+uint32(i-1), err)
		}
	}
	return nil
}

// quietEnd is how long a sender that is done waits for stragglers after
// the last delivery.
func (s *suite) quietEnd() time.Duration {
	return max(time.Second, s.timeout/8)
}

func (s *suite) minDelivered() float64 {
	if s.cfg.MinDelivered > 0 {
		return s.cfg.MinDelivered
	}
	return 0.9
}

// need is how many of n packets must arrive for delivered fraction f: at
// least one when any was sent.
func need(n int, f float64) int {
	if n == 0 {
		return 0
	}
	return max(1, int(math.Floor(float64(n)*f)))
}

// exchange sends sizes paced from one end to the other, waits for them and
// checks that each delivered packet is intact and enough arrived.
func (s *suite) exchange(t *testing.T, ctx context.Context, from, to transport.Link, stream uint32, sizes []int, batch int) {
	t.Helper()
	led := newLedger(stream, s.cfg.MayDuplicate)
	r := startReceiver(ctx, to, led)
	err := sendPaced(ctx, from, led, 0, sizes, batch)
	led.waitFor(ctx, s.quietEnd(), func() bool { return led.delivered() == len(sizes) })
	r.stop()
	led.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	if r.err != nil && ctx.Err() == nil && !errors.Is(r.err, context.Canceled) {
		t.Fatalf("stream %d: Recv failed: %v", stream, r.err)
	}
	if got, want := led.delivered(), need(len(sizes), s.minDelivered()); got < want {
		t.Fatalf("stream %d: delivered %d of %d packets, want at least %d on loopback", stream, got, len(sizes), want)
	}
}

func (s *suite) uTestDelivery(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	const n = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = 8 + rng.IntN(200)
	}
	led := newLedger(1, s.cfg.MayDuplicate)
	r := startReceiver(ctx, sv, led)
	// Batches of varying length, including single packets.
	var err error
	for i := 0; i < n && err == nil; {
		k := min(1+rng.IntN(64), n-i)
		err = sendPaced(ctx, c, led, uint32(i), sizes[i:i+k], k)
		i += k
	}
	led.waitFor(ctx, s.quietEnd(), func() bool { return led.delivered() == n })
	r.stop()
	led.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := led.delivered(), need(n, s.minDelivered()); got < want {
		t.Fatalf("delivered %d of %d packets, want at least %d on loopback", got, n, want)
	}
	t.Logf("delivered %d of %d packets", led.delivered(), n)
	// And the other way, on the same link.
	s.exchange(t, ctx, sv, c, 2, sizes[:200], 10)
}

func (s *suite) uTestSizes(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	var sizes []int
	for _, n := range []int{0, 1, 2, 7, 8, 9, 100, 1 << 10, 4<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20, s.max - 1, s.max} {
		if n >= 0 && n <= s.max && (len(sizes) == 0 || n > sizes[len(sizes)-1]) {
			sizes = append(sizes, n)
		}
	}
	led := newLedger(3, s.cfg.MayDuplicate)
	r := startReceiver(ctx, sv, led)
	defer r.stop()
	// One at a time, each sent again (same sequence number) until it
	// arrives: every size must get through whole at least once. Each
	// attempt waits a quiet spell, so the attempts also bound how long a
	// loaded machine may stall delivery (5 were 1.5 s); they cost nothing
	// while packets arrive.
	const attempts = 20
	for i, n := range sizes {
		seq := uint32(i)
		for a := 0; led.got(seq) == 0; a++ {
			if led.failed() {
				// A wrong packet arrived: no attempt can mend that.
				led.verify(t)
				t.FailNow()
			}
			if a == attempts {
				led.verify(t)
				t.Fatalf("a %d-byte packet was not delivered in %d attempts", n, attempts)
			}
			if err := c.Send(ctx, [][]byte{led.record(seq, n)}); err != nil {
				t.Fatalf("Send of %d bytes: %v", n, err)
			}
			quiet := max(s.quietEnd()/4, 250*time.Millisecond)
			led.waitFor(ctx, quiet, func() bool { return led.got(seq) > 0 })
		}
	}
	// All in one batch.
	first := uint32(len(sizes))
	batch := make([][]byte, len(sizes))
	for i, n := range sizes {
		if n < 8 {
			batch[i] = led.record(uint32(i), n) // short packets keep their first sequence number
		} else {
			batch[i] = led.record(first+uint32(i), n)
		}
	}
	if err := c.Send(ctx, batch); err != nil {
		t.Fatalf("Send of all sizes in one batch: %v", err)
	}
	led.waitFor(ctx, s.quietEnd(), func() bool { return led.delivered() == 2*len(sizes)-countSmall(sizes) })
	r.stop()
	led.verify(t)
	if r.err != nil && !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Recv: %v", r.err)
	}
}

func countSmall(sizes []int) int {
	n := 0
	for _, s := range sizes {
		if s < 8 {
			n++
		}
	}
	return n
}

func (s *suite) uTestOversize(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	big := make([]byte, s.max+1)
	led := newLedger(4, s.cfg.MayDuplicate)
	r := startReceiver(ctx, sv, led)
	if err := c.Send(ctx, [][]byte{big}); !errors.Is(err, transport.ErrTooLarge) {
		r.stop()
		t.Fatalf("Send of %d bytes (max %d): got %v, want an error wrapping transport.ErrTooLarge", len(big), s.max, err)
	}
	// A batch with an oversize packet in it is refused whole: the ledger
	// does not record its small packets, so their arrival fails the test.
	if err := c.Send(ctx, [][]byte{packet(4, 99, 16), big, packet(4, 98, 16)}); !errors.Is(err, transport.ErrTooLarge) {
		r.stop()
		t.Fatalf("Send of a batch holding a %d-byte packet: got %v, want transport.ErrTooLarge", len(big), err)
	}
	err := sendPaced(ctx, c, led, 0, repeat(10, 32), 10)
	led.waitFor(ctx, s.quietEnd(), func() bool { return led.delivered() == 10 })
	r.stop()
	led.verify(t)
	if err != nil {
		t.Fatalf("Send after ErrTooLarge: %v (the link must stay usable)", err)
	}
	if got, want := led.delivered(), need(10, s.minDelivered()); got < want {
		t.Fatalf("after ErrTooLarge: delivered %d of 10 packets, want at least %d", got, want)
	}
	if err := sv.Send(ctx, [][]byte{big}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("accepted side: Send of %d bytes: got %v, want transport.ErrTooLarge", len(big), err)
	}
	s.exchange(t, ctx, sv, c, 5, repeat(10, 32), 5)
}

func (s *suite) uTestConcurrentLinks(t *testing.T) {
	e := s.setup(t)
	ctx := s.ctx(t)
	const perLink = 200
	// The server echoes every packet back on the link it came from and
	// checks that one link carries one dialer's packets only.
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	var srvWG sync.WaitGroup
	srvErr := make(chan error, s.links+1)
	srvWG.Add(1)
	go func() {
		defer srvWG.Done()
		for i := 0; i < s.links; i++ {
			l, err := e.ln.Accept(srvCtx)
			if err != nil {
				if srvCtx.Err() == nil {
					srvErr <- fmt.Errorf("listener.Accept %d: %w", i, err)
				}
				return
			}
			srvWG.Add(1)
			go func() {
				defer srvWG.Done()
				defer l.Close()
				stream, seen := uint32(0), false
				for {
					b, err := l.Recv(srvCtx)
					if err != nil {
						if err != io.EOF && srvCtx.Err() == nil {
							srvErr <- fmt.Errorf("server Recv: %w", err)
						}
						return
					}
					cp := make([][]byte, 0, len(b))
					for _, p := range b {
						if len(p) < 8 {
							srvErr <- fmt.Errorf("server: a %d-byte packet arrived; only 64 bytes and more were sent", len(p))
							return
						}
						st := binary.BigEndian.Uint32(p[:4])
						if !seen {
							stream, seen = st, true
						} else if st != stream {
							srvErr <- fmt.Errorf("server: packets of streams %d and %d arrived on one link (links mixed up)", stream, st)
							return
						}
						// Copy: the batch is only valid until the next Recv.
						cp = append(cp, append([]byte(nil), p...))
					}
					if err := l.Send(srvCtx, cp); err != nil {
						if srvCtx.Err() == nil {
							srvErr <- fmt.Errorf("server Send: %w", err)
						}
						return
					}
				}
			}()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 2*s.links)
	var mu sync.Mutex
	total := 0
	for i := 0; i < s.links; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.cli.Dial(ctx, e.ln.Addr())
			if err != nil {
				errs <- fmt.Errorf("link %d: Dial: %w", i, err)
				return
			}
			defer c.Close()
			led := newLedger(uint32(i), s.cfg.MayDuplicate)
			r := startReceiver(ctx, c, led)
			err = sendPaced(ctx, c, led, 0, repeat(perLink, 64+i), 16)
			led.waitFor(ctx, s.quietEnd(), func() bool { return led.delivered() == perLink })
			r.stop()
			if err != nil {
				errs <- fmt.Errorf("link %d: %w", i, err)
			}
			led.mu.Lock()
			for _, e := range led.errs {
				errs <- fmt.Errorf("link %d: %s", i, e)
			}
			led.mu.Unlock()
			// Echoed: the packet crossed the transport twice.
			f := s.minDelivered()
			if got, want := led.delivered(), need(perLink, f*f); got < want {
				errs <- fmt.Errorf("link %d: %d of %d packets came back, want at least %d", i, got, perLink, want)
			}
			mu.Lock()
			total += led.delivered()
			mu.Unlock()
		}()
	}
	wg.Wait()
	stopSrv()
	srvWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(srvErr)
	for err := range srvErr {
		t.Error(err)
	}
	t.Logf("%d of %d packets came back over %d links", total, s.links*perLink, s.links)
}

func (s *suite) uTestBothDirections(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	size := min(32<<10, s.max)
	sizes := repeat(256, size)
	var wg sync.WaitGroup
	for _, d := range []struct {
		from, to transport.Link
		stream   uint32
		name     string
	}{{c, sv, 6, "dialer to acceptor"}, {sv, c, 7, "acceptor to dialer"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(strings.ReplaceAll(d.name, " ", "_"), func(t *testing.T) {
				s.exchange(t, ctx, d.from, d.to, d.stream, sizes, 8)
			})
		}()
	}
	wg.Wait()
}

func (s *suite) uTestCloseNoticed(t *testing.T) {
	for _, dir := range []string{"dialer closes", "acceptor closes"} {
		t.Run(strings.ReplaceAll(dir, " ", "_"), func(t *testing.T) {
			e := s.setup(t)
			c, sv := s.pair(t, e)
			if dir == "acceptor closes" {
				c, sv = sv, c
			}
			ctx := s.ctx(t)
			led := newLedger(8, s.cfg.MayDuplicate)
			r := startReceiver(ctx, sv, led)
			sizes := repeat(50, 1000)
			if err := sendPaced(ctx, c, led, 0, sizes, 7); err != nil {
				r.stop()
				t.Fatal(err)
			}
			led.waitFor(ctx, s.quietEnd(), func() bool { return led.delivered() == len(sizes) })
			if err := c.Close(); err != nil {
				r.stop()
				t.Fatalf("Close: %v", err)
			}
			err, ok := r.wait(ctx)
			led.verify(t)
			if !ok {
				r.stop()
				t.Fatalf("the peer's Recv did not end within %s after Close", s.timeout)
			}
			if err != io.EOF {
				t.Fatalf("peer Recv after Close: got %v; want io.EOF (a close the peer is told about)", err)
			}
			if got, want := led.delivered(), need(len(sizes), s.minDelivered()); got < want {
				t.Errorf("delivered %d of %d packets before Close, want at least %d", got, len(sizes), want)
			}
			if err := c.Send(ctx, [][]byte{{1}}); err == nil {
				t.Error("Send on a closed link succeeded, want an error")
			}
			if _, err := c.Recv(ctx); err == nil {
				t.Error("Recv on a closed link succeeded, want an error")
			}
		})
	}
}

func (s *suite) uTestPeerDeath(t *testing.T) {
	if s.cfg.Kill == nil {
		t.Skip("Config.Kill is not set (an unreliable transport has no connection to drop raw)")
	}
	e := s.setupFresh(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	s.exchange(t, ctx, c, sv, 9, repeat(10, 16), 1)
	s.cfg.Kill(t, e.cli)
	for {
		_, err := sv.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("the peer's death was not noticed within %s", s.timeout)
			}
			t.Logf("noticed: %v", err)
			return
		}
	}
}

func (s *suite) uTestListenerClose(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	errc := make(chan error, 1)
	go func() {
		_, err := e.ln.Accept(ctx)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let Accept block; correctness does not depend on it
	if err := e.ln.Close(); err != nil {
		t.Fatalf("Listener.Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, transport.ErrClosed) {
			t.Errorf("blocked Accept after Listener.Close: got %v, want transport.ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("a blocked Accept did not return after Listener.Close")
	}
	if _, err := e.ln.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Listener.Close: got %v, want transport.ErrClosed", err)
	}
	// Links already accepted stay open, both ways.
	s.exchange(t, ctx, c, sv, 10, repeat(20, 100), 5)
	s.exchange(t, ctx, sv, c, 11, repeat(20, 100), 5)
}

func (s *suite) uTestAcceptContext(t *testing.T) {
	e := s.setup(t)
	actx, cancel := context.WithTimeout(s.ctx(t), 50*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := e.ln.Accept(actx)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Accept returned no error and no link when its context ended")
		}
	case <-time.After(s.timeout):
		t.Fatal("Accept ignored its context")
	}
	c, sv := s.pair(t, e)
	s.exchange(t, s.ctx(t), c, sv, 11, repeat(10, 16), 1)
}

// uTestBadBytes sends each bad input as one write through RawDial (for a
// datagram transport, one datagram from an address that is not a link):
// it must be dropped without harming a link that is open or the listener.
func (s *suite) uTestBadBytes(t *testing.T) {
	if s.cfg.RawDial == nil {
		t.Skip("Config.RawDial is not set")
	}
	e := s.setup(t)
	ctx := s.ctx(t)
	c, sv := s.pair(t, e)
	for _, in := range s.badInputs() {
		raw, err := s.cfg.RawDial(e.ln.Addr())
		if err != nil {
			t.Fatalf("RawDial(%q): %v", e.ln.Addr(), err)
		}
		_ = raw.SetWriteDeadline(time.Now().Add(s.timeout))
		if _, err := raw.Write(in.Bytes); err != nil {
			t.Logf("writing bad input %s: %v", in.Name, err)
		}
		_ = raw.Close()
	}
	s.exchange(t, ctx, c, sv, 12, repeat(20, 50), 5)
	c2, sv2 := s.pair(t, e)
	s.exchange(t, ctx, sv2, c2, 13, repeat(20, 50), 5)
}

func (s *suite) badInputs() []BadInput {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	return append([]BadInput{
		{Name: "random", Bytes: random},
		{Name: "ff", Bytes: bytes.Repeat([]byte{0xff}, 64)},
	}, s.cfg.BadInputs...)
}
