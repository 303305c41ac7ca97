package quictransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/ferryhq/ferry/sdk/transport"
)

// retryAbove is how many handshakes may be in progress on one listener
// before new ones must first prove their source address (a QUIC Retry, one
// more round trip), so a flood of spoofed Initial packets cannot make the
// listener hold state for addresses that never answer.
const retryAbove = 16

// errRefused is what a connection over max_connections is told.
var errRefused = errors.New("too many connections")

type connStateKey struct{}

// connState follows one incoming connection from its first packet.
type connState struct{ accepted atomic.Bool }

type listener struct {
	t           *Transport
	cfg         config
	log         hclog.Logger
	pc          *net.UDPConn
	qt          *quic.Transport
	ql          *quic.Listener
	addr        string
	fingerprint string

	ready     chan *link
	closing   chan struct{}
	closeOnce sync.Once
	shutOnce  sync.Once

	mu     sync.Mutex
	conns  int // connections holding a slot, from their first packet to their end
	closed bool

	handshaking       atomic.Int64
	accepted          atomic.Uint64
	refused           atomic.Uint64
	handshakeFailures atomic.Uint64
	streamTimeouts    atomic.Uint64
}

// Listen binds a UDP socket at address (host:port; port 0 picks one) and
// accepts QUIC connections on it.
func (t *Transport) Listen(ctx context.Context, address string) (transport.Listener, error) {
	cfg, cert, err := t.config()
	if err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(address); err != nil {
		return nil, fmt.Errorf("quic transport: listen %q: want host:port", address)
	}
	source := "ephemeral (pass cert_dir to keep the fingerprint across restarts)"
	switch {
	case cfg.certFile != "":
		source = cfg.certFile
	case cfg.certDir != "":
		source = cfg.certDir
	}
	if cert == nil {
		c, err := newCertificate(365 * 24 * time.Hour)
		if err != nil {
			return nil, fmt.Errorf("quic transport: listen %s: %w", address, err)
		}
		cert = &c
	}
	var lc net.ListenConfig
	npc, err := lc.ListenPacket(ctx, "udp", address)
	if err != nil {
		return nil, fmt.Errorf("quic transport: listen %s: %w", address, err)
	}
	l := &listener{
		t:           t,
		cfg:         cfg,
		log:         t.log,
		pc:          npc.(*net.UDPConn),
		addr:        npc.LocalAddr().String(),
		fingerprint: Fingerprint(cert.Certificate[0]),
		ready:       make(chan *link),
		closing:     make(chan struct{}),
	}
	l.qt = &quic.Transport{
		Conn:                l.pc,
		StatelessResetKey:   randomKey(),
		ConnContext:         l.connContext,
		VerifySourceAddress: func(net.Addr) bool { return l.handshaking.Load() >= retryAbove },
	}
	tlsConf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		Certificates: []tls.Certificate{*cert},
	}
	ql, err := l.qt.Listen(tlsConf, quicConfig(cfg, true))
	if err != nil {
		_ = l.qt.Close()
		_ = l.pc.Close()
		return nil, fmt.Errorf("quic transport: listen %s: %w", address, err)
	}
	l.ql = ql
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = ql.Close()
		l.shutdown()
		return nil, transport.ErrClosed
	}
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	go l.acceptLoop()
	l.log.Info("quic listener", "address", l.addr, "fingerprint", l.fingerprint, "certificate", source,
		"dial", l.addr+PinSeparator+l.fingerprint)
	return l, nil
}

// connContext runs on a connection's first packet: it takes a slot or
// refuses the connection, and returns the slot when the connection ends.
func (l *listener) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	l.mu.Lock()
	if l.closed || l.conns >= l.cfg.maxConnections {
		l.mu.Unlock()
		l.refused.Add(1)
		return nil, errRefused
	}
	l.conns++
	l.mu.Unlock()
	st := &connState{}
	l.handshaking.Add(1)
	ctx = context.WithValue(ctx, connStateKey{}, st)
	context.AfterFunc(ctx, func() {
		if !st.accepted.Load() {
			l.handshaking.Add(-1)
			select {
			case <-l.closing:
			default:
				l.handshakeFailures.Add(1)
			}
		}
		l.release()
	})
	return ctx, nil
}

func (l *listener) release() {
	l.mu.Lock()
	l.conns--
	last := l.closed && l.conns == 0
	l.mu.Unlock()
	if last {
		l.shutdown()
	}
}

func (l *listener) acceptLoop() {
	for {
		conn, err := l.ql.Accept(context.Background())
		if err != nil {
			return
		}
		if st, ok := conn.Context().Value(connStateKey{}).(*connState); ok && st.accepted.CompareAndSwap(false, true) {
			l.handshaking.Add(-1)
		}
		l.accepted.Add(1)
		go l.setup(conn)
	}
}

// setup waits for the dialer's stream and hands the link to Accept.
func (l *listener) setup(conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(conn.Context(), l.cfg.handshakeTimeout)
	str, err := conn.AcceptStream(ctx)
	cancel()
	if err != nil {
		l.streamTimeouts.Add(1)
		_ = conn.CloseWithError(codeNoStream, "no stream opened within the handshake timeout")
		return
	}
	lk := newLink(conn, str, l.cfg, l.addr, conn.RemoteAddr().String(), l.t.forget)
	select {
	case l.ready <- lk:
	case <-l.closing:
		lk.end(transport.ErrClosed, codeGoingAway, "listener closed")
	case <-lk.ended.Done():
	}
}

func (l *listener) Addr() string { return l.addr }

// Fingerprint is the pin of the listener's certificate, "sha256:HEX".
func (l *listener) Fingerprint() string { return l.fingerprint }

// Properties describes the listener for `ferry listener show`.
func (l *listener) Properties() map[string]string {
	return map[string]string{"fingerprint": l.fingerprint}
}

// Counters counts connections: accepted (handshake done), refused (over
// max_connections or after Close), handshake_failures (ended before their
// handshake completed) and stream_timeouts (no stream within
// handshake_timeout).
func (l *listener) Counters() map[string]uint64 {
	return map[string]uint64{
		"connections_accepted": l.accepted.Load(),
		"connections_refused":  l.refused.Load(),
		"handshake_failures":   l.handshakeFailures.Load(),
		"stream_timeouts":      l.streamTimeouts.Load(),
	}
}

// Accept waits for the next link. Several goroutines may call it.
func (l *listener) Accept(ctx context.Context) (transport.Link, error) {
	select {
	case <-l.closing:
		return nil, transport.ErrClosed
	default:
	}
	select {
	case lk := <-l.ready:
		if err := l.t.adopt(lk); err != nil {
			return nil, err
		}
		return lk, nil
	case <-l.closing:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting. Links already accepted stay open; the socket is
// closed when the last of them ends.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		_ = l.ql.Close()
		l.mu.Lock()
		l.closed = true
		last := l.conns == 0
		l.mu.Unlock()
		if last {
			l.shutdown()
		}
		l.t.mu.Lock()
		delete(l.t.listeners, l)
		l.t.mu.Unlock()
	})
	return nil
}

// shutdown closes the socket, ending every connection still on it.
func (l *listener) shutdown() {
	l.shutOnce.Do(func() {
		_ = l.qt.Close()
		_ = l.pc.Close()
	})
}

var _ transport.Listener = (*listener)(nil)
