package serialtransport

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/plugins/serial/nullmodem"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// testSettings keep waits short without being tight on a loaded machine.
var testSettings = map[string]string{
	SettingHeartbeatInterval: "200ms",
	SettingIdleTimeout:       "3s",
	SettingDialTimeout:       "2s",
	SettingReopenBackoffMax:  "200ms",
}

func withSettings(extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range testSettings {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// newNullModem returns two connected pty devices with link paths in a fresh
// temporary directory: side 0 (A) and side 1 (B).
func newNullModem(t testing.TB) *nullmodem.NullModem {
	t.Helper()
	nm, err := nullmodem.Open(t.TempDir(), "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nm.Close)
	return nm
}

func newConfigured(t testing.TB, settings map[string]string) *Transport {
	t.Helper()
	tr := newTransport()
	if err := tr.Configure(context.Background(), settings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// peerMap tells a dialling transport which device is the far end of the
// line a listener opened: the conformance suite dials the listener's
// address, but a null-modem line has a different path at each end.
type peerMap struct {
	mu sync.Mutex
	m  map[string]string
}

func (p *peerMap) add(a, b string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]string{}
	}
	p.m[a] = b
}

func (p *peerMap) peer(a string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.m[a]; ok {
		return b
	}
	return a
}

// listenAddressFunc makes a fresh null modem per listener: the listener gets
// side A, and dialling its address opens side B.
func (p *peerMap) listenAddressFunc(t *testing.T) string {
	nm := newNullModem(t)
	p.add(nm.Path(0), nm.Path(1))
	return nm.Path(0)
}

// crossed is a transport whose Dial opens the far end of a null modem.
type crossed struct {
	transport.Transport
	peers *peerMap
}

func (c crossed) Dial(ctx context.Context, addr string) (transport.Link, error) {
	return c.Transport.Dial(ctx, c.peers.peer(addr))
}

// pair opens a line over a fresh null modem: a listener on side A (srv) and
// a dialled link on side B (cli). It returns the dialled and accepted links.
func pair(t testing.TB, nm *nullmodem.NullModem, srv, cli transport.Transport) (transport.Listener, transport.Link, transport.Link) {
	t.Helper()
	ctx := testCtx(t)
	ln, err := srv.Listen(ctx, nm.Path(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	c, s := transporttest.Pair(ctx, t, cli, ln, nm.Path(1))
	return ln, c, s
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
