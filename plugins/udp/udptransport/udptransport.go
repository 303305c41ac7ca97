// Package udptransport is Ferry's UDP transport: links are flows of
// datagrams between two UDP sockets, and the transport is unreliable
// (Info().Unreliable): a message may be lost or arrive out of order, never
// partly, never corrupted by the transport, never twice.
//
// The same value serves in-process (an embedding program passes New() to the
// node) and as the udp plugin (plugins/udp calls transport.Serve(New())).
//
// # Links
//
// Listen binds host:port; every remote address that completes the handshake
// becomes one Link returned by Accept, so a node's replies go back to that
// peer. Dial uses a connected socket of its own. The handshake is a
// stateless cookie exchange (as DTLS HelloVerifyRequest and QUIC Retry):
// the dialer sends a padded hello; the listener answers with a cookie, an
// HMAC-SHA256 over the peer's address, the link id and a time bucket under a
// per-listener secret, and keeps nothing; only a hello that returns a valid
// cookie creates state. A forged source address never sees its cookie, so a
// flood of spoofed hellos costs the listener no memory, and the cookie reply
// is smaller than the hello, so the listener amplifies nothing.
//
// # Datagrams
//
// Each datagram starts with a version byte (WireVersion), a type (hello,
// cookie, welcome, data, fragment, close, keepalive) and the 32-bit link id
// the dialer picked. A message that fits in datagram_size bytes travels in
// one data datagram with a 32-bit message id; a larger one is cut into equal
// fragments that each carry the message id, index, count and total length.
// The total is checked against max_message_size before anything is
// allocated; memory for a message is reserved when its first fragment
// arrives, against a per-link cap (reassembly_peer_bytes) and a transport
// cap (reassembly_total_bytes); a message whose fragments do not all arrive
// within reassembly_timeout is dropped whole. Message ids also feed a
// 1024-message anti-replay window, so a datagram the network duplicates is
// not delivered twice.
//
// Bad datagrams (wrong version, unknown type, inconsistent lengths) are
// dropped and counted; they never close a link. A link sends a keepalive
// when it sent nothing for keepalive_interval and fails with
// ErrPeerVanished when nothing arrived for idle_timeout. Close sends a close
// datagram, so the peer's Recv returns io.EOF when it arrives (best effort:
// if it is lost, the idle timeout ends the peer's link).
//
// Sockets use recvmmsg and sendmmsg (golang.org/x/net) with batch_size
// datagrams per call.
package udptransport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Version is the release version this package reports in Info.
const Version = "0.1.0"

// MaxMessageSize is the largest message the transport carries (the most
// max_message_size may be set to). Larger messages belong on a reliable
// transport: a lost fragment loses the whole message.
const MaxMessageSize = 1 << 20

// ErrPeerVanished is wrapped by Recv's error when nothing arrived from the
// peer for idle_timeout, or the peer's host reported its port closed.
var ErrPeerVanished = errors.New("udp transport: peer vanished")

// ErrRefused is wrapped by Dial's error when the listener refused the link.
var ErrRefused = errors.New("udp transport: refused")

// Setting names accepted by Configure.
const (
	SettingMaxMessageSize       = "max_message_size"
	SettingDatagramSize         = "datagram_size"
	SettingKeepaliveInterval    = "keepalive_interval"
	SettingIdleTimeout          = "idle_timeout"
	SettingDialTimeout          = "dial_timeout"
	SettingReassemblyTimeout    = "reassembly_timeout"
	SettingReassemblyPeerBytes  = "reassembly_peer_bytes"
	SettingReassemblyTotalBytes = "reassembly_total_bytes"
	SettingMaxPeers             = "max_peers"
	SettingRecvQueueBytes       = "recv_queue_bytes"
	SettingSocketBuffer         = "socket_buffer"
	SettingBatchSize            = "batch_size"
)

// DefaultDatagramSize is the default datagram_size: the UDP payload that
// fits a 1500-byte Ethernet MTU under IPv4 (1500 - 20 - 8), so no IP
// fragmentation on common IPv4 paths. Use 1452 for IPv6 paths, 1200 for
// paths with tunnels of unknown overhead.
const DefaultDatagramSize = 1472

type config struct {
	maxMessageSize    int
	datagramSize      int
	keepalive         time.Duration
	idleTimeout       time.Duration
	dialTimeout       time.Duration
	reassemblyTimeout time.Duration
	reassemblyPeer    int
	reassemblyTotal   int
	maxPeers          int
	recvQueueBytes    int
	socketBuffer      int
	batchSize         int
}

func defaultConfig() config {
	return config{
		maxMessageSize:    MaxMessageSize,
		datagramSize:      DefaultDatagramSize,
		keepalive:         5 * time.Second,
		idleTimeout:       30 * time.Second,
		dialTimeout:       10 * time.Second,
		reassemblyTimeout: 5 * time.Second,
		reassemblyPeer:    4 << 20,
		reassemblyTotal:   64 << 20,
		maxPeers:          1024,
		recvQueueBytes:    4 << 20,
		socketBuffer:      4 << 20,
		batchSize:         32,
	}
}

func settingsSchema() []transport.Setting {
	d := defaultConfig()
	i := strconv.Itoa
	return []transport.Setting{
		{Name: SettingMaxMessageSize, Type: transport.Int, Default: i(d.maxMessageSize),
			Description: "largest message in bytes (at most the default); larger sends fail with ErrTooLarge, larger fragments from the network are dropped"},
		{Name: SettingDatagramSize, Type: transport.Int, Default: i(d.datagramSize),
			Description: "largest UDP payload sent and received, Ferry's header included (512 to 65507); messages above it minus the header are fragmented; both ends should agree (a larger datagram from the network is dropped)"},
		{Name: SettingKeepaliveInterval, Type: transport.Duration, Default: d.keepalive.String(),
			Description: "send a keepalive datagram when nothing was sent on a link for this long"},
		{Name: SettingIdleTimeout, Type: transport.Duration, Default: d.idleTimeout.String(),
			Description: "a link from which nothing arrived for this long fails (its peer expires); at least twice keepalive_interval"},
		{Name: SettingDialTimeout, Type: transport.Duration, Default: d.dialTimeout.String(),
			Description: "give up the handshake after this long"},
		{Name: SettingReassemblyTimeout, Type: transport.Duration, Default: d.reassemblyTimeout.String(),
			Description: "drop a fragmented message whose fragments did not all arrive within this long"},
		{Name: SettingReassemblyPeerBytes, Type: transport.Int, Default: i(d.reassemblyPeer),
			Description: "memory for partly received messages per link, in bytes (at least max_message_size); the oldest partial message is dropped to make room"},
		{Name: SettingReassemblyTotalBytes, Type: transport.Int, Default: i(d.reassemblyTotal),
			Description: "memory for partly received messages of all links together, in bytes; fragments beyond it are dropped"},
		{Name: SettingMaxPeers, Type: transport.Int, Default: i(d.maxPeers),
			Description: "most links one listener holds (accepted or waiting for Accept); further peers are refused"},
		{Name: SettingRecvQueueBytes, Type: transport.Int, Default: i(d.recvQueueBytes),
			Description: "received bytes a link holds for Recv (at least max_message_size); messages beyond it are dropped and counted"},
		{Name: SettingSocketBuffer, Type: transport.Int, Default: i(d.socketBuffer),
			Description: "SO_RCVBUF and SO_SNDBUF asked for each socket, in bytes (the kernel caps them at net.core.rmem_max / wmem_max)"},
		{Name: SettingBatchSize, Type: transport.Int, Default: i(d.batchSize),
			Description: "datagrams per recvmmsg/sendmmsg call (1 to 1024); 1 uses one read or write call per datagram"},
	}
}

// Transport is the UDP transport. Use New.
type Transport struct {
	mu        sync.Mutex
	cfg       config
	closed    bool
	listeners map[*listener]struct{}
	links     map[*link]struct{} // dialled
	budget    budget
}

// New returns a UDP transport with default settings; Configure changes them.
func New() transport.Transport { return newTransport() }

func newTransport() *Transport {
	t := &Transport{cfg: defaultConfig(), listeners: map[*listener]struct{}{}, links: map[*link]struct{}{}}
	t.budget.max = int64(t.cfg.reassemblyTotal)
	return t
}

// Info describes the transport; it does not depend on settings.
func (t *Transport) Info() transport.Info {
	return transport.Info{
		Name:           "udp",
		Version:        Version,
		AddressType:    "udp",
		MaxMessageSize: MaxMessageSize,
		Unreliable:     true,
		Settings:       settingsSchema(),
	}
}

// Configure checks settings against the schema and applies them with
// ConfigureSettings.
func (t *Transport) Configure(ctx context.Context, settings map[string]string) error {
	return transport.Apply(ctx, t, settings)
}

// ConfigureSettings applies settings parsed against the schema. Values out
// of range and bad combinations are refused with an error naming the
// setting; nothing is applied then.
func (t *Transport) ConfigureSettings(_ context.Context, s transport.Settings) error {
	c := s.Check()
	cfg := config{
		maxMessageSize:    c.Int(SettingMaxMessageSize, 1, MaxMessageSize),
		datagramSize:      c.Int(SettingDatagramSize, 512, 65507),
		keepalive:         c.PositiveDuration(SettingKeepaliveInterval),
		idleTimeout:       c.IdleTimeout(SettingIdleTimeout, SettingKeepaliveInterval),
		dialTimeout:       c.PositiveDuration(SettingDialTimeout),
		reassemblyTimeout: c.PositiveDuration(SettingReassemblyTimeout),
		reassemblyPeer:    c.Int(SettingReassemblyPeerBytes, 1, 1<<30),
		reassemblyTotal:   c.Int(SettingReassemblyTotalBytes, 1, 1<<40),
		maxPeers:          c.Int(SettingMaxPeers, 1, 1<<20),
		recvQueueBytes:    c.Int(SettingRecvQueueBytes, 1, 1<<30),
		socketBuffer:      c.Int(SettingSocketBuffer, 0, 1<<30),
		batchSize:         c.Int(SettingBatchSize, 1, 1024),
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("udp transport: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("udp transport: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	t.cfg = cfg
	t.budget.max = int64(cfg.reassemblyTotal)
	return nil
}

var _ transport.SettingsConfigurer = (*Transport)(nil)

func (c config) validate() error {
	if c.reassemblyPeer < c.maxMessageSize {
		return fmt.Errorf("%s (%d) must be at least %s (%d)", SettingReassemblyPeerBytes, c.reassemblyPeer, SettingMaxMessageSize, c.maxMessageSize)
	}
	if c.reassemblyTotal < c.reassemblyPeer {
		return fmt.Errorf("%s (%d) must be at least %s (%d)", SettingReassemblyTotalBytes, c.reassemblyTotal, SettingReassemblyPeerBytes, c.reassemblyPeer)
	}
	if c.recvQueueBytes < c.maxMessageSize {
		return fmt.Errorf("%s (%d) must be at least %s (%d)", SettingRecvQueueBytes, c.recvQueueBytes, SettingMaxMessageSize, c.maxMessageSize)
	}
	if n := fragmentCount(c.maxMessageSize, c.datagramSize-fragmentHeaderLen); n > 0xFFFF {
		return fmt.Errorf("%s %d needs %d fragments with %s %d; at most 65535", SettingMaxMessageSize, c.maxMessageSize, n, SettingDatagramSize, c.datagramSize)
	}
	return nil
}

func (t *Transport) config() (config, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return config{}, transport.ErrClosed
	}
	return t.cfg, nil
}

// Listen binds a UDP socket at address (host:port; port 0 picks one).
func (t *Transport) Listen(ctx context.Context, address string) (transport.Listener, error) {
	cfg, err := t.config()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", address)
	if err != nil {
		return nil, fmt.Errorf("udp transport: listen %s: %w", address, err)
	}
	l, err := newListener(t, pc.(*net.UDPConn), cfg)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("udp transport: listen %s: %w", address, err)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = l.Close()
		return nil, transport.ErrClosed
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	l.start()
	return l, nil
}

// Close closes every listener (with the links it accepted) and every
// dialled link, sending each peer a close datagram.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	lns := slices.Collect(maps.Keys(t.listeners))
	lks := slices.Collect(maps.Keys(t.links))
	t.mu.Unlock()
	for _, l := range lks {
		_ = l.Close()
	}
	for _, l := range lns {
		l.closeAll()
	}
	return nil
}

func (t *Transport) forgetListener(l *listener) {
	t.mu.Lock()
	delete(t.listeners, l)
	t.mu.Unlock()
}

func (t *Transport) forgetLink(l *link) {
	t.mu.Lock()
	delete(t.links, l)
	t.mu.Unlock()
}

func randomLinkID() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.BigEndian.Uint32(b[:]); id != 0 {
			return id
		}
	}
}
