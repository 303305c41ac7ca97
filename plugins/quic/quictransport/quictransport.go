// Package quictransport is Ferry's QUIC transport (quic-go): one QUIC
// connection per link, carrying length-prefixed frames on one bidirectional
// stream.
//
// The same value serves in-process (an embedding program passes New() to the
// node) and as the quic plugin (plugins/quic calls transport.Serve(New())).
//
// # Security
//
// QUIC always runs TLS 1.3; the ALPN protocol is "ferry/1". A listener
// presents a certificate from cert_file/key_file, or from cert_dir (generated
// there on first use, so its fingerprint survives restarts), or otherwise an
// ephemeral self-signed ECDSA P-256 certificate generated for that listener.
// The listener logs its certificate's fingerprint ("sha256:" and 64 hex
// digits) and reports it through Fingerprint and Properties.
//
// A dialer trusts a listener only by that fingerprint: the pin comes from
// the dial address ("host:port#sha256:HEX", so each connection can pin its
// own listener) or else from the pin setting. A dial without a pin is
// refused unless insecure_skip_verify=true, which logs a warning on every
// dial. A listener presenting another certificate fails the dial with an
// error wrapping ErrPinMismatch that names both fingerprints.
//
// # Liveness and limits
//
// QUIC keepalives (keepalive_period) keep a quiet link open; a peer from
// which nothing arrived for idle_timeout is declared gone and Recv fails
// with an error wrapping ErrIdle. Connection migration is on: a dialer whose
// address changes (a NAT rebinding, a new local port) keeps its link, the
// listener validating the new path first. A listener admits at most
// max_connections connections (refusing more during the handshake), each
// with a flow-control window of receive_window bytes, and asks for QUIC
// address validation (a Retry) when many handshakes are in progress, so
// spoofed source addresses cannot make it hold state. A frame header is
// checked against max_message_size before any memory is reserved for it.
//
// A clean Close sends a close frame and finishes the stream; the peer's Recv
// returns io.EOF after every packet sent before it and then closes the
// connection. The closing side waits for that (at most idle_timeout) before
// it drops the connection, because closing a QUIC connection discards data
// the peer has not read yet.
package quictransport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/ferryhq/ferry/internal/streamframe"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Version is the release version this package reports in Info.
const Version = "0.1.0"

// ALPN is the TLS application protocol both ends require.
const ALPN = "ferry/1"

// Setting names accepted by Configure.
const (
	SettingMaxMessageSize     = "max_message_size"
	SettingKeepAlive          = "keepalive_period"
	SettingIdleTimeout        = "idle_timeout"
	SettingHandshakeTimeout   = "handshake_timeout"
	SettingCertFile           = "cert_file"
	SettingKeyFile            = "key_file"
	SettingCertDir            = "cert_dir"
	SettingPin                = "pin"
	SettingInsecureSkipVerify = "insecure_skip_verify"
	SettingMaxConnections     = "max_connections"
	SettingReceiveWindow      = "receive_window"
)

// PinSeparator separates a dial address from the pin it carries:
// "127.0.0.1:4000#sha256:HEX".
const PinSeparator = "#"

// ErrPinMismatch is wrapped by the error Dial returns when the listener's
// certificate does not have the pinned fingerprint.
var ErrPinMismatch = errors.New("quic transport: certificate does not match the pinned fingerprint")

// ErrNoPin is wrapped by the error Dial returns when neither the address nor
// the pin setting names the listener's fingerprint and insecure_skip_verify
// is off.
var ErrNoPin = errors.New("quic transport: no certificate pin for the listener")

type config struct {
	maxMessageSize   int
	keepAlive        time.Duration
	idleTimeout      time.Duration
	handshakeTimeout time.Duration
	certFile         string
	keyFile          string
	certDir          string
	pin              string
	insecure         bool
	maxConnections   int
	receiveWindow    int
}

func defaultConfig() config {
	return config{
		maxMessageSize:   routing.DefaultMaxMessageSize,
		keepAlive:        5 * time.Second,
		idleTimeout:      15 * time.Second,
		handshakeTimeout: 10 * time.Second,
		maxConnections:   256,
		receiveWindow:    8 << 20,
	}
}

func settingsSchema() []transport.Setting {
	d := defaultConfig()
	return []transport.Setting{
		{Name: SettingMaxMessageSize, Type: transport.Int, Default: strconv.Itoa(d.maxMessageSize),
			Description: "largest packet in bytes, at most the default; larger frames from the network close the link, larger sends fail with ErrTooLarge"},
		{Name: SettingKeepAlive, Type: transport.Duration, Default: d.keepAlive.String(),
			Description: "send a QUIC keepalive when nothing was sent for this long"},
		{Name: SettingIdleTimeout, Type: transport.Duration, Default: d.idleTimeout.String(),
			Description: "close a link from which nothing (not even a keepalive) arrived for this long (the smaller of both ends' values applies); at least twice keepalive_period"},
		{Name: SettingHandshakeTimeout, Type: transport.Duration, Default: d.handshakeTimeout.String(),
			Description: "give up a dial (QUIC and TLS handshake, opening the stream) after this long; a listener drops a connection that opens no stream within it"},
		{Name: SettingCertFile, Type: transport.String,
			Description: "PEM certificate listeners present (with key_file); empty: cert_dir or an ephemeral certificate per listener"},
		{Name: SettingKeyFile, Type: transport.String,
			Description: "PEM private key of cert_file"},
		{Name: SettingCertDir, Type: transport.String,
			Description: "directory holding cert.pem and key.pem, generated there on first use so the fingerprint survives restarts; empty: an ephemeral certificate per listener"},
		{Name: SettingPin, Type: transport.String,
			Description: "fingerprint (sha256:HEX) a dialled listener's certificate must have when the address carries none (an address may end in #sha256:HEX)"},
		{Name: SettingInsecureSkipVerify, Type: transport.Bool, Default: "false",
			Description: "dial listeners without checking their certificate (logs a warning on every dial); for tests only"},
		{Name: SettingMaxConnections, Type: transport.Int, Default: strconv.Itoa(d.maxConnections),
			Description: "connections one listener holds at most, handshakes included; more are refused"},
		{Name: SettingReceiveWindow, Type: transport.Int, Default: strconv.Itoa(d.receiveWindow),
			Description: "flow-control window per connection in bytes: how much a peer may send that was not read yet (memory per link is about this plus the largest frame in flight)"},
	}
}

// Option changes how New builds a Transport.
type Option func(*Transport)

// WithLogger sets where the transport logs (listener fingerprints, insecure
// dials). The default writes to stderr at info level.
func WithLogger(l hclog.Logger) Option { return func(t *Transport) { t.log = l } }

// Transport is the QUIC transport. Use New.
type Transport struct {
	log hclog.Logger

	mu        sync.Mutex
	cfg       config
	cert      *tls.Certificate // loaded from cert_file/key_file or cert_dir
	closed    bool
	listeners map[*listener]struct{}
	links     map[*link]struct{}

	dials         atomic.Uint64
	dialFailures  atomic.Uint64
	pinMismatches atomic.Uint64
	insecureDials atomic.Uint64
}

// New returns a QUIC transport with default settings; Configure changes them.
func New(opts ...Option) *Transport {
	t := &Transport{
		cfg:       defaultConfig(),
		listeners: map[*listener]struct{}{},
		links:     map[*link]struct{}{},
	}
	for _, o := range opts {
		o(t)
	}
	if t.log == nil {
		t.log = hclog.New(&hclog.LoggerOptions{Name: "quic", Level: hclog.Info, Output: os.Stderr})
	}
	return t
}

// Info describes the transport; it does not depend on settings.
func (t *Transport) Info() transport.Info {
	return transport.Info{
		Name:           "quic",
		Version:        Version,
		AddressType:    "quic",
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
		maxMessageSize:   c.Int(SettingMaxMessageSize, 1, routing.DefaultMaxMessageSize),
		keepAlive:        c.PositiveDuration(SettingKeepAlive),
		idleTimeout:      c.IdleTimeout(SettingIdleTimeout, SettingKeepAlive),
		handshakeTimeout: c.PositiveDuration(SettingHandshakeTimeout),
		certFile:         c.String(SettingCertFile),
		keyFile:          c.String(SettingKeyFile),
		certDir:          c.String(SettingCertDir),
		insecure:         c.Bool(SettingInsecureSkipVerify),
		maxConnections:   c.Int(SettingMaxConnections, 1, 1<<20),
		receiveWindow:    c.Int(SettingReceiveWindow, 64<<10, 1<<30),
	}
	if v := c.String(SettingPin); v != "" {
		var err error
		cfg.pin, err = ParsePin(v)
		c.Invalid(SettingPin, err)
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("quic transport: %w", err)
	}
	if (cfg.certFile == "") != (cfg.keyFile == "") {
		return fmt.Errorf("quic transport: set both %s and %s, or neither", SettingCertFile, SettingKeyFile)
	}
	if cfg.certFile != "" && cfg.certDir != "" {
		return fmt.Errorf("quic transport: set %s/%s or %s, not both", SettingCertFile, SettingKeyFile, SettingCertDir)
	}
	// Load (or create) the certificate now, so a bad file fails the
	// configuration rather than the first Listen.
	var cert *tls.Certificate
	switch {
	case cfg.certFile != "":
		c, err := loadCertificate(cfg.certFile, cfg.keyFile)
		if err != nil {
			return fmt.Errorf("quic transport: %w", err)
		}
		cert = &c
	case cfg.certDir != "":
		c, generated, err := certFromDir(cfg.certDir)
		if err != nil {
			return fmt.Errorf("quic transport: %w", err)
		}
		if generated {
			t.log.Info("generated a listener certificate", "dir", cfg.certDir, "fingerprint", Fingerprint(c.Certificate[0]))
		}
		cert = &c
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	t.cfg = cfg
	t.cert = cert
	return nil
}

func (t *Transport) config() (config, *tls.Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return config{}, nil, transport.ErrClosed
	}
	return t.cfg, t.cert, nil
}

// quicConfig is the quic-go configuration of one side. Both sides bound
// their receive windows; only the dialer opens a stream, and only one.
func quicConfig(cfg config, listening bool) *quic.Config {
	initial := uint64(min(cfg.receiveWindow, 512<<10))
	qc := &quic.Config{
		HandshakeIdleTimeout:           cfg.handshakeTimeout,
		MaxIdleTimeout:                 cfg.idleTimeout,
		KeepAlivePeriod:                cfg.keepAlive,
		InitialStreamReceiveWindow:     initial,
		MaxStreamReceiveWindow:         uint64(cfg.receiveWindow),
		InitialConnectionReceiveWindow: initial,
		MaxConnectionReceiveWindow:     uint64(cfg.receiveWindow),
		MaxIncomingStreams:             -1,
		MaxIncomingUniStreams:          -1,
	}
	if listening {
		qc.MaxIncomingStreams = 1
	}
	return qc
}

// SplitPin splits a dial address "host:port#sha256:HEX" into the address
// and the pin; an address without a pin returns an empty pin.
func SplitPin(address string) (hostport, pin string, err error) {
	hostport, rawPin, hasPin := strings.Cut(address, PinSeparator)
	if hasPin {
		if pin, err = ParsePin(rawPin); err != nil {
			return "", "", err
		}
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return "", "", fmt.Errorf("address %q: want host:port, optionally followed by %ssha256:HEX", address, PinSeparator)
	}
	return hostport, pin, nil
}

func resolveUDP(ctx context.Context, hostport string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no address for %s", host)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), nil
}

// Dial opens a QUIC connection to address ("host:port", optionally with
// "#sha256:HEX", the listener's certificate fingerprint) and its stream,
// within handshake_timeout or ctx.
func (t *Transport) Dial(ctx context.Context, address string) (transport.Link, error) {
	cfg, _, err := t.config()
	if err != nil {
		return nil, err
	}
	hostport, pin, err := SplitPin(address)
	if err != nil {
		return nil, fmt.Errorf("quic transport: dial: %w", err)
	}
	if pin == "" {
		pin = cfg.pin
	}
	t.dials.Add(1)
	if pin == "" && !cfg.insecure {
		t.dialFailures.Add(1)
		return nil, fmt.Errorf("quic transport: dial %s: %w: append %ssha256:HEX to the address or set the %s setting to the listener's fingerprint (the listener logs it and `ferry listener show` prints it), or set %s=true to connect unverified",
			hostport, ErrNoPin, PinSeparator, SettingPin, SettingInsecureSkipVerify)
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.handshakeTimeout)
	defer cancel()
	raddr, err := resolveUDP(dctx, hostport)
	if err != nil {
		t.dialFailures.Add(1)
		return nil, fmt.Errorf("quic transport: dial %s: %w", hostport, err)
	}
	// Written by the TLS handshake's goroutine, read after Dial returned.
	var mm struct {
		sync.Mutex
		err error
	}
	fail := func(err error) error {
		mm.Lock()
		mm.err = err
		mm.Unlock()
		return err
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		ServerName: "ferry",
		// The certificate is checked against the pin below, not against a
		// chain of authorities or a host name.
		InsecureSkipVerify: true,
	}
	if pin != "" {
		tlsConf.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fail(fmt.Errorf("%w: the listener at %s presented no certificate, the pin is %s", ErrPinMismatch, hostport, pin))
			}
			if got := Fingerprint(raw[0]); got != pin {
				return fail(fmt.Errorf("%w: the listener at %s presented %s, the pin is %s", ErrPinMismatch, hostport, got, pin))
			}
			return nil
		}
	} else {
		t.insecureDials.Add(1)
		t.log.Warn("INSECURE: dialling a QUIC listener WITHOUT verifying its certificate (insecure_skip_verify=true); anyone on the path can impersonate it or read the traffic. Pin its fingerprint instead.",
			"address", hostport)
	}
	network := "udp6"
	if raddr.IP.To4() != nil {
		network = "udp4"
	}
	pc, err := net.ListenUDP(network, nil)
	if err != nil {
		t.dialFailures.Add(1)
		return nil, fmt.Errorf("quic transport: dial %s: open a UDP socket: %w", hostport, err)
	}
	qt := &quic.Transport{Conn: pc}
	closeSocket := func() { _ = qt.Close(); _ = pc.Close() }
	conn, err := qt.Dial(dctx, raddr, tlsConf, quicConfig(cfg, false))
	if err != nil {
		closeSocket()
		t.dialFailures.Add(1)
		mm.Lock()
		mismatch := mm.err
		mm.Unlock()
		if mismatch != nil {
			t.pinMismatches.Add(1)
			return nil, fmt.Errorf("quic transport: dial %s: %w", hostport, mismatch)
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s (%s): is a ferry quic listener there? %w", cfg.handshakeTimeout, SettingHandshakeTimeout, err)
		}
		return nil, fmt.Errorf("quic transport: dial %s: %w", hostport, err)
	}
	if p := conn.ConnectionState().TLS.NegotiatedProtocol; p != ALPN {
		_ = conn.CloseWithError(codeProtocol, "wrong application protocol")
		closeSocket()
		t.dialFailures.Add(1)
		return nil, fmt.Errorf("quic transport: dial %s: the listener speaks %q, not %q", hostport, p, ALPN)
	}
	str, err := conn.OpenStreamSync(dctx)
	if err == nil {
		// The stream exists for the listener only once data is sent on it.
		_ = str.SetWriteDeadline(time.Now().Add(cfg.handshakeTimeout))
		_, err = str.Write(streamframe.AppendHeader(nil, frameOpen, 0))
		_ = str.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		_ = conn.CloseWithError(codeInternal, "opening the stream failed")
		closeSocket()
		t.dialFailures.Add(1)
		return nil, fmt.Errorf("quic transport: dial %s: open the stream: %w", hostport, err)
	}
	l := newLink(conn, str, cfg, conn.LocalAddr().String(), hostport, func(l *link) {
		closeSocket()
		t.forget(l)
	})
	if err := t.adopt(l); err != nil {
		return nil, err
	}
	return l, nil
}

func (t *Transport) adopt(l *link) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		l.end(transport.ErrClosed, codeGoingAway, "transport closed")
		return transport.ErrClosed
	}
	t.links[l] = struct{}{}
	t.mu.Unlock()
	select {
	case <-l.ended.Done():
		// It ended before it was tracked: end's forget may have run first.
		t.forget(l)
	default:
	}
	return nil
}

func (t *Transport) forget(l *link) {
	t.mu.Lock()
	delete(t.links, l)
	t.mu.Unlock()
}

// Counters counts dials: dials, dial_failures (pin mismatches included),
// pin_mismatches and insecure_dials.
func (t *Transport) Counters() map[string]uint64 {
	return map[string]uint64{
		"dials":          t.dials.Load(),
		"dial_failures":  t.dialFailures.Load(),
		"pin_mismatches": t.pinMismatches.Load(),
		"insecure_dials": t.insecureDials.Load(),
	}
}

// transportCloseGrace bounds how long Close waits for peers to confirm that
// they read everything before it drops the connections.
const transportCloseGrace = 2 * time.Second

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
	deadline := time.Now().Add(transportCloseGrace)
	for _, k := range ks {
		wg.Go(func() {
			_ = k.Close()
			select {
			case <-k.ended.Done():
			case <-time.After(time.Until(deadline)):
				k.end(transport.ErrClosed, codeGoingAway, "transport closed")
			}
		})
	}
	wg.Wait()
	for _, l := range ls {
		l.shutdown()
	}
	return nil
}

func randomKey() *quic.StatelessResetKey {
	var k quic.StatelessResetKey
	_, _ = rand.Read(k[:])
	return &k
}

var (
	_ transport.Transport          = (*Transport)(nil)
	_ transport.SettingsConfigurer = (*Transport)(nil)
)
