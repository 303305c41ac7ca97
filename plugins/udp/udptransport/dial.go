package udptransport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

func errReplaced(l *link) error {
	return fmt.Errorf("udp link %s: %w: a new link from the same address replaced it", l.remote, ErrPeerVanished)
}

// Dial opens a connected socket to address (host:port) and completes the
// cookie handshake within dial_timeout or ctx.
func (t *Transport) Dial(ctx context.Context, address string) (transport.Link, error) {
	cfg, err := t.config()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", address)
	if err != nil {
		return nil, fmt.Errorf("udp transport: dial %s: %w", address, err)
	}
	conn := c.(*net.UDPConn)
	s := newSock(conn, true, cfg)
	id := randomLinkID()
	first, err := handshake(ctx, s, id, cfg)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("udp transport: dial %s: %w", address, err)
	}
	peer := unmap(conn.RemoteAddr().(*net.UDPAddr).AddrPort())
	l := newLink(t, cfg, id, s, nil, peer)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = l.Close()
		return nil, transport.ErrClosed
	}
	t.links[l] = struct{}{}
	t.mu.Unlock()
	go l.runDialed(first)
	return l, nil
}

// handshake sends hellos until the listener welcomes link id, answering its
// cookie. It returns a copy of a data datagram that arrived instead of the
// welcome (the welcome was lost, the link exists), if any.
func handshake(ctx context.Context, s *sock, id uint32, cfg config) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, cfg.datagramSize+1)
	hello := helloDatagram(id, nil)
	retry := 100 * time.Millisecond
	for {
		if _, err := s.conn.Write(hello); err != nil {
			return nil, handshakeErr(err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no answer to the handshake: %w", ctx.Err())
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(retry))
	read:
		for {
			n, err := s.conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					if ctx.Err() != nil {
						return nil, fmt.Errorf("no answer to the handshake: %w", ctx.Err())
					}
					break read
				}
				return nil, handshakeErr(err)
			}
			if n > cfg.datagramSize {
				continue
			}
			h, err := decodeHeader(buf[:n], cfg.maxMessageSize)
			if err != nil || h.LinkID != id {
				continue
			}
			switch h.Type {
			case TypeCookie:
				hello = helloDatagram(id, h.Payload)
				retry = 100 * time.Millisecond
				break read
			case TypeWelcome:
				_ = s.conn.SetReadDeadline(time.Time{})
				return nil, nil
			case TypeClose:
				reason := byte(closeNormal)
				if len(h.Payload) > 0 {
					reason = h.Payload[0]
				}
				switch reason {
				case closeNotListening:
					return nil, fmt.Errorf("%w: the listener is closed", ErrRefused)
				case closeFull:
					return nil, fmt.Errorf("%w: the listener has its maximum number of peers", ErrRefused)
				default:
					return nil, fmt.Errorf("%w: the listener closed the link during the handshake", ErrRefused)
				}
			case TypeData, TypeFragment, TypeKeepalive:
				_ = s.conn.SetReadDeadline(time.Time{})
				return append([]byte(nil), buf[:n]...), nil
			}
		}
		retry = min(2*retry, time.Second)
	}
}

func handshakeErr(err error) error {
	if isRefused(err) {
		return fmt.Errorf("%w: nothing listens there (port unreachable): %v", ErrRefused, err)
	}
	return err
}

// runDialed reads a dialled link's connected socket until it is closed.
func (l *link) runDialed(first []byte) {
	var sl slab
	now := time.Now()
	if first != nil {
		l.handleDatagram(first, now, &sl)
	}
	tick := tickFor(l.cfg)
	next := now.Add(tick)
	_ = l.s.conn.SetReadDeadline(next)
	for {
		n, err := l.s.read()
		now := time.Now()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, net.ErrClosed):
				return
			case errors.As(err, &ne) && ne.Timeout():
			case isRefused(err):
				l.fail(fmt.Errorf("udp link %s: %w: %v", l.remote, ErrPeerVanished, err))
				return
			default:
				l.fail(fmt.Errorf("udp link %s: read: %w", l.remote, err))
				return
			}
		}
		for i := 0; i < n; i++ {
			l.handleDatagram(l.s.rbufs[i][:l.s.rlen[i]], now, &sl)
		}
		if !now.Before(next) {
			if l.maintain(now) {
				return
			}
			next = now.Add(tick)
			_ = l.s.conn.SetReadDeadline(next)
		}
	}
}

func (l *link) handleDatagram(b []byte, now time.Time, sl *slab) {
	l.cnt.add(cDatagramsIn, 1)
	l.cnt.add(cBytesIn, uint64(len(b)))
	if len(b) > l.cfg.datagramSize {
		l.cnt.add(cBadDatagrams, 1)
		return
	}
	h, err := decodeHeader(b, l.cfg.maxMessageSize)
	if err != nil || h.LinkID != l.id {
		l.cnt.add(cBadDatagrams, 1)
		return
	}
	l.handle(h, now, sl)
}
