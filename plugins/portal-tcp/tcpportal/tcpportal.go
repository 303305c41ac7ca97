// Package tcpportal is the portal-tcp implementation: listeners and dialled
// streams are plain TCP connections. plugins/portal-tcp serves it as a
// plugin; embedding programs and tests use New in-process.
package tcpportal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/ferryhq/ferry/sdk/portal"
)

// Version is the plugin's release version.
const Version = "0.1.0"

// Portal carries TCP connections.
type Portal struct {
	mu        sync.Mutex
	closed    bool
	listeners map[*listener]struct{}
	streams   map[*net.TCPConn]struct{}
}

// New returns an in-process TCP portal.
func New() *Portal {
	return &Portal{listeners: map[*listener]struct{}{}, streams: map[*net.TCPConn]struct{}{}}
}

// Info describes the plugin.
func (p *Portal) Info() portal.Info {
	return portal.Info{Name: "portal-tcp", Version: Version, Protocol: "tcp"}
}

// Listen binds a TCP address.
func (p *Portal) Listen(ctx context.Context, address string) (portal.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", address)
	if err != nil {
		return nil, err // net's error already says "listen tcp ADDR: ..."

	}
	ln := &listener{p: p, l: l.(*net.TCPListener)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.Close()
		return nil, portal.ErrClosed
	}
	p.listeners[ln] = struct{}{}
	p.mu.Unlock()
	return ln, nil
}

// Dial connects to a TCP address.
func (p *Portal) Dial(ctx context.Context, address string) (portal.Stream, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err // net's error already says "dial tcp ADDR: ..."

	}
	return p.track(c.(*net.TCPConn))
}

func (p *Portal) track(c *net.TCPConn) (portal.Stream, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return nil, portal.ErrClosed
	}
	p.streams[c] = struct{}{}
	return &stream{TCPConn: c, p: p}, nil
}

// Close closes every listener and stream.
func (p *Portal) Close() error {
	p.mu.Lock()
	p.closed = true
	ls, ss := p.listeners, p.streams
	p.listeners, p.streams = map[*listener]struct{}{}, map[*net.TCPConn]struct{}{}
	p.mu.Unlock()
	for l := range ls {
		l.l.Close()
	}
	for s := range ss {
		s.Close()
	}
	return nil
}

type stream struct {
	*net.TCPConn
	p    *Portal
	once sync.Once
}

func (s *stream) Close() error {
	s.once.Do(func() {
		s.p.mu.Lock()
		delete(s.p.streams, s.TCPConn)
		s.p.mu.Unlock()
	})
	return s.TCPConn.Close()
}

type listener struct {
	p *Portal
	l *net.TCPListener
}

func (l *listener) Addr() string { return l.l.Addr().String() }

func (l *listener) Accept(ctx context.Context) (portal.Stream, error) {
	// net.Listener has no context; closing the listener is the only way to
	// unblock Accept, so a cancelled ctx closes it.
	stop := context.AfterFunc(ctx, func() { l.l.Close() })
	defer stop()
	c, err := l.l.AcceptTCP()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("accept on %s: %w", l.Addr(), ctx.Err())
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, portal.ErrClosed
		}
		return nil, fmt.Errorf("accept on %s: %w", l.Addr(), err)
	}
	return l.p.track(c)
}

func (l *listener) Close() error {
	l.p.mu.Lock()
	delete(l.p.listeners, l)
	l.p.mu.Unlock()
	err := l.l.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

var _ portal.Portal = (*Portal)(nil)
