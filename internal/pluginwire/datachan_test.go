package pluginwire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// pairOverRing makes pair return the two ends of a ring pair instead of a
// socketpair (TestMuxOverRing runs this file's tests over rings).
var pairOverRing bool

func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	if pairOverRing {
		return ringPair(t, DefaultRingSize)
	}
	h, pf, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	p, err := net.FileConn(pf)
	pf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); p.Close() })
	return h, p
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// muxPair returns a host mux and a plugin mux with id 1 open on both.
func muxPair(t *testing.T, cfg MuxConfig) (hs, ps *MuxStream, hm, pm *Mux) {
	t.Helper()
	hc, pc := pair(t)
	opened := make(chan uint64, 1)
	pcfg := cfg
	pcfg.OnOpen = func(id uint64) { opened <- id }
	hm, pm = NewMux(hc, cfg), NewMux(pc, pcfg)
	t.Cleanup(func() { hm.Close(); pm.Close() })
	var err error
	if hs, err = hm.Open(1); err != nil {
		t.Fatal(err)
	}
	if err := hm.SendOpen(1); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-opened:
		if ps, err = pm.Open(id); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OPEN never arrived")
	}
	return hs, ps, hm, pm
}

func write(ctx context.Context, s *MuxStream, p []byte) error {
	return s.WriteFrame(ctx, len(p), func(b []byte) { copy(b, p) })
}

func TestMuxMovesDataBothWaysInOrder(t *testing.T) {
	hs, ps, _, _ := muxPair(t, MuxConfig{Window: 1 << 16, MaxFrame: 1 << 16})
	ctx := tctx(t)
	const n = 2000
	echoes := make(chan error, 1)
	go func() {
		for i := range n {
			got, err := hs.Read(ctx)
			if err == nil && len(got) != 1+i%5000 {
				err = fmt.Errorf("echo %d: %d bytes", i, len(got))
			}
			if err != nil {
				echoes <- err
				return
			}
		}
		echoes <- nil
	}()
	go func() {
		for i := range n {
			p := bytes.Repeat([]byte{byte(i)}, 1+i%5000)
			if err := write(ctx, hs, p); err != nil {
				t.Error(err)
				return
			}
		}
		hs.CloseWrite()
	}()
	for i := range n {
		got, err := ps.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := bytes.Repeat([]byte{byte(i)}, 1+i%5000); !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %d bytes, want %d", i, len(got), len(want))
		}
		// Echo back.
		if err := write(ctx, ps, got); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ps.Read(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseWrite: %v", err)
	}
	if err := <-echoes; err != nil {
		t.Fatal(err)
	}
	ps.Fail(errors.New("wire cut"))
	if _, err := hs.Read(ctx); err == nil || err.Error() != "wire cut" {
		t.Fatalf("peer failure: %v", err)
	}
}

// Senders on many ids at once, with frames large enough to fill the
// socket (a sender's own write then stops part-way and the writer sends
// the rest before anything queued after it) and a reader slower than
// them: every id's frames arrive whole and in order.
func TestMuxConcurrentSendersKeepFramesWhole(t *testing.T) {
	const ids, frames = 8, 60
	cfg := MuxConfig{Window: 4 << 20, MaxFrame: 1 << 20}
	hc, pc := pair(t)
	hm := NewMux(hc, cfg)
	opened := make(chan *MuxStream, ids)
	pcfg := cfg
	var pm *Mux
	pcfg.OnOpen = func(id uint64) {
		// As a plugin does: the stream exists before its first DATA.
		ps, err := pm.Open(id)
		if err != nil {
			t.Error(err)
		}
		opened <- ps
	}
	pm = NewMux(pc, pcfg)
	t.Cleanup(func() { hm.Close(); pm.Close() })
	ctx := tctx(t)
	size := func(id uint64, i int) int { return 1 + (int(id)*7919+i*104729)%(1<<20) }
	errs := make(chan error, 2*ids)
	for id := uint64(1); id <= ids; id++ {
		hs, err := hm.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := hm.SendOpen(id); err != nil {
			t.Fatal(err)
		}
		go func() {
			for i := range frames {
				p := bytes.Repeat([]byte{byte(int(id) + i)}, size(id, i))
				if err := write(ctx, hs, p); err != nil {
					errs <- fmt.Errorf("id %d frame %d: %w", id, i, err)
					return
				}
			}
			errs <- hs.CloseWrite()
		}()
	}
	for range ids {
		var ps *MuxStream
		select {
		case ps = <-opened:
		case <-ctx.Done():
			t.Fatal("OPEN never arrived")
		}
		if ps == nil {
			t.FailNow()
		}
		id := ps.ID()
		go func() {
			for i := range frames {
				got, err := ps.Read(ctx)
				if err != nil {
					errs <- fmt.Errorf("id %d frame %d: %w", id, i, err)
					return
				}
				if len(got) != size(id, i) || !bytes.Equal(got, bytes.Repeat([]byte{byte(int(id) + i)}, len(got))) {
					errs <- fmt.Errorf("id %d frame %d: %d bytes, not the %d sent", id, i, len(got), size(id, i))
					return
				}
				if i%8 == 0 {
					time.Sleep(time.Millisecond) // a slow reader: the socket fills
				}
			}
			_, err := ps.Read(ctx)
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("id %d after its frames: %v", id, err)
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	for range 2 * ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A reader that stops taking data stops its sender: the sender waits for
// credit (until its context ends) and continues once the reader reads.
func TestMuxBackpressure(t *testing.T) {
	hs, ps, _, _ := muxPair(t, MuxConfig{Window: 1 << 16, MaxFrame: 1 << 16})
	ctx := tctx(t)
	chunk := make([]byte, 1<<14)
	for range 4 { // exactly the window
		if err := write(ctx, hs, chunk); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := write(short, hs, chunk); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write beyond the window: %v", err)
	}
	if _, err := ps.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Read(ctx); err != nil { // returns the first frame's credit
		t.Fatal(err)
	}
	if err := write(ctx, hs, chunk); err != nil {
		t.Fatalf("write after credit came back: %v", err)
	}
}

// Credit for small messages goes back lazily; a sender whose next frame
// needs the whole window still gets it once the reader waits for more.
func TestMuxCreditForAWholeWindowFrame(t *testing.T) {
	hs, ps, _, _ := muxPair(t, MuxConfig{Window: 1 << 16, MaxFrame: 1 << 16})
	ctx := tctx(t)
	for range 3 {
		if err := write(ctx, hs, []byte("small")); err != nil {
			t.Fatal(err)
		}
		if _, err := ps.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan error, 1)
	go func() {
		// Waits with credit owed for the small frames; the frame below
		// needs all of it.
		p, err := ps.Read(ctx)
		if err == nil && len(p) != 1<<16 {
			err = fmt.Errorf("read %d bytes", len(p))
		}
		got <- err
	}()
	if err := write(ctx, hs, make([]byte, 1<<16)); err != nil {
		t.Fatalf("a whole-window frame after small ones: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// rawHost is a host mux whose peer is a raw socket the test writes to, as
// a misbehaving plugin would.
func rawHost(t *testing.T, cfg MuxConfig) (*Mux, *MuxStream, net.Conn) {
	t.Helper()
	hc, pc := pair(t)
	m := NewMux(hc, cfg)
	t.Cleanup(func() { m.Close() })
	s, err := m.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	return m, s, pc
}

func frame(typ byte, id uint64, n uint32, payload []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint64(b[1:9], id)
	binary.BigEndian.PutUint32(b[9:13], n)
	return append(b, payload...)
}

func waitFailed(t *testing.T, m *Mux) error {
	t.Helper()
	select {
	case <-m.Failed():
		return m.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("the channel did not fail")
		return nil
	}
}

// Untrusted input from a plugin fails the channel with ErrProtocol (the
// host then restarts the plugin); it never panics, allocates the claimed
// size or hangs.
func TestMuxRefusesBadInput(t *testing.T) {
	cases := map[string][]byte{
		"garbage":          []byte("this is not a frame header at all, just text"),
		"4GiB length":      frame(frameData, 1, 0xffffffff, nil),
		"unknown id":       frame(frameData, 99, 3, []byte("abc")),
		"unknown type":     frame(77, 1, 0, nil),
		"OPEN from plugin": frame(frameOpen, 1, 0, nil),
		"bad credit":       frame(frameCredit, 1, 3, []byte{0, 0, 1}),
		"credit overflow":  frame(frameCredit, 1, 4, []byte{0x7f, 0xff, 0xff, 0xff}),
		"over the window":  append(frame(frameData, 1, 40, make([]byte, 40)), frame(frameData, 1, 40, make([]byte, 40))...),
		"data after EOF":   append(frame(frameEOF, 1, 0, nil), frame(frameData, 1, 1, []byte{1})...),
	}
	for name, input := range cases {
		t.Run(name, func(t *testing.T) {
			m, s, raw := rawHost(t, MuxConfig{Window: 64, MaxFrame: 64})
			if _, err := raw.Write(input); err != nil {
				t.Fatal(err)
			}
			if err := waitFailed(t, m); !errors.Is(err, ErrProtocol) {
				t.Fatalf("channel ended with %v, want ErrProtocol", err)
			}
			ctx := tctx(t)
			if _, err := s.Read(ctx); err == nil {
				t.Fatal("stream still readable")
			}
			if err := write(ctx, s, []byte("x")); err == nil {
				t.Fatal("stream still writable")
			}
		})
	}
}

// A plugin that stops reading its end: senders see backpressure (credit
// runs out) and then, once a write stays blocked for StallTimeout, an
// error; nothing hangs.
func TestMuxStalledPeer(t *testing.T) {
	m, s, _ := rawHost(t, MuxConfig{Window: 16 << 20, MaxFrame: 1 << 20, StallTimeout: 300 * time.Millisecond})
	ctx := tctx(t)
	chunk := make([]byte, 1<<20)
	var err error
	for i := 0; i < 64 && err == nil; i++ {
		err = write(ctx, s, chunk)
	}
	if err == nil {
		// Credit ran out before the socket filled: the next write waits.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err = write(short, s, chunk)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("write beyond the credit: %v", err)
		}
	}
	if err := waitFailed(t, m); !errors.Is(err, ErrProtocol) {
		t.Fatalf("stall ended the channel with %v", err)
	}
	if err := write(ctx, s, []byte("x")); err == nil {
		t.Fatal("write after the stall succeeded")
	}
}

// Closing both sides forgets the id; a frame for it afterwards is a
// protocol violation, frames that cross the CLOSE are not.
func TestMuxCloseHandshake(t *testing.T) {
	hs, ps, hm, pm := muxPair(t, MuxConfig{})
	ctx := tctx(t)
	if err := write(ctx, ps, []byte("in flight")); err != nil {
		t.Fatal(err)
	}
	hs.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !ps.PeerClosed() {
		if time.Now().After(deadline) {
			t.Fatal("CLOSE never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	ps.Close()
	for {
		hm.mu.Lock()
		n := len(hm.streams)
		hm.mu.Unlock()
		pm.mu.Lock()
		n += len(pm.streams)
		pm.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams kept after both CLOSEs", n)
		}
		time.Sleep(time.Millisecond)
	}
	if hm.Err() != nil || pm.Err() != nil {
		t.Fatalf("errors: %v %v", hm.Err(), pm.Err())
	}
}

// FuzzMuxInput feeds arbitrary bytes to a host mux: it must end cleanly
// (a protocol error or the peer's close), never panic or hang.
func FuzzMuxInput(f *testing.F) {
	f.Add(frame(frameData, 1, 3, []byte("abc")))
	f.Add(frame(frameCredit, 1, 4, []byte{0, 0, 0, 1}))
	f.Add(frame(frameError, 1, 2, []byte("no")))
	f.Add(frame(frameData, 1, 0xffffffff, nil))
	f.Add(append(frame(frameEOF, 1, 0, nil), frame(frameClose, 1, 0, nil)...))
	f.Add(frame(framePing, 0, 0, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		hc, pc := net.Pipe()
		m := NewMux(hc, MuxConfig{Window: 1 << 12, MaxFrame: 1 << 12})
		s, _ := m.Open(1)
		go func() {
			pc.Write(in)
			pc.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			if _, err := s.Read(ctx); err != nil {
				break
			}
		}
		select {
		case <-m.Failed():
		case <-ctx.Done():
			t.Fatal("mux did not end")
		}
		m.Close()
	})
}

// With Keepalive, a silent peer fails the channel after StallTimeout; an
// idle but live peer (a Mux answering PING) does not.
func TestMuxKeepalive(t *testing.T) {
	m, _, _ := rawHost(t, MuxConfig{Keepalive: true, StallTimeout: 200 * time.Millisecond})
	if err := waitFailed(t, m); !errors.Is(err, ErrProtocol) {
		t.Fatalf("silent peer: %v", err)
	}
	_, _, hm, _ := muxPair(t, MuxConfig{Keepalive: true, StallTimeout: 200 * time.Millisecond})
	select {
	case <-hm.Failed():
		t.Fatalf("a live idle peer failed the channel: %v", hm.Err())
	case <-time.After(time.Second):
	}
}

// benchEcho opens id 1 on a host and a plugin mux for benchmarks, with an echo of every DATA payload
// on the plugin side.
func benchEcho(b *testing.B, cfg MuxConfig, ring bool) *MuxStream {
	b.Helper()
	var h, p net.Conn
	if ring {
		h, p = ringPair(b, DefaultRingSize)
	} else {
		hf, pf, err := Socketpair()
		if err != nil {
			b.Fatal(err)
		}
		h = hf
		p, err = net.FileConn(pf)
		pf.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	opened := make(chan uint64, 1)
	pcfg := cfg
	pcfg.OnOpen = func(id uint64) { opened <- id }
	hm, pm := NewMux(h, cfg), NewMux(p, pcfg)
	ctx, cancel := context.WithCancel(context.Background())
	echoed := make(chan struct{})
	b.Cleanup(func() { cancel(); hm.Close(); pm.Close(); <-echoed })
	hs, err := hm.Open(1)
	if err == nil {
		err = hm.SendOpen(1)
	}
	if err != nil {
		b.Fatal(err)
	}
	ps, err := pm.Open(<-opened)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(echoed)
		for {
			d, err := ps.Read(ctx)
			if err != nil {
				return
			}
			if write(ctx, ps, d) != nil {
				return
			}
		}
	}()
	return hs
}

// BenchmarkMuxRoundTrip64 is one 64 B payload at a time host → plugin →
// host: the latency every crossing adds.
func BenchmarkMuxRoundTrip64(b *testing.B) {
	b.Run("socketpair", func(b *testing.B) { benchRoundTrip64(b, false) })
	b.Run("ring", func(b *testing.B) { benchRoundTrip64(b, true) })
}

func benchRoundTrip64(b *testing.B, ring bool) {
	hs := benchEcho(b, MuxConfig{}, ring)
	ctx := context.Background()
	p := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := write(ctx, hs, p); err != nil {
			b.Fatal(err)
		}
		if _, err := hs.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMuxStream64K streams 64 KiB payloads host → plugin → host with
// a receiver running alongside: throughput under load.
func BenchmarkMuxStream64K(b *testing.B) {
	b.Run("socketpair", func(b *testing.B) { benchStream(b, false, 64<<10) })
	b.Run("ring", func(b *testing.B) { benchStream(b, true, 64<<10) })
}

// BenchmarkMuxStream64 is BenchmarkMuxStream64K with 64 B payloads: the
// cost per frame.
func BenchmarkMuxStream64(b *testing.B) {
	b.Run("socketpair", func(b *testing.B) { benchStream(b, false, 64) })
	b.Run("ring", func(b *testing.B) { benchStream(b, true, 64) })
}

func benchStream(b *testing.B, ring bool, size int) {
	hs := benchEcho(b, MuxConfig{}, ring)
	ctx := context.Background()
	p := make([]byte, size)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan error, 1)
	n := b.N
	go func() {
		for range n {
			if err := write(ctx, hs, p); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range n {
		if _, err := hs.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
