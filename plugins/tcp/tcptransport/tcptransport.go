// Package tcptransport is Ferry's TCP transport: links are TCP connections
// carrying length-prefixed frames.
//
// The same value serves in-process (an embedding program passes New() to the
// node) and as the tcp plugin (plugins/tcp calls transport.Serve(New())).
//
// Each frame is a version byte (FrameVersion), a type byte (data, heartbeat
// or close) and a 4-byte big-endian payload length, then the payload. The
// reader checks the header against max_message_size before it reserves any
// memory for the payload. Connections use TCP_NODELAY and TCP keepalives;
// a link sends a heartbeat frame when it has written nothing for
// heartbeat_interval, and Recv fails a link from which nothing arrived for
// idle_timeout (which also closes a connection that stalls mid-frame). Idle
// detection runs inside Recv, which a node always has pending on each link.
//
// Limits against abusive peers (settings, defaults in the schema): a frame
// must arrive within frame_timeout plus its size at min_data_rate (10 s +
// 512 KiB/s), so a trickling peer is cut off; read buffers grow with the
// bytes actually received, never to the declared length up front, and their
// growth beyond buffer_size is shared by all links under max_receive_memory
// (128 MiB), a link that needs more being closed; each listener holds at
// most max_connections (512) connections and resets the rest at once. So
// the transport's memory stays under about max_receive_memory plus
// buffer_size per connection, whatever peers send.
//
// Malformed bytes (wrong version, unknown type, a length above the maximum)
// close only the link that carried them; Recv returns an error wrapping
// ErrBadFrame. A clean Close sends a close frame, so the peer's Recv returns
// io.EOF after every packet sent before it; a connection that ends without
// one makes Recv return an error wrapping ErrPeerVanished.
package tcptransport

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/internal/streamframe"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Version is the release version this package reports in Info.
const Version = "0.1.0"

// Setting names accepted by Configure.
const (
	SettingMaxMessageSize    = "max_message_size"
	SettingHeartbeatInterval = "heartbeat_interval"
	SettingIdleTimeout       = "idle_timeout"
	SettingDialTimeout       = "dial_timeout"
	SettingKeepAlive         = "keepalive_period"
	SettingBufferSize        = "buffer_size"
	SettingFrameTimeout      = "frame_timeout"
	SettingMinDataRate       = "min_data_rate"
	SettingMaxConnections    = "max_connections"
	SettingMaxReceiveMemory  = "max_receive_memory"
)

type config struct {
	maxMessageSize    int
	heartbeatInterval time.Duration
	idleTimeout       time.Duration
	dialTimeout       time.Duration
	keepAlive         time.Duration
	bufferSize        int
	frameTimeout      time.Duration
	minDataRate       int
	maxConnections    int
	maxReceiveMemory  int
}

func defaultConfig() config {
	return config{
		maxMessageSize:    routing.DefaultMaxMessageSize,
		heartbeatInterval: 5 * time.Second,
		idleTimeout:       30 * time.Second,
		dialTimeout:       10 * time.Second,
		keepAlive:         15 * time.Second,
		bufferSize:        64 << 10,
		frameTimeout:      10 * time.Second,
		minDataRate:       512 << 10,
		maxConnections:    512,
		maxReceiveMemory:  128 << 20,
	}
}

func settingsSchema() []transport.Setting {
	d := defaultConfig()
	return []transport.Setting{
		{Name: SettingMaxMessageSize, Type: transport.Int, Default: strconv.Itoa(d.maxMessageSize),
			Description: "largest packet in bytes, at most the default; larger frames from the network close the link, larger sends fail with ErrTooLarge"},
		{Name: SettingHeartbeatInterval, Type: transport.Duration, Default: d.heartbeatInterval.String(),
			Description: "send a heartbeat frame when nothing was written for this long"},
		{Name: SettingIdleTimeout, Type: transport.Duration, Default: d.idleTimeout.String(),
			Description: "close a link from which nothing (not even a heartbeat) arrived for this long; at least twice heartbeat_interval"},
		{Name: SettingDialTimeout, Type: transport.Duration, Default: d.dialTimeout.String(),
			Description: "give up connecting after this long"},
		{Name: SettingKeepAlive, Type: transport.Duration, Default: d.keepAlive.String(),
			Description: "TCP keepalive idle time and probe interval"},
		{Name: SettingBufferSize, Type: transport.Int, Default: strconv.Itoa(d.bufferSize),
			Description: "read buffer size per link in bytes (it grows towards max_message_size while large frames arrive)"},
		{Name: SettingFrameTimeout, Type: transport.Duration, Default: d.frameTimeout.String(),
			Description: "a frame must arrive within this long plus its size divided by min_data_rate, counted while the link waits for its bytes; a peer that trickles (slowloris) is cut off"},
		{Name: SettingMinDataRate, Type: transport.Int, Default: strconv.Itoa(d.minDataRate),
			Description: "bytes per second a frame must arrive at, on top of frame_timeout"},
		{Name: SettingMaxConnections, Type: transport.Int, Default: strconv.Itoa(d.maxConnections),
			Description: "open connections per listener; further connections are reset at once"},
		{Name: SettingMaxReceiveMemory, Type: transport.Int, Default: strconv.Itoa(d.maxReceiveMemory),
			Description: "bytes all links together may hold in read buffers beyond buffer_size each (large frames being received); a link that needs more is closed"},
	}
}

// Transport is the TCP transport. Use New.
type Transport struct {
	mu         sync.Mutex
	cfg        config
	configured bool
	closed     bool
	listeners  map[*listener]struct{}
	links      map[*link]struct{}
	mem        streamframe.Budget // read buffer bytes beyond buffer_size, all links
}

// New returns a TCP transport with default settings; Configure changes them.
func New() transport.Transport { return newTransport() }

func newTransport() *Transport {
	t := &Transport{
		cfg:       defaultConfig(),
		listeners: map[*listener]struct{}{},
		links:     map[*link]struct{}{},
	}
	t.mem.SetLimit(int64(t.cfg.maxReceiveMemory))
	return t
}

// Info describes the transport; it does not depend on settings.
func (t *Transport) Info() transport.Info {
	return transport.Info{
		Name:           "tcp",
		Version:        Version,
		AddressType:    "tcp",
		MaxMessageSize: defaultConfig().maxMessageSize,
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
		// Capped at the default, which Info reports before settings are
		// known: the plugin's gRPC limits are sized from it.
		maxMessageSize:    c.Int(SettingMaxMessageSize, 1, routing.DefaultMaxMessageSize),
		bufferSize:        c.Int(SettingBufferSize, 4<<10, 64<<20),
		heartbeatInterval: c.PositiveDuration(SettingHeartbeatInterval),
		idleTimeout:       c.IdleTimeout(SettingIdleTimeout, SettingHeartbeatInterval),
		dialTimeout:       c.PositiveDuration(SettingDialTimeout),
		keepAlive:         c.PositiveDuration(SettingKeepAlive),
		frameTimeout:      c.PositiveDuration(SettingFrameTimeout),
		minDataRate:       c.Int(SettingMinDataRate, 1, 1<<40),
		maxConnections:    c.Int(SettingMaxConnections, 1, 1<<20),
		maxReceiveMemory:  c.Int(SettingMaxReceiveMemory, 1<<20, 1<<40),
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("tcp transport: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	t.cfg = cfg
	t.configured = true
	t.mem.SetLimit(int64(cfg.maxReceiveMemory))
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

// Listen binds a TCP listener at address (host:port; port 0 picks one).
func (t *Transport) Listen(ctx context.Context, address string) (transport.Listener, error) {
	cfg, err := t.config()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	nl, err := lc.Listen(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("tcp transport: listen %s: %w", address, err)
	}
	l := &listener{t: t, l: nl.(*net.TCPListener), cfg: cfg, addr: nl.Addr().String(),
		conns: make(chan *net.TCPConn), done: make(chan struct{}), closing: make(chan struct{})}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = nl.Close()
		return nil, transport.ErrClosed
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	return l, nil
}

// Dial connects to address (host:port) within dial_timeout or ctx.
func (t *Transport) Dial(ctx context.Context, address string) (transport.Link, error) {
	cfg, err := t.config()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.dialTimeout, KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("tcp transport: dial %s: %w", address, err)
	}
	return t.adopt(c.(*net.TCPConn), cfg, nil)
}

func (t *Transport) adopt(c *net.TCPConn, cfg config, onEnd func()) (*link, error) {
	l := newLink(c, cfg, &t.mem, func(l *link) {
		t.forget(l)
		if onEnd != nil {
			onEnd()
		}
	})
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		l.abort(transport.ErrClosed)
		return nil, transport.ErrClosed
	}
	t.links[l] = struct{}{}
	t.mu.Unlock()
	return l, nil
}

func (t *Transport) forget(l *link) {
	t.mu.Lock()
	delete(t.links, l)
	t.mu.Unlock()
}

// Close closes every listener and link (links with a close frame).
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	ls := slices.Collect(maps.Keys(t.listeners))
	ks := slices.Collect(maps.Keys(t.links))
	t.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	var wg sync.WaitGroup
	for _, k := range ks {
		wg.Go(func() { _ = k.Close() })
	}
	wg.Wait()
	return nil
}

type listener struct {
	t       *Transport
	l       *net.TCPListener
	cfg     config
	addr    string
	start   sync.Once
	once    sync.Once
	conns   chan *net.TCPConn
	done    chan struct{}
	closing chan struct{}
	err     error // why the accept loop stopped; read after done closes
	// active counts accepted connections not yet closed, for
	// max_connections; refused counts connections reset because of it.
	active  atomic.Int64
	refused atomic.Uint64
}

func (l *listener) Addr() string { return l.addr }

// Accept waits for the next connection. Several goroutines may call it, each
// with its own context: connections are accepted by one goroutine and handed
// to whichever caller is waiting.
func (l *listener) Accept(ctx context.Context) (transport.Link, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return l.t.adopt(c, l.cfg, func() { l.active.Add(-1) })
	case <-l.done:
		return nil, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *listener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.err = transport.ErrClosed
				close(l.done)
				return
			}
			// Out of file descriptors and the like: the condition may
			// pass, so back off and retry rather than stop listening.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-l.closing:
				l.err = transport.ErrClosed
				close(l.done)
				return
			}
		}
		backoff = 0
		if l.active.Add(1) > int64(l.cfg.maxConnections) {
			// Over the cap: reset at once rather than hold the socket, so
			// a flood of connections costs no more than the cap.
			l.active.Add(-1)
			l.refused.Add(1)
			_ = c.SetLinger(0)
			_ = c.Close()
			continue
		}
		select {
		case l.conns <- c:
		case <-l.closing:
			l.active.Add(-1)
			_ = c.Close()
		}
	}
}

// Close stops accepting. Links already accepted stay open.
func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.closing)
		_ = l.l.Close()
		l.start.Do(func() { l.err = transport.ErrClosed; close(l.done) })
		l.t.mu.Lock()
		delete(l.t.listeners, l)
		l.t.mu.Unlock()
	})
	return nil
}

var (
	_ transport.Transport          = (*Transport)(nil)
	_ transport.SettingsConfigurer = (*Transport)(nil)
	_ transport.Listener           = (*listener)(nil)
)
