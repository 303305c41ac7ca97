//go:build linux

package pluginwire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
)

// within fails the test if done is not closed in time.
func within(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not finish", what)
	}
}

// TestMuxOverRing runs the Mux tests over a ring pair.
func TestMuxOverRing(t *testing.T) {
	if !ringSupported {
		t.Skip("no shared-memory rings on this system")
	}
	pairOverRing = true
	defer func() { pairOverRing = false }()
	for name, f := range map[string]func(*testing.T){
		"MovesDataBothWaysInOrder":     TestMuxMovesDataBothWaysInOrder,
		"ConcurrentSendersKeepFrames":  TestMuxConcurrentSendersKeepFramesWhole,
		"Backpressure":                 TestMuxBackpressure,
		"CreditForAWholeWindowFrame":   TestMuxCreditForAWholeWindowFrame,
		"RefusesBadInput":              TestMuxRefusesBadInput,
		"StalledPeer":                  TestMuxStalledPeer,
		"CloseHandshake":               TestMuxCloseHandshake,
		"Keepalive":                    TestMuxKeepalive,
		"RingCorruptIndicesFailMux":    testRingCorruptFailsMux,
		"RingPeerDiesMidStreamEndsMux": testRingPeerEndFailsMux,
	} {
		t.Run(name, f)
	}
}

// Many megabytes in random-sized writes and reads through a small ring:
// every byte arrives once and in order, across many wrap-arounds and
// full-ring waits.
func TestRingChecksum(t *testing.T) {
	h, p := ringPair(t, minRing)
	const total = 64 << 20
	want := make(chan [32]byte, 1)
	werr := make(chan error, 1)
	go func() {
		r := rand.New(rand.NewPCG(1, 2))
		sum := sha256.New()
		buf := make([]byte, 3*minRing)
		for sent := 0; sent < total; {
			n := min(1+r.IntN(len(buf)), total-sent)
			for i := range buf[:n] {
				buf[i] = byte(r.Uint32())
			}
			sum.Write(buf[:n])
			if _, err := h.Write(buf[:n]); err != nil {
				werr <- err
				return
			}
			sent += n
		}
		want <- [32]byte(sum.Sum(nil))
		werr <- nil
	}()
	r := rand.New(rand.NewPCG(3, 4))
	sum := sha256.New()
	buf := make([]byte, 2*minRing)
	p.SetReadDeadline(time.Now().Add(60 * time.Second))
	for got := 0; got < total; {
		n, err := p.Read(buf[:1+r.IntN(len(buf))])
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got, err)
		}
		sum.Write(buf[:n])
		got += n
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if w := <-want; !bytes.Equal(w[:], sum.Sum(nil)) {
		t.Fatal("checksum differs")
	}
}

// A 64 B ping-pong of 100k round trips: each side sleeps on every
// message, so a lost wake-up hangs it.
func TestRingPingPong(t *testing.T) {
	h, p := ringPair(t, minRing)
	const rounds = 100_000
	done := make(chan error, 1)
	go func() {
		b := make([]byte, 64)
		for range rounds {
			if _, err := io.ReadFull(p, b); err != nil {
				done <- err
				return
			}
			if _, err := p.Write(b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	h.SetDeadline(time.Now().Add(120 * time.Second))
	b, got := make([]byte, 64), make([]byte, 64)
	for i := range rounds {
		b[0], b[63] = byte(i), byte(i>>8)
		if _, err := h.Write(b); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, err := io.ReadFull(h, got); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if !bytes.Equal(b, got) {
			t.Fatalf("round %d: got other bytes", i)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A full ring: TryWrite takes only what fits, Write waits for space until
// its deadline, and a reader that frees space wakes it.
func TestRingFullBackpressure(t *testing.T) {
	h, p := ringPair(t, minRing)
	tw := h.(*ringConn)
	big := make([]byte, 3*minRing)
	if n, err := tw.TryWrite(big); err != nil || n != minRing {
		t.Fatalf("TryWrite on an empty ring: %d, %v; want %d", n, err, minRing)
	}
	if n, err := tw.TryWrite(big); err != nil || n != 0 {
		t.Fatalf("TryWrite on a full ring: %d, %v", n, err)
	}
	h.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := h.Write(big[:10])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write to a full ring past its deadline: %v", err)
	}
	h.SetWriteDeadline(time.Time{})
	wrote := make(chan error, 1)
	go func() {
		_, err := h.Write(big)
		wrote <- err
	}()
	p.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(p, make([]byte, 4*minRing)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the writer was never woken")
	}
}

// corrupt writes v at off of the ring pair's shared pages through the
// plugin end's mapping (the host never reads its own counts back).
func corrupt(p net.Conn, off int, v uint64) {
	pc := p.(*ringConn)
	pc.mu.RLock()
	u64At(pc.mem, off).Store(v)
	pc.mu.RUnlock()
}

// A plugin that writes impossible counts into the shared header fails the
// host's reads and writes with ErrProtocol, without touching memory
// outside the rings.
func TestRingCorruptIndices(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  int // in the header of ring 1 (plugin → host) or ring 0
		v    uint64
		read bool
	}{
		{"written beyond the ring", ringHeaderLen + offWritten, 1 << 40, true},
		{"written all ones", ringHeaderLen + offWritten, ^uint64(0), true},
		{"read beyond what was written", offRead, 1 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, p := ringPair(t, minRing)
			corrupt(p, tc.off, tc.v)
			var err error
			if tc.read {
				h.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err = h.Read(make([]byte, 10))
			} else {
				_, err = h.Write([]byte("x"))
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
	// A count that goes backwards, after the host read up to it.
	h, p := ringPair(t, minRing)
	if _, err := p.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	h.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(h, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	corrupt(p, ringHeaderLen+offWritten, 50)
	if _, err := p.(*ringConn).data.Write([]byte{1}); err != nil { // wake the host
		t.Fatal(err)
	}
	if _, err := h.Read(make([]byte, 10)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a count that went back: %v", err)
	}
	// And a read count that goes backwards.
	if _, err := h.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	p.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(p, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(make([]byte, 1)); err != nil { // the host sees 100 read
		t.Fatal(err)
	}
	corrupt(p, offRead, 10)
	if _, err := h.Write([]byte("x")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a read count that went back: %v", err)
	}
}

// Over a Mux, corrupt indices fail the host's channel with ErrProtocol.
func testRingCorruptFailsMux(t *testing.T) {
	hc, pc := pair(t)
	m := NewMux(hc, MuxConfig{})
	t.Cleanup(func() { m.Close() })
	corrupt(pc, ringHeaderLen+offWritten, 1<<50)
	pc.(*ringConn).data.Write([]byte{1})
	if err := waitFailed(t, m); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}

// A peer that ends (a plugin that dies) ends the host's channel as the
// socketpair's end does.
func testRingPeerEndFailsMux(t *testing.T) {
	hc, pc := pair(t)
	m := NewMux(hc, MuxConfig{})
	t.Cleanup(func() { m.Close() })
	if _, err := m.Open(1); err != nil {
		t.Fatal(err)
	}
	pc.Write(frame(frameData, 1, 3, []byte("abc")))
	pc.Close()
	if err := waitFailed(t, m); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("got %v, want the peer's close", err)
	}
}

// What a peer wrote before it ended is read, then io.EOF.
func TestRingReadsWhatAPeerWroteBeforeItEnded(t *testing.T) {
	h, p := ringPair(t, minRing)
	if _, err := p.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	h.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(h)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// Close while a reader and a writer sleep wakes both, and Close racing
// copies never faults (the mapping outlives every copy).
func TestRingCloseWakesAndWaits(t *testing.T) {
	h, _ := ringPair(t, minRing)
	errs := make(chan error, 2)
	go func() { _, err := h.Read(make([]byte, 10)); errs <- err }()
	go func() { _, err := h.Write(make([]byte, 4*minRing)); errs <- err }()
	// Both sleep eventually; Close must wake them whenever it comes.
	h.Close()
	for range 2 {
		select {
		case err := <-errs:
			if err == nil {
				t.Fatal("no error after Close")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close did not wake a sleeper")
		}
	}
	for range 20 {
		h, p := ringPair(t, minRing)
		done := make(chan struct{})
		go func() {
			defer close(done)
			b := make([]byte, 1000)
			for {
				if _, err := h.Write(b); err != nil {
					return
				}
			}
		}()
		go func() {
			b := make([]byte, 700)
			for {
				if _, err := p.Read(b); err != nil {
					return
				}
			}
		}()
		h.Close()
		within(t, "writer after Close", done)
		p.Close()
	}
}

// The ends of a channel whose peer did not offer rings carry the data on
// the socket, and the rings are freed.
func TestDataChannelFallsBackToTheSocket(t *testing.T) {
	if !ringSupported {
		t.Skip("no shared-memory rings on this system")
	}
	d, err := NewDataChannel(minRing)
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.PluginEnd()
	if err != nil {
		t.Fatal(err)
	}
	plain := []pluginv1.Capability{pluginv1.Capability_CAPABILITY_DATA_CHANNEL}
	h, pc := d.Use(plain), DataConn(p, plain)
	defer h.Close()
	defer pc.Close()
	if _, ok := h.(*ringConn); ok {
		t.Fatal("host uses a ring its peer did not offer")
	}
	if _, ok := pc.(*ringConn); ok {
		t.Fatal("plugin uses a ring the host did not offer")
	}
	if !Has(DataOffer(p), pluginv1.Capability_CAPABILITY_DATA_RING) {
		t.Fatal("the plugin end does not offer its ring")
	}
	if _, err := h.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(pc, b); err != nil || string(b) != "hello" {
		t.Fatalf("%q %v", b, err)
	}
}

// The plugin side refuses a memfd that is not a ring pair (it then offers
// only the socket).
func TestInheritRefusesOddMemfd(t *testing.T) {
	if !ringSupported {
		t.Skip("no shared-memory rings on this system")
	}
	f, err := os.CreateTemp(t.TempDir(), "ring")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(ringHeader + 3*minRing)
	if _, err := mapRingMem(f); err == nil {
		t.Fatal("mapped an odd-sized file as a ring pair")
	}
}

// FuzzRingCounts lets a "plugin" write arbitrary counts into the shared
// header between the host's reads and writes: the host never copies out
// of bounds, never returns more than it was asked for, and fails only
// with ErrProtocol (or a closed peer).
func FuzzRingCounts(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 0, 0, 0, 0, 0, 2, 5})
	f.Add([]byte{3, 200, 1, 5, 2, 100, 0, 255, 255, 255, 255, 255, 255, 255, 255})
	f.Add([]byte{1, 0, 16, 0, 0, 0, 0, 0, 0, 2, 64, 3, 64})
	f.Fuzz(func(t *testing.T, ops []byte) {
		h, p := ringPair(t, minRing)
		h.SetDeadline(time.Now().Add(time.Millisecond))
		buf := make([]byte, 1+255*64)
		for len(ops) >= 2 {
			op, arg := ops[0]%4, int(ops[1])
			ops = ops[2:]
			var n int
			var err error
			switch op {
			case 0, 1: // the plugin sets a count: written (ring 1) or read (ring 0)
				var v uint64
				for i := 0; i < 8 && len(ops) > 0; i++ {
					v = v<<8 | uint64(ops[0])
					ops = ops[1:]
				}
				off := ringHeaderLen + offWritten
				if op == 1 {
					off = offRead
				}
				corrupt(p, off, v)
				continue
			case 2:
				want := 1 + arg*64
				n, err = h.Read(buf[:want])
				if n > want {
					t.Fatalf("read %d of %d", n, want)
				}
			case 3:
				want := 1 + arg*64
				n, err = h.(*ringConn).TryWrite(buf[:want])
				if n > want || n > minRing {
					t.Fatalf("wrote %d of %d into a ring of %d", n, want, minRing)
				}
			}
			if err != nil {
				var ne net.Error
				if !errors.Is(err, ErrProtocol) && !(errors.As(err, &ne) && ne.Timeout()) {
					t.Fatalf("op %d: %v", op, err)
				}
				if errors.Is(err, ErrProtocol) {
					return
				}
			}
		}
	})
}
