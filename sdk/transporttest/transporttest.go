// Package transporttest is a conformance suite for Ferry transports.
//
// A transport author calls Run from one test:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Config{
//			New:           func(t *testing.T) transport.Transport { return mytransport.New() },
//			ListenAddress: "127.0.0.1:0",
//			RawDial:       func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
//		})
//	}
//
// Run checks, each in its own subtest: the transport's Info, in-order
// delivery, packet sizes from 0 bytes to the maximum, oversize packets
// refused with transport.ErrTooLarge while the link stays usable, many
// concurrent links, traffic both ways at once, a clean Close seen by the
// peer as io.EOF after every packet sent before it, peer death noticed,
// Listener.Close making Accept return transport.ErrClosed, Transport.Close
// closing everything, context cancellation of Accept and Recv, and (with
// RawDial) bad bytes from the network closing only the link that carried
// them.
//
// A transport whose Info().Unreliable is true (or with Config.Unreliable
// set) is checked against the unreliable profile instead (see
// unreliable.go): it never asserts order or that everything arrives, but
// that whatever arrives is byte-exact one of the packets sent on that link,
// delivered at most as often as it was sent (unless Config.MayDuplicate),
// that a high fraction arrives on loopback (Config.MinDelivered), and the
// same sizes, oversize refusal, concurrency and lifecycle checks. Its
// BadBytes subtest sends each bad input as one write from a fresh RawDial
// connection (a stray datagram) and checks that open links and the listener
// keep working.
//
// The same suite runs against an in-process transport value and against a
// plugin subprocess (New returns the host's client for it), so a plugin can
// be checked end to end.
package transporttest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Config tells Run how to use the transport under test.
type Config struct {
	// New returns a fresh, configured transport. Run keeps two of them,
	// one listening and one dialling (as on two nodes), for the subtests
	// that leave a transport usable, and makes fresh ones for those that
	// close or kill it. Run closes every transport it got from New.
	// Required.
	New func(t *testing.T) transport.Transport

	// ListenAddress is passed to Listen, e.g. "127.0.0.1:0". Every subtest
	// listens anew, so it should pick a free address each time. Required.
	ListenAddress string

	// ListenAddressFunc, when set, is used instead of ListenAddress; for
	// transports whose addresses cannot be reused (a Unix socket path per
	// listener, for example).
	ListenAddressFunc func(t *testing.T) string

	// MaxMessageSize is the largest packet the transport under test
	// carries; 0 means its Info().MaxMessageSize.
	MaxMessageSize int

	// Links is how many links the concurrency subtest opens at once;
	// 0 means 32.
	Links int

	// RawDial, when set, opens a plain byte connection to a listener's
	// address so the suite can send bytes that are not the transport's
	// framing and abruptly drop a connection. Without it the bad-bytes and
	// raw peer-death subtests are skipped.
	RawDial func(addr string) (net.Conn, error)

	// BadInputs are byte sequences that must make the receiving side close
	// the link that carried them (sent through RawDial). The suite always
	// adds random bytes and a run of 0xFF bytes; add transport-specific
	// ones here, such as a valid header announcing a 4 GiB frame.
	BadInputs []BadInput

	// Kill, when set, abruptly ends a transport as a crash would (for a
	// plugin: kill its process). The peer-death subtest then checks that
	// the other side's link notices with an error.
	Kill func(t *testing.T, tr transport.Transport)

	// Timeout bounds every wait in the suite; 0 means 10 seconds.
	Timeout time.Duration

	// Unreliable selects the unreliable profile even when the transport's
	// Info().Unreliable is false; for a host-side client that does not
	// carry the flag across the plugin protocol.
	Unreliable bool

	// MayDuplicate says an unreliable transport may deliver a packet more
	// often than it was sent. Without it, a duplicate fails the suite.
	MayDuplicate bool

	// MinDelivered is the fraction of packets an unreliable transport must
	// deliver over loopback with a paced sender; 0 means 0.9. Echoed
	// packets (ConcurrentLinks) must reach its square.
	MinDelivered float64

	// Skip names subtests (as printed by go test, e.g. "DialRefused") that
	// do not apply to the transport, with the reason as value.
	Skip map[string]string
}

// BadInput is one malformed byte sequence for the bad-bytes subtest.
type BadInput struct {
	Name  string
	Bytes []byte
}

// suite carries the normalised config through the subtests.
type suite struct {
	srv     transport.Transport // shared by the subtests that keep it usable
	cli     transport.Transport
	cfg     Config
	max     int
	links   int
	timeout time.Duration
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.New == nil {
		t.Fatal("transporttest: Config.New is required")
	}
	if cfg.ListenAddress == "" && cfg.ListenAddressFunc == nil {
		t.Fatal("transporttest: Config.ListenAddress (or ListenAddressFunc) is required")
	}
	s := &suite{cfg: cfg, max: cfg.MaxMessageSize, links: cfg.Links, timeout: cfg.Timeout}
	if s.links <= 0 {
		s.links = 32
	}
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	// The shared transports are made here, on the top-level test's
	// goroutine, so a failing New stops the run cleanly.
	s.srv = s.newTransport(t)
	s.cli = s.newTransport(t)
	if s.max <= 0 {
		s.max = s.srv.Info().MaxMessageSize
		if s.max <= 0 {
			t.Fatal("transporttest: Info().MaxMessageSize is not positive and Config.MaxMessageSize is unset")
		}
	}
	tests := []namedTest{
		{"Info", s.testInfo},
		{"InOrder", s.testInOrder},
		{"Sizes", s.testSizes},
		{"Oversize", s.testOversize},
		{"ConcurrentLinks", s.testConcurrentLinks},
		{"BothDirections", s.testBothDirections},
		{"CloseNoticedByPeer", s.testCloseNoticed},
		{"CloseUnblocksRecv", s.testCloseUnblocksRecv},
		{"RecvContext", s.testRecvContext},
		{"PeerDeath", s.testPeerDeath},
		{"ListenerClose", s.testListenerClose},
		{"AcceptContext", s.testAcceptContext},
		{"TransportClose", s.testTransportClose},
		{"DialRefused", s.testDialRefused},
		{"BadBytes", s.testBadBytes},
	}
	if cfg.Unreliable || s.srv.Info().Unreliable {
		tests = s.unreliableTests()
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := cfg.Skip[tc.name]; ok {
				t.Skip(why)
			}
			tc.fn(t)
		})
	}
}

type namedTest struct {
	name string
	fn   func(t *testing.T)
}

// ctx returns a context bounded by the suite's timeout for one subtest.
func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) newTransport(t *testing.T) transport.Transport {
	t.Helper()
	tr := s.cfg.New(t)
	if tr == nil {
		t.Fatal("Config.New returned nil")
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func (s *suite) listenAddress(t *testing.T) string {
	if s.cfg.ListenAddressFunc != nil {
		return s.cfg.ListenAddressFunc(t)
	}
	return s.cfg.ListenAddress
}

// env is one listening transport and one dialling transport.
type env struct {
	srv, cli transport.Transport
	ln       transport.Listener
}

// setup listens on the shared listening transport; links are dialled from
// the shared dialling one.
func (s *suite) setup(t *testing.T) *env {
	t.Helper()
	return s.listen(t, &env{srv: s.srv, cli: s.cli})
}

// setupFresh is setup with transports of the subtest's own, for subtests
// that close or kill them.
func (s *suite) setupFresh(t *testing.T) *env {
	t.Helper()
	return s.listen(t, &env{srv: s.newTransport(t), cli: s.newTransport(t)})
}

func (s *suite) listen(t *testing.T, e *env) *env {
	t.Helper()
	addr := s.listenAddress(t)
	ln, err := e.srv.Listen(s.ctx(t), addr)
	if err != nil {
		t.Fatalf("Listen(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	if ln.Addr() == "" {
		t.Fatalf("Listen(%q): listener reports an empty Addr", addr)
	}
	e.ln = ln
	return e
}

// pair dials the listener and accepts the link: client end, server end.
func (s *suite) pair(t *testing.T, e *env) (transport.Link, transport.Link) {
	t.Helper()
	return Pair(s.ctx(t), t, e.cli, e.ln, e.ln.Addr())
}

// packet builds a packet of size n whose content identifies (stream, seq),
// so reordering, loss and corruption are all detected by checkPacket.
func packet(stream, seq uint32, n int) []byte {
	p := make([]byte, n)
	fillPacket(p, stream, seq)
	return p
}

func fillPacket(p []byte, stream, seq uint32) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], stream)
	binary.BigEndian.PutUint32(hdr[4:], seq)
	n := copy(p, hdr[:])
	if n < 8 {
		return
	}
	// A 251-byte block (prime, so it never lines up with power-of-two
	// boundaries) rotated per packet, then doubled with copy: cheap even
	// for the maximum size under the race detector.
	off := (seq*7 + stream) % 251
	for i := 8; i < len(p) && i < 8+251; i++ {
		p[i] = byte((uint32(i-8)+off)%251) ^ 0x5a
	}
	for filled := min(len(p), 8+251); filled < len(p); {
		filled += copy(p[filled:], p[8:filled])
	}
}

func checkPacket(p []byte, stream, seq uint32, n int) error {
	if len(p) != n {
		return fmt.Errorf("packet %d/%d: got %d bytes, want %d", stream, seq, len(p), n)
	}
	want := make([]byte, n)
	fillPacket(want, stream, seq)
	if !bytes.Equal(p, want) {
		if n >= 8 {
			return fmt.Errorf("packet %d/%d: got content of packet %d/%d (lost, reordered or corrupted)",
				stream, seq, binary.BigEndian.Uint32(p[:4]), binary.BigEndian.Uint32(p[4:8]))
		}
		return fmt.Errorf("packet %d/%d: content differs", stream, seq)
	}
	return nil
}

// recvN receives exactly len(sizes) packets and checks each against
// (stream, first+i, sizes[i]).
func recvN(ctx context.Context, l transport.Link, stream, first uint32, sizes []int) error {
	i := 0
	for i < len(sizes) {
		batch, err := l.Recv(ctx)
		if err != nil {
			return fmt.Errorf("link.Recv after %d of %d packets: %w", i, len(sizes), err)
		}
		for _, p := range batch {
			if i >= len(sizes) {
				return fmt.Errorf("received more than the %d packets sent", len(sizes))
			}
			if err := checkPacket(p, stream, first+uint32(i), sizes[i]); err != nil {
				return err
			}
			i++
		}
	}
	return nil
}

// sendAll sends packets (stream, first+i, sizes[i]) in batches of up to
// batch packets.
func sendAll(ctx context.Context, l transport.Link, stream, first uint32, sizes []int, batch int) error {
	var b [][]byte
	for i, n := range sizes {
		b = append(b, packet(stream, first+uint32(i), n))
		if len(b) == batch || i == len(sizes)-1 {
			if err := l.Send(ctx, b); err != nil {
				return fmt.Errorf("link.Send of packets up to %d: %w", i, err)
			}
			b = b[:0]
		}
	}
	return nil
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

func (s *suite) testInfo(t *testing.T) {
	tr := s.newTransport(t)
	info := tr.Info()
	if info.Name == "" {
		t.Error("Info().Name is empty")
	}
	if info.AddressType == "" {
		t.Error("Info().AddressType is empty")
	}
	if info.Version == "" {
		t.Error("Info().Version is empty")
	}
	if info.MaxMessageSize <= 0 {
		t.Errorf("Info().MaxMessageSize = %d, want > 0", info.MaxMessageSize)
	}
	seen := map[string]bool{}
	for _, st := range info.Settings {
		if st.Name == "" {
			t.Error("a setting has an empty Name")
		}
		if seen[st.Name] {
			t.Errorf("setting %q is declared twice", st.Name)
		}
		seen[st.Name] = true
		switch st.Type {
		case transport.String, transport.Int, transport.Bool, transport.Duration:
		default:
			t.Errorf("setting %q has unknown type %q", st.Name, st.Type)
		}
		if st.Description == "" {
			t.Errorf("setting %q has no Description", st.Name)
		}
	}
}

func (s *suite) testInOrder(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	const n = 2000
	sizes := make([]int, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range sizes {
		sizes[i] = 8 + rng.IntN(200)
	}
	errc := make(chan error, 1)
	go func() {
		// Batches of varying length, including single packets.
		i := 0
		for i < n {
			k := 1 + rng.IntN(64)
			if i+k > n {
				k = n - i
			}
			if err := sendAll(ctx, c, 1, uint32(i), sizes[i:i+k], k); err != nil {
				errc <- err
				return
			}
			i += k
		}
		errc <- nil
	}()
	if err := recvN(ctx, sv, 1, 0, sizes); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// And the other way, on the same link.
	go func() { errc <- sendAll(ctx, sv, 2, 0, sizes[:100], 10) }()
	if err := recvN(ctx, c, 2, 0, sizes[:100]); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testSizes(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	var sizes []int
	for _, n := range []int{0, 1, 2, 7, 8, 9, 100, 1 << 10, 4<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20, s.max - 1, s.max} {
		if n >= 0 && n <= s.max {
			sizes = append(sizes, n)
		}
	}
	errc := make(chan error, 1)
	go func() {
		// One per batch, then all in one batch (as large as the suite dares).
		if err := sendAll(ctx, c, 3, 0, sizes, 1); err != nil {
			errc <- err
			return
		}
		errc <- sendAll(ctx, c, 3, uint32(len(sizes)), sizes, len(sizes))
	}()
	if err := recvN(ctx, sv, 3, 0, sizes); err != nil {
		t.Fatalf("sizes one per Send: %v", err)
	}
	if err := recvN(ctx, sv, 3, uint32(len(sizes)), sizes); err != nil {
		t.Fatalf("sizes in one batch: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testOversize(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	big := make([]byte, s.max+1)
	if err := c.Send(ctx, [][]byte{big}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Send of %d bytes (max %d): got %v, want an error wrapping transport.ErrTooLarge", len(big), s.max, err)
	}
	// A batch with an oversize packet in it is refused too.
	if err := c.Send(ctx, [][]byte{packet(4, 99, 16), big, packet(4, 98, 16)}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Send of a batch holding a %d-byte packet: got %v, want transport.ErrTooLarge", len(big), err)
	}
	// The link still works and carried nothing of the refused calls.
	if err := sendAll(ctx, c, 4, 0, repeat(3, 32), 3); err != nil {
		t.Fatalf("Send after ErrTooLarge: %v (the link must stay usable)", err)
	}
	if err := recvN(ctx, sv, 4, 0, repeat(3, 32)); err != nil {
		t.Fatalf("after ErrTooLarge: %v", err)
	}
	if err := sv.Send(ctx, [][]byte{big}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("accepted side: Send of %d bytes: got %v, want transport.ErrTooLarge", len(big), err)
	}
	if err := sendAll(ctx, sv, 5, 0, repeat(1, 32), 1); err != nil {
		t.Fatal(err)
	}
	if err := recvN(ctx, c, 5, 0, repeat(1, 32)); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testConcurrentLinks(t *testing.T) {
	e := s.setup(t)
	ctx := s.ctx(t)
	const perLink = 200
	// The server echoes every packet back on the link it came from.
	var srvWG sync.WaitGroup
	srvErr := make(chan error, s.links+1)
	srvWG.Add(1)
	go func() {
		defer srvWG.Done()
		for i := 0; i < s.links; i++ {
			l, err := e.ln.Accept(ctx)
			if err != nil {
				srvErr <- fmt.Errorf("listener.Accept %d: %w", i, err)
				return
			}
			srvWG.Add(1)
			go func() {
				defer srvWG.Done()
				defer l.Close()
				for got := 0; got < perLink; {
					b, err := l.Recv(ctx)
					if err != nil {
						srvErr <- fmt.Errorf("server Recv: %w", err)
						return
					}
					// Copy: the batch is only valid until the next Recv.
					cp := make([][]byte, len(b))
					for j := range b {
						cp[j] = append([]byte(nil), b[j]...)
					}
					if err := l.Send(ctx, cp); err != nil {
						srvErr <- fmt.Errorf("server Send: %w", err)
						return
					}
					got += len(b)
				}
			}()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 2*s.links)
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
			sizes := repeat(perLink, 64+i)
			sent := make(chan error, 1)
			go func() { sent <- sendAll(ctx, c, uint32(i), 0, sizes, 16) }()
			if err := recvN(ctx, c, uint32(i), 0, sizes); err != nil {
				errs <- fmt.Errorf("link %d: %w", i, err)
			}
			if err := <-sent; err != nil {
				errs <- fmt.Errorf("link %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	srvWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(srvErr)
	for err := range srvErr {
		t.Error(err)
	}
}

func (s *suite) testBothDirections(t *testing.T) {
	e := s.setup(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	// Enough bytes each way to fill socket and stream buffers, so a
	// transport whose Send waits for its own Recv would deadlock here.
	size := 32 << 10
	if size > s.max {
		size = s.max
	}
	sizes := repeat(256, size)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	run(func() error { return sendAll(ctx, c, 6, 0, sizes, 8) })
	run(func() error { return sendAll(ctx, sv, 7, 0, sizes, 8) })
	run(func() error { return recvN(ctx, sv, 6, 0, sizes) })
	run(func() error { return recvN(ctx, c, 7, 0, sizes) })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func (s *suite) testCloseNoticed(t *testing.T) {
	for _, dir := range []string{"dialer closes", "acceptor closes"} {
		t.Run(strings.ReplaceAll(dir, " ", "_"), func(t *testing.T) {
			e := s.setup(t)
			c, sv := s.pair(t, e)
			if dir == "acceptor closes" {
				c, sv = sv, c
			}
			ctx := s.ctx(t)
			// Everything sent before Close arrives, then io.EOF.
			sizes := repeat(50, 1000)
			if err := sendAll(ctx, c, 8, 0, sizes, 7); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := recvN(ctx, sv, 8, 0, sizes); err != nil {
				t.Fatalf("packets sent before Close: %v", err)
			}
			b, err := sv.Recv(ctx)
			if err != io.EOF {
				t.Fatalf("peer Recv after Close: got %d packets, err %v; want io.EOF", len(b), err)
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

func (s *suite) testCloseUnblocksRecv(t *testing.T) {
	e := s.setup(t)
	c, _ := s.pair(t, e)
	ctx := s.ctx(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Recv(ctx)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let Recv block; correctness does not depend on it
	_ = c.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Recv returned no error after Close")
		}
	case <-ctx.Done():
		t.Fatal("a Recv blocked on the link did not return after Close")
	}
}

func (s *suite) testRecvContext(t *testing.T) {
	e := s.setup(t)
	c, _ := s.pair(t, e)
	rctx, cancel := context.WithTimeout(s.ctx(t), 50*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Recv(rctx)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Recv returned no error when its context ended and nothing was sent")
		}
	case <-time.After(s.timeout):
		t.Fatal("Recv ignored its context: still blocked after the context ended")
	}
}

func (s *suite) testPeerDeath(t *testing.T) {
	ran := false
	if s.cfg.RawDial != nil {
		ran = true
		for _, how := range []string{"reset", "fin"} {
			t.Run("raw_"+how, func(t *testing.T) {
				e := s.setup(t)
				ctx := s.ctx(t)
				raw, sv := s.rawPair(t, e)
				if tc, ok := raw.(*net.TCPConn); ok && how == "reset" {
					_ = tc.SetLinger(0) // close with RST, as a crashed host's kernel may
				}
				_ = raw.Close()
				b, err := sv.Recv(ctx)
				if err == nil {
					t.Fatalf("Recv after the peer vanished: got %d packets and no error", len(b))
				}
				if ctx.Err() != nil {
					t.Fatalf("Recv did not notice the peer vanished within %s", s.timeout)
				}
			})
		}
	}
	if s.cfg.Kill != nil {
		ran = true
		t.Run("kill", func(t *testing.T) {
			e := s.setupFresh(t)
			c, sv := s.pair(t, e)
			ctx := s.ctx(t)
			if err := sendAll(ctx, c, 9, 0, repeat(1, 10), 1); err != nil {
				t.Fatal(err)
			}
			if err := recvN(ctx, sv, 9, 0, repeat(1, 10)); err != nil {
				t.Fatal(err)
			}
			s.cfg.Kill(t, e.cli)
			for {
				_, err := sv.Recv(ctx)
				if err != nil {
					if ctx.Err() != nil {
						t.Fatalf("the peer's death was not noticed within %s", s.timeout)
					}
					return
				}
			}
		})
	}
	if !ran {
		t.Skip("neither Config.RawDial nor Config.Kill is set")
	}
}

// rawPair opens a raw connection to the listener and accepts its link.
func (s *suite) rawPair(t *testing.T, e *env) (net.Conn, transport.Link) {
	t.Helper()
	ctx := s.ctx(t)
	type res struct {
		l   transport.Link
		err error
	}
	acc := make(chan res, 1)
	go func() {
		l, err := e.ln.Accept(ctx)
		acc <- res{l, err}
	}()
	raw, err := s.cfg.RawDial(e.ln.Addr())
	if err != nil {
		t.Fatalf("RawDial(%q): %v", e.ln.Addr(), err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	r := <-acc
	if r.err != nil {
		t.Fatalf("Accept of a raw connection: %v", r.err)
	}
	t.Cleanup(func() { _ = r.l.Close() })
	return raw, r.l
}

func (s *suite) testListenerClose(t *testing.T) {
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
	// Links already accepted stay open.
	if err := sendAll(ctx, c, 10, 0, repeat(5, 100), 5); err != nil {
		t.Fatalf("link after Listener.Close: %v", err)
	}
	if err := recvN(ctx, sv, 10, 0, repeat(5, 100)); err != nil {
		t.Fatalf("link after Listener.Close: %v", err)
	}
}

func (s *suite) testAcceptContext(t *testing.T) {
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
	// The listener still works.
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	if err := sendAll(ctx, c, 11, 0, repeat(1, 10), 1); err != nil {
		t.Fatal(err)
	}
	if err := recvN(ctx, sv, 11, 0, repeat(1, 10)); err != nil {
		t.Fatalf("listener after a cancelled Accept: %v", err)
	}
}

func (s *suite) testTransportClose(t *testing.T) {
	e := s.setupFresh(t)
	c, sv := s.pair(t, e)
	ctx := s.ctx(t)
	if err := e.srv.Close(); err != nil {
		t.Fatalf("Transport.Close: %v", err)
	}
	if _, err := e.ln.Accept(ctx); err == nil {
		t.Error("Accept after Transport.Close returned a link")
	}
	if _, err := sv.Recv(ctx); err == nil {
		t.Error("Recv on a link of a closed transport succeeded")
	}
	// The peer notices.
	for {
		_, err := c.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("the dialling side did not notice Transport.Close within %s", s.timeout)
			}
			break
		}
	}
}

func (s *suite) testDialRefused(t *testing.T) {
	e := s.setup(t)
	ctx := s.ctx(t)
	addr := e.ln.Addr()
	_ = e.ln.Close()
	l, err := e.cli.Dial(ctx, addr)
	if err == nil {
		_ = l.Close()
		t.Fatalf("Dial(%q) of a closed listener succeeded", addr)
	}
	if ctx.Err() != nil {
		t.Fatalf("Dial of a closed listener took the whole timeout: %v", err)
	}
}

func (s *suite) testBadBytes(t *testing.T) {
	if s.cfg.RawDial == nil {
		t.Skip("Config.RawDial is not set")
	}
	for _, in := range s.badInputs() {
		t.Run(in.Name, func(t *testing.T) {
			e := s.setup(t)
			ctx := s.ctx(t)
			// A healthy link, open before and after the bad one.
			c, sv := s.pair(t, e)
			raw, bad := s.rawPair(t, e)
			_ = raw.SetWriteDeadline(time.Now().Add(s.timeout))
			if _, err := raw.Write(in.Bytes); err != nil {
				// The listener may already have closed the connection.
				t.Logf("writing bad bytes: %v", err)
			}
			for {
				_, err := bad.Recv(ctx)
				if err != nil {
					if ctx.Err() != nil {
						t.Fatalf("bad bytes did not fail the link within %s", s.timeout)
					}
					if err == io.EOF {
						t.Fatalf("bad bytes reported as a clean close (io.EOF); want an error saying what was wrong")
					}
					t.Logf("link failed as expected: %v", err)
					break
				}
			}
			// The receiving side closed the raw connection.
			_ = raw.SetReadDeadline(time.Now().Add(s.timeout))
			buf := make([]byte, 1024)
			for {
				_, err := raw.Read(buf)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatal("the connection that carried bad bytes was not closed")
					}
					break
				}
			}
			// Other links keep working, and new ones can be made.
			if err := sendAll(ctx, c, 12, 0, repeat(3, 50), 3); err != nil {
				t.Fatal(err)
			}
			if err := recvN(ctx, sv, 12, 0, repeat(3, 50)); err != nil {
				t.Fatalf("healthy link after bad bytes on another: %v", err)
			}
			c2, sv2 := s.pair(t, e)
			if err := sendAll(ctx, sv2, 13, 0, repeat(3, 50), 3); err != nil {
				t.Fatal(err)
			}
			if err := recvN(ctx, c2, 13, 0, repeat(3, 50)); err != nil {
				t.Fatalf("new link after bad bytes: %v", err)
			}
		})
	}
}
