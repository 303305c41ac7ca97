package udptransport

import (
	"context"
	"net"
	"testing"

	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// testSettings make idle links fail fast enough for the suite's
// peer-death and close checks.
var testSettings = map[string]string{
	SettingKeepaliveInterval: "200ms",
	SettingIdleTimeout:       "2s",
}

func newConfigured(t testing.TB, settings map[string]string) *Transport {
	t.Helper()
	tr := newTransport()
	if err := tr.Configure(context.Background(), settings); err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Config{
		New:           func(t *testing.T) transport.Transport { return newConfigured(t, testSettings) },
		ListenAddress: "127.0.0.1:0",
		RawDial:       func(addr string) (net.Conn, error) { return net.Dial("udp", addr) },
		BadInputs:     badDatagrams(),
	})
}

// badDatagrams are datagrams a listener must drop while it keeps serving.
func badDatagrams() []transporttest.BadInput {
	frag := func(id uint32, index, count uint16, total uint32, payload int) []byte {
		b := make([]byte, fragmentHeaderLen+payload)
		putFragmentHeader(b, 7, id, index, count, total)
		return b
	}
	return []transporttest.BadInput{
		{Name: "4GiB_fragment", Bytes: frag(1, 0, 2, 0xFFFFFFFF, 100)},
		{Name: "empty", Bytes: nil},
		{Name: "wrong_version", Bytes: []byte{9, TypeData, 0, 0, 0, 7, 0, 0, 0, 1, 'x'}},
		{Name: "unknown_type", Bytes: []byte{WireVersion, 99, 0, 0, 0, 7}},
		{Name: "short_hello", Bytes: []byte{WireVersion, TypeHello, 0, 0, 0, 7}},
		{Name: "forged_cookie", Bytes: helloDatagram(7, make([]byte, cookieLen))},
		{Name: "truncated_fragment", Bytes: frag(1, 0, 2, 3000, 10)},
		{Name: "data_unknown_link", Bytes: append(control(TypeData, 7), 0, 0, 0, 1, 'h', 'i')},
	}
}

// TestConformanceKill adds the peer-death check: a transport whose sockets
// close without a close datagram, as when its process is killed.
func TestConformanceKill(t *testing.T) {
	transporttest.Run(t, transporttest.Config{
		New:           func(t *testing.T) transport.Transport { return newConfigured(t, testSettings) },
		ListenAddress: "127.0.0.1:0",
		Kill:          func(t *testing.T, tr transport.Transport) { abort(tr.(*Transport)) },
		Skip: map[string]string{
			"Delivery": "in TestConformance", "Sizes": "in TestConformance", "ConcurrentLinks": "in TestConformance",
			"BothDirections": "in TestConformance", "BadBytes": "in TestConformance",
		},
	})
}

// abort closes every socket of tr without telling any peer.
func abort(tr *Transport) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for l := range tr.listeners {
		_ = l.s.conn.Close()
	}
	for l := range tr.links {
		_ = l.s.conn.Close()
	}
}
