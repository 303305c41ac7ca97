// Package serialtransport is Ferry's serial-line transport: a link is one
// point-to-point serial line (a tty such as /dev/ttyUSB0), opened with
// go.bug.st/serial.
//
// The same value serves in-process (an embedding program passes New() to the
// node) and as the serial plugin (plugins/serial calls transport.Serve(New())).
//
// # Addresses
//
// The address is the device path; in a route it is percent-encoded:
// /serial/%2Fdev%2FttyUSB0. A line has no listener/dialer distinction, so
// Listen(path) and Dial(path) both open the line. A listener's Accept returns
// the line's one link once a peer has said hello, and again after that link
// ended and a new peer session began (the far end restarted, or the device
// was unplugged and plugged back in: the listener re-opens it with backoff).
// Dial opens the line, says hello and returns the link once the far end
// answered, or fails after dial_timeout.
//
// # Frames
//
// Every frame is COBS-encoded and ends with a zero byte, so a receiver that
// lost its place starts again at the next zero. Inside is a 20-byte header
// (version, type, both session ids, message id, fragment index and count,
// payload length, all big-endian), the payload and a CRC-32C over header and
// payload. A frame with a bad checksum, a bad header, or more than
// max_frame_size bytes before its delimiter is dropped and counted, never
// delivered; the decoder never holds more than one maximum frame. Packets
// larger than one frame are split into fragments and reassembled; a packet
// with a missing fragment, or whose next fragment does not arrive within
// reassembly_timeout, is dropped whole.
//
// # Sessions
//
// Each side picks a random 32-bit session id whenever a link starts and
// sends HELLO frames carrying its own id and the peer's id as far as it knows
// it; a side that sees its own id echoed knows the peer saw it. Every later
// frame carries both ids, and frames for another session are dropped. A
// HELLO with a new sender id means the far end restarted: the current link
// ends (ErrPeerRestarted) and, on a listener, a new one is handed to Accept.
// Heartbeats keep a quiet link alive; a link that heard nothing for
// idle_timeout ends with ErrIdle.
//
// # Reliability
//
// The transport is unreliable (Info.Unreliable): a frame damaged on the line
// is dropped, not retransmitted, and the packet it belonged to is lost.
// Packets are never duplicated or reordered. Protocols above routing (portal
// sessions, secure channels) recover losses end to end, so the line spends
// its (small) bandwidth on payload, not on acknowledgements. On a clean line
// (and on pseudo-terminals) nothing is lost: a reader that does not keep up
// slows the writer down through the tty's own buffers.
package serialtransport

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.bug.st/serial"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Version is the release version this package reports in Info.
const Version = "0.1.0"

// MaxMessageSize is the largest packet the transport carries (and the upper
// bound of the max_message_size setting). A serial line is slow: at 115200
// baud a packet of this size takes about 90 seconds.
const MaxMessageSize = 1 << 20

// Setting names accepted by Configure.
const (
	SettingBaudRate          = "baud_rate"
	SettingDataBits          = "data_bits"
	SettingParity            = "parity"
	SettingStopBits          = "stop_bits"
	SettingMaxFrameSize      = "max_frame_size"
	SettingMaxMessageSize    = "max_message_size"
	SettingHeartbeatInterval = "heartbeat_interval"
	SettingIdleTimeout       = "idle_timeout"
	SettingDialTimeout       = "dial_timeout"
	SettingReassemblyTimeout = "reassembly_timeout"
	SettingReopenBackoffMax  = "reopen_backoff_max"
)

// ErrIdle is wrapped by the error Recv returns when nothing (not even a
// heartbeat) arrived within idle_timeout.
var ErrIdle = errors.New("serial transport: link idle")

// ErrPeerRestarted is wrapped by the error Recv returns when the far end
// started a new session (it restarted or re-opened the line).
var ErrPeerRestarted = errors.New("serial transport: the far end started a new session")

// ErrDeviceGone is wrapped by the error Recv returns when the device failed
// (unplugged, or a pty whose other side closed).
var ErrDeviceGone = errors.New("serial transport: device failed")

type config struct {
	baudRate          int
	dataBits          int
	parity            serial.Parity
	stopBits          serial.StopBits
	maxFrameSize      int
	maxMessageSize    int
	heartbeatInterval time.Duration
	idleTimeout       time.Duration
	dialTimeout       time.Duration
	reassemblyTimeout time.Duration
	reopenBackoffMax  time.Duration
}

func defaultConfig() config {
	return config{
		baudRate:          115200,
		dataBits:          8,
		parity:            serial.NoParity,
		stopBits:          serial.OneStopBit,
		maxFrameSize:      1024,
		maxMessageSize:    MaxMessageSize,
		heartbeatInterval: 2 * time.Second,
		idleTimeout:       10 * time.Second,
		dialTimeout:       5 * time.Second,
		reassemblyTimeout: 5 * time.Second,
		reopenBackoffMax:  5 * time.Second,
	}
}

var parities = map[string]serial.Parity{
	"none": serial.NoParity, "odd": serial.OddParity, "even": serial.EvenParity,
	"mark": serial.MarkParity, "space": serial.SpaceParity,
}

var stopBits = map[string]serial.StopBits{
	"1": serial.OneStopBit, "1.5": serial.OnePointFiveStopBits, "2": serial.TwoStopBits,
}

func settingsSchema() []transport.Setting {
	d := defaultConfig()
	return []transport.Setting{
		{Name: SettingBaudRate, Type: transport.Int, Default: strconv.Itoa(d.baudRate),
			Description: "line speed in bits per second (ignored by pseudo-terminals)"},
		{Name: SettingDataBits, Type: transport.Int, Default: strconv.Itoa(d.dataBits),
			Description: "data bits per character: 5, 6, 7 or 8 (frames need 8)"},
		{Name: SettingParity, Type: transport.String, Default: "none",
			Description: "parity: none, odd, even, mark or space"},
		{Name: SettingStopBits, Type: transport.String, Default: "1",
			Description: "stop bits: 1, 1.5 or 2"},
		{Name: SettingMaxFrameSize, Type: transport.Int, Default: strconv.Itoa(d.maxFrameSize),
			Description: fmt.Sprintf("largest frame on the line in bytes, header and checksum included (%d to %d); larger packets are split into fragments, and longer runs of bytes from the line are dropped as oversized", MinFrameSize, MaxFrameSize)},
		{Name: SettingMaxMessageSize, Type: transport.Int, Default: strconv.Itoa(d.maxMessageSize),
			Description: "largest packet in bytes, at most the default; larger sends fail with ErrTooLarge and larger incoming packets are dropped"},
		{Name: SettingHeartbeatInterval, Type: transport.Duration, Default: d.heartbeatInterval.String(),
			Description: "send a heartbeat frame when nothing was written for this long"},
		{Name: SettingIdleTimeout, Type: transport.Duration, Default: d.idleTimeout.String(),
			Description: "end a link from which nothing (not even a heartbeat) arrived for this long; at least twice heartbeat_interval"},
		{Name: SettingDialTimeout, Type: transport.Duration, Default: d.dialTimeout.String(),
			Description: "Dial fails when the far end did not answer the hello within this long"},
		{Name: SettingReassemblyTimeout, Type: transport.Duration, Default: d.reassemblyTimeout.String(),
			Description: "drop a fragmented packet whose next fragment did not arrive within this long"},
		{Name: SettingReopenBackoffMax, Type: transport.Duration, Default: d.reopenBackoffMax.String(),
			Description: "a listener whose device failed re-opens it with exponential backoff up to this interval"},
	}
}

// parseConfig turns settings parsed against the schema into a config,
// checking what the schema's types cannot.
func parseConfig(s transport.Settings) (config, error) {
	c := s.Check()
	cfg := config{
		baudRate:          c.Int(SettingBaudRate, 50, 20_000_000),
		dataBits:          c.Int(SettingDataBits, 5, 8),
		maxFrameSize:      c.Int(SettingMaxFrameSize, MinFrameSize, MaxFrameSize),
		maxMessageSize:    c.Int(SettingMaxMessageSize, 1, MaxMessageSize),
		heartbeatInterval: c.PositiveDuration(SettingHeartbeatInterval),
		idleTimeout:       c.IdleTimeout(SettingIdleTimeout, SettingHeartbeatInterval),
		dialTimeout:       c.PositiveDuration(SettingDialTimeout),
		reassemblyTimeout: c.PositiveDuration(SettingReassemblyTimeout),
		reopenBackoffMax:  c.PositiveDuration(SettingReopenBackoffMax),
	}
	var ok bool
	if cfg.parity, ok = parities[strings.ToLower(c.String(SettingParity))]; !ok {
		c.Invalid(SettingParity, errors.New("want none, odd, even, mark or space"))
	}
	if cfg.stopBits, ok = stopBits[c.String(SettingStopBits)]; !ok {
		c.Invalid(SettingStopBits, errors.New("want 1, 1.5 or 2"))
	}
	if err := c.Err(); err != nil {
		return config{}, fmt.Errorf("serial transport: %w", err)
	}
	if cfg.dataBits != 8 {
		// COBS frames are made of 8-bit bytes: fewer data bits would cut
		// every byte, and every frame would fail its checksum.
		return cfg, fmt.Errorf("serial transport: %s=%d: frames need 8 data bits", SettingDataBits, cfg.dataBits)
	}
	return cfg, nil
}

// Transport is the serial transport. Use New.
type Transport struct {
	mu        sync.Mutex
	cfg       config
	closed    bool
	open      map[string]bool // device paths with a listener or dialled line
	listeners map[*listener]struct{}
	lines     map[*line]struct{} // dialled lines
}

// New returns a serial transport with default settings; Configure changes them.
func New() transport.Transport { return newTransport() }

func newTransport() *Transport {
	return &Transport{
		cfg:       defaultConfig(),
		open:      map[string]bool{},
		listeners: map[*listener]struct{}{},
		lines:     map[*line]struct{}{},
	}
}

// Info describes the transport; it does not depend on settings.
func (t *Transport) Info() transport.Info {
	return transport.Info{
		Name:           "serial",
		Version:        Version,
		AddressType:    "serial",
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
	cfg, err := parseConfig(s)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	t.cfg = cfg
	return nil
}

var _ transport.SettingsConfigurer = (*Transport)(nil)

// claim reserves path for one listener or dialled line of this transport.
func (t *Transport) claim(path string) (config, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return config{}, transport.ErrClosed
	}
	if t.open[path] {
		return config{}, fmt.Errorf("serial transport: %s is already open in this transport (a line carries one link)", path)
	}
	t.open[path] = true
	return t.cfg, nil
}

func (t *Transport) release(path string) {
	t.mu.Lock()
	delete(t.open, path)
	t.mu.Unlock()
}

// Listen opens the line at address (a device path) and waits for a peer's
// hello; Accept returns the link. The device must exist now; if it fails
// later, the listener re-opens it with backoff.
func (t *Transport) Listen(ctx context.Context, address string) (transport.Listener, error) {
	cfg, err := t.claim(address)
	if err != nil {
		return nil, err
	}
	port, err := openDevice(address, cfg)
	if err != nil {
		t.release(address)
		return nil, fmt.Errorf("serial transport: listen: %w", err)
	}
	l := newListener(t, address, cfg, port)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = l.Close()
		return nil, transport.ErrClosed
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	return l, nil
}

// Dial opens the line at address and returns its link once the far end
// answered the hello, within dial_timeout or ctx.
func (t *Transport) Dial(ctx context.Context, address string) (transport.Link, error) {
	cfg, err := t.claim(address)
	if err != nil {
		return nil, err
	}
	port, err := openDevice(address, cfg)
	if err != nil {
		t.release(address)
		return nil, fmt.Errorf("serial transport: dial: %w", err)
	}
	ln := newLine(port, address, cfg, &counters{}, nil)
	ln.onEnd = func(*line) {
		t.mu.Lock()
		delete(t.lines, ln)
		t.mu.Unlock()
		t.release(address)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.shutdown(transport.ErrClosed)
		return nil, transport.ErrClosed
	}
	t.lines[ln] = struct{}{}
	t.mu.Unlock()
	ln.start(true)
	dctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	select {
	case lk := <-ln.established:
		return lk, nil
	case <-ln.done:
		return nil, fmt.Errorf("serial transport: dial %s: %w", address, ln.cause())
	case <-dctx.Done():
		ln.shutdown(transport.ErrClosed)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("serial transport: dial %s: %w", address, ctx.Err())
		}
		return nil, fmt.Errorf("serial transport: dial %s: no answer from the far end within %s", address, cfg.dialTimeout)
	}
}

// Close closes every listener and line (links with a close frame).
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	ls := slices.Collect(maps.Keys(t.listeners))
	lines := slices.Collect(maps.Keys(t.lines))
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(l.closeAll)
	}
	for _, l := range lines {
		wg.Go(l.closeLink)
	}
	wg.Wait()
	return nil
}

var _ transport.Transport = (*Transport)(nil)
