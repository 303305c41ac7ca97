package udptransport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func listenT(t *testing.T, settings map[string]string) (*Transport, *listener) {
	t.Helper()
	tr := newConfigured(t, settings)
	t.Cleanup(func() { _ = tr.Close() })
	ln, err := tr.Listen(testCtx(t), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return tr, ln.(*listener)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawPeer does the handshake by hand from a plain UDP socket, so tests can
// send crafted datagrams on an established link.
type rawPeer struct {
	conn *net.UDPConn
	id   uint32
}

func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	p := &rawPeer{conn: c.(*net.UDPConn), id: rand.Uint32() | 1}
	p.send(t, helloDatagram(p.id, nil))
	h := p.expect(t, TypeCookie)
	p.send(t, helloDatagram(p.id, h.Payload))
	p.expect(t, TypeWelcome)
	return p
}

func (p *rawPeer) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (p *rawPeer) expect(t *testing.T, typ byte) header {
	t.Helper()
	buf := make([]byte, 70000)
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for datagram type %d: %v", typ, err)
		}
		h, err := decodeHeader(buf[:n], MaxMessageSize)
		if err != nil {
			t.Fatalf("bad datagram from the listener: %v", err)
		}
		if h.Type == typ {
			h.Payload = append([]byte(nil), h.Payload...)
			return h
		}
	}
}

func accept(t *testing.T, ln *listener) transport.Link {
	t.Helper()
	l, err := ln.Accept(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// inbox hands out a link's messages one at a time.
type inbox struct {
	l       transport.Link
	pending [][]byte
}

func (in *inbox) next(timeout time.Duration) ([]byte, error) {
	if len(in.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		b, err := in.l.Recv(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range b {
			in.pending = append(in.pending, append([]byte(nil), m...))
		}
	}
	m := in.pending[0]
	in.pending = in.pending[1:]
	return m, nil
}

func recvOne(t *testing.T, l transport.Link, timeout time.Duration) ([]byte, error) {
	t.Helper()
	in := &inbox{l: l}
	m, err := in.next(timeout)
	if err == nil && len(in.pending) > 0 {
		t.Fatalf("got %d messages at once, want 1", 1+len(in.pending))
	}
	return m, err
}

func counter(c transport.Counters, name string) uint64 { return c.Counters()[name] }

// TestCraftedFragments sends hand-made datagrams on an established link:
// interleaved fragments of two messages, truncated fragments, a fragment
// claiming 4 GiB, a message with a missing fragment, two messages under one
// id, garbage and duplicates. Only whole, correct messages are delivered,
// each once, and the link keeps working.
func TestCraftedFragments(t *testing.T) {
	// A reassembly timeout of 1 s: the interleaved messages' fragments go
	// out in one burst, which a loaded machine may stretch past 300 ms.
	tr, ln := listenT(t, map[string]string{SettingReassemblyTimeout: "1s"})
	p := dialRaw(t, ln.Addr())
	sv := accept(t, ln)
	a := bytes.Repeat([]byte("A123456789"), 500)
	b := bytes.Repeat([]byte("b987654321"), 400)
	fa := fragments(p.id, 1, a, 1200)
	fb := fragments(p.id, 2, b, 1200)

	// Interleaved and out of order; a duplicate fragment in the middle.
	for _, d := range [][]byte{fa[2], fb[0], fa[0], fb[3], fa[0], fa[4], fb[1], fa[1], fb[2], fa[3]} {
		p.send(t, d)
	}
	in := &inbox{l: sv}
	got := map[string]bool{}
	for len(got) < 2 {
		m, err := in.next(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case bytes.Equal(m, a):
			got["a"] = true
		case bytes.Equal(m, b):
			got["b"] = true
		default:
			t.Fatalf("a %d-byte message that is neither A nor B was delivered", len(m))
		}
	}

	bad0 := counter(sv.(transport.Counters), "bad_datagrams")
	// A truncated fragment, a 4 GiB claim, a 4 GiB claim with a valid
	// looking span, garbage.
	p.send(t, fa[0][:len(fa[0])-10])
	p.send(t, fragDatagram(p.id, 9, 0, 2, 0xFFFFFFFF, []byte("x")))
	p.send(t, fragDatagram(p.id, 10, 0, 0xFFFF, 0xFFFFFFFF, make([]byte, 1000)))
	p.send(t, []byte("GET / HTTP/1.1\r\n\r\n"))
	p.send(t, append([]byte{WireVersion, TypeData}, 0, 0, 0)) // short
	waitFor(t, "bad datagrams counted", func() bool {
		return counter(sv.(transport.Counters), "bad_datagrams") >= bad0+5
	})
	if u := tr.budget.used.Load(); u != 0 {
		t.Fatalf("bad fragments reserved %d bytes of reassembly memory", u)
	}

	// A message with a missing fragment is dropped whole after the
	// reassembly timeout; a second message reusing fragments of the
	// same id with another total poisons the first.
	c := bytes.Repeat([]byte("c"), 3000)
	fc := fragments(p.id, 3, c, 1200)
	p.send(t, fc[0])
	p.send(t, fc[2])
	d := bytes.Repeat([]byte("d"), 3000)
	fd := fragments(p.id, 4, d, 1200)
	p.send(t, fd[0])
	p.send(t, fragDatagram(p.id, 4, 1, 3, 3001, make([]byte, 1001)))
	p.send(t, fd[1])
	p.send(t, fd[2])
	waitFor(t, "the incomplete message timing out", func() bool {
		return counter(sv.(transport.Counters), "reassembly_timeouts") >= 1
	})
	// Late fragment of the timed-out message: starts a new partial that
	// also times out, never completes a mixed message.
	p.send(t, fc[1])

	// The link still works: a data datagram and a duplicate of it.
	p.send(t, dataDatagram(p.id, 20, []byte("still here")))
	p.send(t, dataDatagram(p.id, 20, []byte("still here")))
	p.send(t, dataDatagram(p.id, 21, []byte("and here")))
	for _, want := range []string{"still here", "and here"} {
		m, err := in.next(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(m) != want {
			t.Fatalf("got %q (%d bytes), want %q: an incomplete, mixed or duplicate message was delivered", m, len(m), want)
		}
	}
	if m, err := in.next(700 * time.Millisecond); err == nil {
		t.Fatalf("unexpected delivery of %d bytes", len(m))
	}
	cs := sv.(transport.Counters).Counters()
	if cs["duplicates"] < 2 {
		t.Errorf("duplicates = %d, want at least 2 (a fragment and a data datagram)", cs["duplicates"])
	}
	if cs["dropped_fragments"] == 0 {
		t.Error("dropped_fragments = 0, want the fragments of the dropped messages counted")
	}
	t.Logf("link counters: %v", cs)
	waitFor(t, "reassembly memory released", func() bool { return tr.budget.used.Load() == 0 })
}

// TestReassemblyMemoryBounded: a peer opening many large messages and never
// finishing them holds at most reassembly_peer_bytes, and the transport at
// most reassembly_total_bytes.
func TestReassemblyMemoryBounded(t *testing.T) {
	tr, ln := listenT(t, map[string]string{
		SettingReassemblyPeerBytes:  fmt.Sprint(2 << 20),
		SettingReassemblyTotalBytes: fmt.Sprint(3 << 20),
	})
	var peers []*rawPeer
	for i := 0; i < 3; i++ {
		peers = append(peers, dialRaw(t, ln.Addr()))
		accept(t, ln)
	}
	for _, p := range peers {
		for id := uint32(1); id <= 20; id++ {
			p.send(t, fragDatagram(p.id, id, 0, 1000, MaxMessageSize, make([]byte, fragmentSpanLen(MaxMessageSize, 1000, 0))))
		}
	}
	waitFor(t, "first fragments processed", func() bool {
		return counter(ln, "dropped_fragments") >= 50
	})
	if u := tr.budget.used.Load(); u > 3<<20 {
		t.Fatalf("reassembly holds %d bytes, cap %d", u, 3<<20)
	}
	ln.mu.Lock()
	for _, lk := range ln.peers {
		if n := lk.reasm.pending(); n > 2<<20 {
			t.Errorf("one link holds %d bytes of partial messages, cap %d", n, 2<<20)
		}
	}
	ln.mu.Unlock()
}

func fragmentSpanLen(total, count, i int) int {
	_, n, _ := fragmentSpan(total, count, i)
	return n
}

// TestSpoofedFlood: hellos from many addresses that never answer the cookie
// (as spoofed sources cannot), forged cookies and data for unknown links
// create no peer state; a real dialer still gets through.
func TestSpoofedFlood(t *testing.T) {
	_, ln := listenT(t, testSettings)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const sockets, perSocket = 50, 200
	var wg sync.WaitGroup
	for s := 0; s < sockets; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", ln.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; i < perSocket; i++ {
				id := rand.Uint32() | 1
				var d []byte
				switch i % 3 {
				case 0:
					d = helloDatagram(id, nil)
				case 1:
					d = helloDatagram(id, make([]byte, cookieLen))
				default:
					d = dataDatagram(id, uint32(i), []byte("spoofed"))
				}
				if _, err := c.Write(d); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every datagram that reached the socket was answered or dropped
	// without state. (The kernel may drop some of a burst.)
	waitFor(t, "flood processed", func() bool {
		return counter(ln, "cookie_challenges") > 0 && counter(ln, "datagrams_in") >= sockets*perSocket/10
	})
	if n := ln.peerCount(); n != 0 {
		t.Fatalf("the flood created %d peers", n)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("heap grew by %d bytes during a flood of %d datagrams", grew, sockets*perSocket)
	}
	t.Logf("listener counters after the flood: %v", ln.Counters())

	// The listener keeps serving.
	cli := newConfigured(t, testSettings)
	defer cli.Close()
	ctx := testCtx(t)
	c, err := cli.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatalf("Dial after the flood: %v", err)
	}
	sv := accept(t, ln)
	if err := c.Send(ctx, [][]byte{[]byte("after the flood")}); err != nil {
		t.Fatal(err)
	}
	if m, err := recvOne(t, sv, 10*time.Second); err != nil || string(m) != "after the flood" {
		t.Fatalf("after the flood: %q, %v", m, err)
	}
}

// TestMaxPeersAndExpiry: the listener refuses peers beyond max_peers with a
// clear error, expires idle peers, and then admits new ones.
func TestMaxPeersAndExpiry(t *testing.T) {
	// The two admitted peers must stay alive (keepalives every 200 ms)
	// until the third is refused: an idle timeout of 500 ms left 300 ms
	// for a loaded machine.
	_, ln := listenT(t, map[string]string{
		SettingMaxPeers: "2", SettingKeepaliveInterval: "100ms", SettingIdleTimeout: "1500ms",
	})
	cli := newConfigured(t, testSettings)
	defer cli.Close()
	ctx := testCtx(t)
	for i := 0; i < 2; i++ {
		if _, err := cli.Dial(ctx, ln.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	_, err := cli.Dial(ctx, ln.Addr())
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("third Dial with max_peers 2: got %v, want ErrRefused", err)
	}
	t.Logf("refused as expected: %v", err)
	// Raw peers that go silent expire.
	_ = cli.Close()
	waitFor(t, "peers closed", func() bool { return ln.peerCount() == 0 })
	p := dialRaw(t, ln.Addr())
	sv := accept(t, ln)
	_ = p
	waitFor(t, "the silent peer expiring", func() bool { return ln.peerCount() == 0 })
	if _, err := sv.Recv(ctx); !errors.Is(err, ErrPeerVanished) {
		t.Fatalf("Recv on an expired peer's link: %v, want ErrPeerVanished", err)
	}
	if counter(ln, "peers_expired") == 0 {
		t.Error("peers_expired not counted")
	}
}

// TestOneMiBMessage sends 1 MiB messages over the fragmenting path both
// ways and checks them byte for byte.
func TestOneMiBMessage(t *testing.T) {
	_, ln := listenT(t, testSettings)
	cli := newConfigured(t, testSettings)
	defer cli.Close()
	ctx := testCtx(t)
	c, err := cli.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	sv := accept(t, ln)
	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i*7 + i>>12)
	}
	for _, d := range []struct {
		from, to transport.Link
	}{{c, sv}, {sv, c}} {
		var got []byte
		for attempt := 0; got == nil && attempt < 5; attempt++ {
			if err := d.from.Send(ctx, [][]byte{msg}); err != nil {
				t.Fatal(err)
			}
			got, _ = recvOne(t, d.to, 3*time.Second)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("1 MiB message: got %d bytes, not the message sent", len(got))
		}
	}
	cs := c.(transport.Counters).Counters()
	if cs["datagrams_out"] < (1<<20)/DefaultDatagramSize {
		t.Fatalf("a 1 MiB message went out in %d datagrams: not fragmented", cs["datagrams_out"])
	}
	t.Logf("dialer counters: %v", cs)
}

// TestLossyPath runs messages through a UDP proxy that drops 10% of
// datagrams each way: whatever is delivered is whole and correct, and
// messages that fit one datagram mostly arrive.
func TestLossyPath(t *testing.T) {
	_, ln := listenT(t, testSettings)
	proxy := newLossyProxy(t, ln.Addr(), 0.10)
	cli := newConfigured(t, testSettings)
	defer cli.Close()
	ctx := testCtx(t)
	c, err := cli.Dial(ctx, proxy.addr())
	if err != nil {
		t.Fatalf("Dial through the lossy proxy: %v", err)
	}
	sv := accept(t, ln)
	sizes := []int{0, 10, 500, 1400, 3000, 20000, 100000}
	var mu sync.Mutex
	sent := map[string]int{} // content -> times sent (under mu)
	delivered := map[string]int{}
	done := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	go func() {
		for {
			b, err := sv.Recv(rctx)
			if err != nil {
				done <- nil
				return
			}
			mu.Lock()
			for _, m := range b {
				delivered[string(m)]++
			}
			mu.Unlock()
		}
	}()
	const rounds = 60
	for r := 0; r < rounds; r++ {
		var batch [][]byte
		for _, n := range sizes {
			m := make([]byte, n)
			for i := range m {
				m[i] = byte(r*31 + n + i)
			}
			if n >= 4 {
				copy(m, fmt.Sprintf("%02d", r%100))
			}
			batch = append(batch, m)
			mu.Lock()
			sent[string(m)]++
			mu.Unlock()
		}
		if err := c.Send(ctx, batch); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // pace: the proxy is one goroutine per direction
	}
	// The proxy and the listener keep order: once a marker sent after
	// everything arrives, the rest arrived or was lost.
	marker := []byte("end of the lossy run")
	waitFor(t, "the end marker through the lossy proxy", func() bool {
		mu.Lock()
		got := delivered[string(marker)] > 0
		mu.Unlock()
		if !got {
			mu.Lock()
			sent[string(marker)]++
			mu.Unlock()
			if err := c.Send(ctx, [][]byte{marker}); err != nil {
				t.Fatal(err)
			}
		}
		return got
	})
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	small := 0
	for m, k := range delivered {
		if sent[m] == 0 {
			t.Fatalf("a %d-byte message was delivered that was never sent (partial or mixed)", len(m))
		}
		if k > sent[m] {
			t.Fatalf("a %d-byte message was delivered %d times, sent %d", len(m), k, sent[m])
		}
		if len(m) <= 1400 && string(m) != string(marker) {
			small += k
		}
	}
	n := 0
	for _, k := range delivered {
		n += k
	}
	t.Logf("through 10%% loss: %d of %d messages delivered (%d of %d single-datagram ones); proxy dropped %d of %d datagrams",
		n, rounds*len(sizes), small, rounds*4, proxy.dropped(), proxy.seen())
	if small < rounds*4*6/10 {
		t.Fatalf("only %d of %d single-datagram messages arrived through 10%% loss", small, rounds*4)
	}
	if proxy.dropped() == 0 {
		t.Fatal("the proxy dropped nothing: the test did not test loss")
	}
}

// lossyProxy forwards datagrams between one client and a server, dropping
// a fraction of them in each direction.
type lossyProxy struct {
	front *net.UDPConn
	back  *net.UDPConn
	loss  float64
	mu    sync.Mutex
	drops int
	total int
	rng   *rand.Rand
}

func newLossyProxy(t *testing.T, server string, loss float64) *lossyProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{front: front, back: b.(*net.UDPConn), loss: loss, rng: rand.New(rand.NewPCG(5, 6))}
	var wg sync.WaitGroup
	var client net.Addr
	var cmu sync.Mutex
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			client = from
			cmu.Unlock()
			if !p.drop() {
				_, _ = p.back.Write(buf[:n])
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := p.back.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			cmu.Lock()
			to := client
			cmu.Unlock()
			if to != nil && !p.drop() {
				_, _ = front.WriteTo(buf[:n], to)
			}
		}
	}()
	t.Cleanup(func() {
		_ = front.Close()
		_ = p.back.Close()
		wg.Wait()
	})
	return p
}

func (p *lossyProxy) addr() string { return p.front.LocalAddr().String() }

func (p *lossyProxy) drop() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total++
	if p.rng.Float64() < p.loss {
		p.drops++
		return true
	}
	return false
}

func (p *lossyProxy) dropped() int { p.mu.Lock(); defer p.mu.Unlock(); return p.drops }
func (p *lossyProxy) seen() int    { p.mu.Lock(); defer p.mu.Unlock(); return p.total }

// TestIPv6 runs a link over ::1 (the batch path uses x/net's ipv6
// PacketConn there), with a fragmented message.
func TestIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		_ = c.Close()
	}
	srv, cli := newConfigured(t, testSettings), newConfigured(t, testSettings)
	defer srv.Close()
	defer cli.Close()
	ctx := testCtx(t)
	ln, err := srv.Listen(ctx, "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	big := bytes.Repeat([]byte("v6"), 5000)
	for _, m := range [][]byte{[]byte("small"), big} {
		if err := c.Send(ctx, [][]byte{m}); err != nil {
			t.Fatal(err)
		}
		got, err := recvOne(t, sv, 10*time.Second)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("over ::1: got %d bytes (%v), want %d", len(got), err, len(m))
		}
	}
	if err := sv.Send(ctx, [][]byte{[]byte("back")}); err != nil {
		t.Fatal(err)
	}
	if got, err := recvOne(t, c, 10*time.Second); err != nil || string(got) != "back" {
		t.Fatalf("reply over ::1: %q, %v", got, err)
	}
}

// TestDualStackListener: a listener on ":port" (an IPv6 socket taking IPv4
// too) serves an IPv4 dialler; peers are keyed by the unmapped address and
// replies, fragments included, reach it.
func TestDualStackListener(t *testing.T) {
	srv, cli := newConfigured(t, testSettings), newConfigured(t, testSettings)
	defer srv.Close()
	defer cli.Close()
	ctx := testCtx(t)
	ln, err := srv.Listen(ctx, ":0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("Dial 127.0.0.1 to a listener on %s: %v", ln.Addr(), err)
	}
	sv, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	if !strings.HasPrefix(sv.RemoteAddr(), "127.0.0.1:") {
		t.Errorf("accepted link's RemoteAddr %q; want the unmapped IPv4 address", sv.RemoteAddr())
	}
	big := bytes.Repeat([]byte{7}, 5000)
	if err := sv.Send(ctx, [][]byte{[]byte("x"), big}); err != nil {
		t.Fatal(err)
	}
	in := &inbox{l: c}
	for _, want := range [][]byte{[]byte("x"), big} {
		got, err := in.next(10 * time.Second)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reply through a dual-stack listener: %d bytes (%v), want %d", len(got), err, len(want))
		}
	}
}
