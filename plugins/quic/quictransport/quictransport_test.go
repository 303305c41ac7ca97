package quictransport_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/plugins/quic/internal/quictest"
	"github.com/ferryhq/ferry/plugins/quic/quictransport"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

func quiet() quictransport.Option { return quictransport.WithLogger(hclog.NewNullLogger()) }

func header(typ byte, n uint32) []byte {
	return []byte{quictransport.FrameVersion, typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// badInputs are frame-level garbage sent on a real QUIC stream.
func badInputs() []transporttest.BadInput {
	return []transporttest.BadInput{
		{Name: "4GiB_length", Bytes: header(1, 0xFFFFFFFF)},
		{Name: "max_plus_one", Bytes: header(1, 16<<20+1)},
		{Name: "wrong_version", Bytes: append([]byte{2}, header(1, 3)[1:]...)},
		{Name: "unknown_type", Bytes: header(9, 0)},
		{Name: "open_with_payload", Bytes: append(header(2, 1), 0)},
		{Name: "http", Bytes: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{Name: "good_then_bad", Bytes: append(append(header(1, 2), 'h', 'i'), 0, 0, 0)},
	}
}

func newTransport(t testing.TB, settings map[string]string) *quictransport.Transport {
	t.Helper()
	tr := quictransport.New(quiet())
	if err := tr.Configure(context.Background(), settings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func TestConformance(t *testing.T) {
	settings, fp := quictest.Settings(t)
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			tr := quictransport.New(quiet())
			if err := tr.Configure(context.Background(), settings); err != nil {
				t.Fatal(err)
			}
			return tr
		},
		ListenAddress:  "127.0.0.1:0",
		MaxMessageSize: quictest.MaxMessageSize,
		Timeout:        30 * time.Second,
		RawDial:        quictest.RawDial(fp),
		BadInputs:      badInputs(),
	})
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pair dials ln from cli at addr and returns both ends.
func pair(t testing.TB, cli transport.Transport, ln transport.Listener, addr string) (c, s transport.Link) {
	t.Helper()
	return transporttest.Pair(ctxT(t, 20*time.Second), t, cli, ln, addr)
}

func roundTrip(t testing.TB, a, b transport.Link, msg string) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	if err := a.Send(ctx, [][]byte{[]byte(msg)}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0]) != msg {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

func TestWrongPinRefused(t *testing.T) {
	srv := newTransport(t, nil) // an ephemeral certificate
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	real := ln.(interface{ Fingerprint() string }).Fingerprint()
	_, other := quictest.Settings(t)
	cli := newTransport(t, map[string]string{quictransport.SettingPin: other})
	ctx := ctxT(t, 20*time.Second)
	_, err = cli.Dial(ctx, ln.Addr())
	if !errors.Is(err, quictransport.ErrPinMismatch) {
		t.Fatalf("dial with a wrong pin: %v, want ErrPinMismatch", err)
	}
	for _, want := range []string{real, other, ln.Addr()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	t.Logf("error: %v", err)
	if c := cli.Counters(); c["pin_mismatches"] != 1 {
		t.Errorf("dialer counters %v, want pin_mismatches 1", c)
	}
	// The same listener accepts a dial pinning it through the address,
	// which overrides the setting.
	c, s := pair(t, cli, ln, ln.Addr()+"#"+real)
	roundTrip(t, c, s, "pinned")
	// The refused handshake is counted by the listener.
	deadline := time.Now().Add(20 * time.Second)
	for ln.(transport.Counters).Counters()["handshake_failures"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("listener counters %v: the refused handshake was not counted", ln.(transport.Counters).Counters())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNoPinRefusedUnlessInsecure(t *testing.T) {
	srv := newTransport(t, nil)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := ctxT(t, 20*time.Second)
	cli := newTransport(t, nil)
	if _, err := cli.Dial(ctx, ln.Addr()); !errors.Is(err, quictransport.ErrNoPin) {
		t.Fatalf("dial without a pin: %v, want ErrNoPin", err)
	}
	var logbuf bytes.Buffer
	insecure := quictransport.New(quictransport.WithLogger(hclog.New(&hclog.LoggerOptions{Output: &logbuf})))
	t.Cleanup(func() { _ = insecure.Close() })
	if err := insecure.Configure(ctx, map[string]string{quictransport.SettingInsecureSkipVerify: "true"}); err != nil {
		t.Fatal(err)
	}
	c, s := pair(t, insecure, ln, ln.Addr())
	roundTrip(t, c, s, "unverified")
	if !strings.Contains(logbuf.String(), "INSECURE") || !strings.Contains(logbuf.String(), "[WARN]") {
		t.Errorf("an unverified dial logged no warning: %q", logbuf.String())
	}
}

func TestBadPinSyntax(t *testing.T) {
	for _, pin := range []string{"abc", "sha1:" + strings.Repeat("a", 40), "sha256:" + strings.Repeat("g", 64), "sha256:" + strings.Repeat("a", 63)} {
		if err := quictransport.New(quiet()).Configure(context.Background(), map[string]string{quictransport.SettingPin: pin}); err == nil {
			t.Errorf("pin %q accepted", pin)
		}
		if _, err := quictransport.New(quiet()).Dial(context.Background(), "127.0.0.1:1#"+pin); err == nil {
			t.Errorf("address pin %q accepted", pin)
		}
	}
	up := "SHA256:" + strings.Repeat("AB", 32)
	if _, err := quictransport.ParsePin(up); err == nil {
		t.Errorf("pin %q with an upper-case hash name accepted", up)
	}
	for _, in := range []string{
		"sha256:" + strings.Repeat("AB:", 31) + "AB",
		"sha256 Fingerprint=" + strings.Repeat("AB:", 31) + "AB", // openssl 3
		"SHA256 Fingerprint=" + strings.Repeat("AB:", 31) + "AB", // openssl 1.1
	} {
		p, err := quictransport.ParsePin(in)
		if err != nil || p != "sha256:"+strings.Repeat("ab", 32) {
			t.Errorf("ParsePin(%q) = %q, %v", in, p, err)
		}
	}
}

func TestConfigureRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []map[string]string{
		{"nope": "1"},
		{quictransport.SettingIdleTimeout: "1s", quictransport.SettingKeepAlive: "1s"},
		{quictransport.SettingCertFile: filepath.Join(dir, "c.pem")},
		{quictransport.SettingCertFile: filepath.Join(dir, "c.pem"), quictransport.SettingKeyFile: filepath.Join(dir, "k.pem")},
		{quictransport.SettingMaxConnections: "0"},
		{quictransport.SettingReceiveWindow: "1"},
		{quictransport.SettingMaxMessageSize: "999999999"},
	} {
		if err := quictransport.New(quiet()).Configure(context.Background(), s); err == nil {
			t.Errorf("settings %v accepted", s)
		} else {
			t.Logf("%v: %v", s, err)
		}
	}
}

func TestCertDirKeepsFingerprint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var fps []string
	for i := 0; i < 2; i++ {
		tr := newTransport(t, map[string]string{quictransport.SettingCertDir: dir})
		ln, err := tr.Listen(context.Background(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fps = append(fps, ln.(interface{ Fingerprint() string }).Fingerprint())
		if got := ln.(interface{ Properties() map[string]string }).Properties()["fingerprint"]; got != fps[i] {
			t.Errorf("Properties fingerprint %q, Fingerprint %q", got, fps[i])
		}
		_ = tr.Close()
	}
	if fps[0] != fps[1] {
		t.Fatalf("fingerprint changed across restarts with cert_dir: %s then %s", fps[0], fps[1])
	}
	// Without cert_dir, each listener has its own certificate.
	tr := newTransport(t, nil)
	a, _ := tr.Listen(context.Background(), "127.0.0.1:0")
	b, _ := tr.Listen(context.Background(), "127.0.0.1:0")
	if a.(interface{ Fingerprint() string }).Fingerprint() == b.(interface{ Fingerprint() string }).Fingerprint() {
		t.Error("two ephemeral listeners share a certificate")
	}
}

// TestGarbageDatagrams sends non-QUIC and QUIC-looking garbage to the
// listener's UDP port: the listener keeps serving the links it has and
// accepts new ones.
func TestGarbageDatagrams(t *testing.T) {
	settings, _ := quictest.Settings(t)
	srv, cli := newTransport(t, settings), newTransport(t, settings)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, s := pair(t, cli, ln, ln.Addr())
	raw, err := net.Dial("udp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var inputs [][]byte
	for _, n := range []int{0, 1, 20, 1200, 1500, 9000} {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		inputs = append(inputs, b)
		// The same with a long-header Initial's first byte and version 1, so
		// quic-go parses further before giving up.
		if n >= 20 {
			q := bytes.Clone(b)
			q[0], q[1], q[2], q[3], q[4] = 0xc0, 0, 0, 0, 1
			inputs = append(inputs, q)
		}
	}
	inputs = append(inputs, bytes.Repeat([]byte{0xff}, 1300), []byte("GET / HTTP/1.1\r\n\r\n"))
	for round := 0; round < 50; round++ {
		for _, b := range inputs {
			_, _ = raw.Write(b)
		}
	}
	roundTrip(t, c, s, "still here")
	roundTrip(t, s, c, "and back")
	c2, s2 := pair(t, cli, ln, ln.Addr())
	roundTrip(t, c2, s2, "new link after garbage")
}

// TestMigration moves the dialer's packets to a new source port mid-link
// (a proxy rebinding its upstream socket, as a NAT or a new local address
// would): the link carries on both ways.
func TestMigration(t *testing.T) {
	settings, _ := quictest.Settings(t)
	srv, cli := newTransport(t, settings), newTransport(t, settings)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	proxy := quictest.NewProxy(t, ln.Addr())
	c, s := pair(t, cli, ln, proxy.Addr())
	roundTrip(t, c, s, "before")
	roundTrip(t, s, c, "before, back")
	before, after, err := proxy.Rebind()
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 1 || before[0] == after[0] {
		t.Fatalf("rebinding did not change the source address: %v → %v", before, after)
	}
	// Several messages each way, some right after the change, some after
	// the listener validated the new path; a longer pause than idle
	// timeout would also show the old path is not what keeps it alive.
	for i := 0; i < 5; i++ {
		roundTrip(t, c, s, "after")
		roundTrip(t, s, c, "after, back")
	}
	time.Sleep(3 * time.Second) // longer than idle_timeout (2s): keepalives must flow on the new path
	for i := 0; i < 3; i++ {
		roundTrip(t, c, s, "later")
		roundTrip(t, s, c, "later, back")
	}
	// Twice more, to be sure a migrated path can migrate again.
	if _, _, err := proxy.Rebind(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, s, "second move")
	roundTrip(t, s, c, "second move, back")
}

// TestVanishedPeerClosedWithinIdleTimeout drops every datagram between the
// ends: both links fail with ErrIdle within the idle timeout.
func TestVanishedPeerClosedWithinIdleTimeout(t *testing.T) {
	settings, _ := quictest.Settings(t)
	settings[quictransport.SettingIdleTimeout] = "1500ms"
	srv, cli := newTransport(t, settings), newTransport(t, settings)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	proxy := quictest.NewProxy(t, ln.Addr())
	c, s := pair(t, cli, ln, proxy.Addr())
	roundTrip(t, c, s, "hello")
	proxy.Blackhole(true)
	start := time.Now()
	ctx := ctxT(t, 20*time.Second)
	for _, l := range []transport.Link{s, c} {
		_, err := l.Recv(ctx)
		if !errors.Is(err, quictransport.ErrIdle) {
			t.Fatalf("Recv after the peer vanished: %v, want ErrIdle", err)
		}
		t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	// 1.5s idle timeout; generous slack for a loaded machine (the check
	// is that the idle timeout ends the links, not the 30s default or the
	// context).
	if el := time.Since(start); el > 1500*time.Millisecond+8*time.Second {
		t.Errorf("vanished peer noticed after %s, idle timeout 1.5s", el)
	}
}

func TestMaxConnections(t *testing.T) {
	settings, _ := quictest.Settings(t)
	srvSettings := maps.Clone(settings)
	srvSettings[quictransport.SettingMaxConnections] = "2"
	srv, cli := newTransport(t, srvSettings), newTransport(t, settings)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, s1 := pair(t, cli, ln, ln.Addr())
	pair(t, cli, ln, ln.Addr())
	ctx := ctxT(t, 20*time.Second)
	if l, err := cli.Dial(ctx, ln.Addr()); err == nil {
		_ = l.Close()
		t.Fatal("a third connection was admitted with max_connections=2")
	} else {
		t.Logf("third dial: %v", err)
	}
	if n := ln.(transport.Counters).Counters()["connections_refused"]; n == 0 {
		t.Errorf("connections_refused = %d, want at least 1", n)
	}
	// A slot frees when a link ends.
	_ = c1.Close()
	if _, err := s1.Recv(ctx); err != io.EOF {
		t.Fatalf("Recv after the peer's Close: %v, want io.EOF", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := cli.Dial(ctx, ln.Addr())
		if err == nil {
			_ = l.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after a link ended: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCounters(t *testing.T) {
	settings, _ := quictest.Settings(t)
	srv, cli := newTransport(t, settings), newTransport(t, settings)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, s := pair(t, cli, ln, ln.Addr())
	roundTrip(t, c, s, "12345")
	cc := c.(transport.Counters).Counters()
	sc := s.(transport.Counters).Counters()
	if cc["messages_sent"] != 1 || cc["bytes_sent"] != 5 || sc["messages_received"] != 1 || sc["bytes_received"] != 5 {
		t.Errorf("counters: dialer %v, acceptor %v", cc, sc)
	}
	if cc["quic_packets_sent"] == 0 || sc["quic_bytes_received"] == 0 {
		t.Errorf("QUIC counters not filled: dialer %v, acceptor %v", cc, sc)
	}
	if n := ln.(transport.Counters).Counters()["connections_accepted"]; n != 1 {
		t.Errorf("connections_accepted = %d", n)
	}
}

// TestStalledDialerDropped: a QUIC connection that never opens its stream
// is dropped after handshake_timeout and frees its slot.
func TestStalledDialerDropped(t *testing.T) {
	settings, fp := quictest.Settings(t)
	settings[quictransport.SettingHandshakeTimeout] = "500ms"
	srv := newTransport(t, settings)
	ln, err := srv.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := quictest.DialNoStream(ln.Addr(), fp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	select {
	case <-conn.Context().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a connection without a stream was not dropped")
	}
	deadline := time.Now().Add(20 * time.Second)
	for ln.(transport.Counters).Counters()["stream_timeouts"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("counters %v", ln.(transport.Counters).Counters())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
