package udptransport

import (
	"context"
	"crypto/rand"
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ferryhq/ferry/internal/acceptq"
	"github.com/ferryhq/ferry/sdk/transport"
)

// cookieBucket is the time bucket of listener cookies: a cookie is good for
// 10 to 20 seconds, far longer than a handshake round trip.
const cookieBucket = 10 * time.Second

// listener demultiplexes one socket into links, one per peer address.
type listener struct {
	t    *Transport
	cfg  config
	s    *sock
	addr string
	jar  cookieJar
	cnt  counters

	mu       sync.Mutex
	peers    map[netip.AddrPort]*link
	pending  *acceptq.Queue[*link] // admitted, not yet returned by Accept
	closed   bool
	sockOnce sync.Once
	done     chan struct{} // the reading goroutine ended
}

var (
	_ transport.Listener = (*listener)(nil)
	_ transport.Counters = (*listener)(nil)
)

func newListener(t *Transport, conn *net.UDPConn, cfg config) (*listener, error) {
	l := &listener{t: t, cfg: cfg, s: newSock(conn, false, cfg), addr: conn.LocalAddr().String(),
		peers: map[netip.AddrPort]*link{}, done: make(chan struct{})}
	l.pending = acceptq.New[*link](&l.mu)
	l.jar.bucket = int64(cookieBucket)
	if _, err := rand.Read(l.jar.secret[:]); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *listener) start() { go l.run() }

func (l *listener) Addr() string { return l.addr }

// Counters reports everything on the listener's socket, its links' traffic
// included.
func (l *listener) Counters() map[string]uint64 {
	return l.cnt.snapshot(listenerCounters...)
}

// Accept returns the next peer that completed the handshake.
func (l *listener) Accept(ctx context.Context) (transport.Link, error) {
	lk, err := l.pending.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return lk, nil
}

// Close stops accepting. Links already accepted keep the socket open until
// the last of them ends; links not yet accepted are closed.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	pend := l.pending.Close()
	l.mu.Unlock()
	for _, lk := range pend {
		_ = lk.Close()
	}
	l.mu.Lock()
	empty := len(l.peers) == 0
	l.mu.Unlock()
	if empty {
		l.closeSock()
	}
	return nil
}

// closeAll closes the listener and every link it accepted.
func (l *listener) closeAll() {
	_ = l.Close()
	l.mu.Lock()
	links := slices.Collect(maps.Values(l.peers))
	l.mu.Unlock()
	for _, lk := range links {
		_ = lk.Close()
	}
	l.closeSock()
}

func (l *listener) closeSock() {
	l.sockOnce.Do(func() {
		_ = l.s.conn.Close()
		l.t.forgetListener(l)
	})
}

// remove forgets a link that ended.
func (l *listener) remove(lk *link) {
	l.mu.Lock()
	if l.peers[lk.peer] == lk {
		delete(l.peers, lk.peer)
	}
	l.pending.Remove(lk)
	last := l.closed && len(l.peers) == 0
	l.mu.Unlock()
	if last {
		l.closeSock()
	}
}

func (l *listener) tick() time.Duration {
	return tickFor(l.cfg)
}

func tickFor(cfg config) time.Duration {
	d := min(cfg.keepalive/2, cfg.idleTimeout/4, cfg.reassemblyTimeout/2)
	return max(5*time.Millisecond, min(d, time.Second))
}

// run reads the socket until it is closed.
func (l *listener) run() {
	defer close(l.done)
	tick := l.tick()
	next := time.Now().Add(tick)
	_ = l.s.conn.SetReadDeadline(next)
	var sl slab
	errs := 0
	for {
		n, err := l.s.read()
		now := time.Now()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, net.ErrClosed):
				return
			case errors.As(err, &ne) && ne.Timeout():
			default:
				// Transient (an ICMP error queued on the socket, a
				// signal); never spin on a persistent one.
				errs++
				if errs > 100 {
					time.Sleep(time.Millisecond)
				}
			}
		} else {
			errs = 0
		}
		for i := 0; i < n; i++ {
			l.handle(l.s.rbufs[i][:l.s.rlen[i]], l.s.raddr[i], now, &sl)
		}
		if !now.Before(next) {
			l.maintain(now)
			next = now.Add(tick)
			_ = l.s.conn.SetReadDeadline(next)
		}
	}
}

// handle processes one datagram from the socket.
func (l *listener) handle(b []byte, from netip.AddrPort, now time.Time, sl *slab) {
	l.mu.Lock()
	lk := l.peers[from]
	l.mu.Unlock()
	cnt := &l.cnt
	if lk != nil {
		cnt = &lk.cnt
	}
	cnt.add(cDatagramsIn, 1)
	cnt.add(cBytesIn, uint64(len(b)))
	if len(b) > l.cfg.datagramSize {
		cnt.add(cBadDatagrams, 1)
		return
	}
	h, err := decodeHeader(b, l.cfg.maxMessageSize)
	if err != nil {
		cnt.add(cBadDatagrams, 1)
		return
	}
	if lk != nil && lk.id == h.LinkID {
		lk.handle(h, now, sl)
		return
	}
	switch h.Type {
	case TypeHello:
		if h.Payload == nil {
			// Stateless: a cookie only the address's owner receives.
			l.cnt.add(cCookieChallenges, 1)
			l.reply(from, append(control(TypeCookie, h.LinkID), l.jar.make(now.UnixNano(), from, h.LinkID)...))
			return
		}
		if !l.jar.check(now.UnixNano(), from, h.LinkID, h.Payload) {
			l.cnt.add(cBadDatagrams, 1)
			return
		}
		l.admit(from, h.LinkID, now)
	case TypeData, TypeFragment, TypeKeepalive:
		// A link this listener does not know (it restarted, or expired
		// the peer): tell the sender, with fewer bytes than it sent.
		l.cnt.add(cUnknownPeer, 1)
		l.reply(from, control(TypeClose, h.LinkID, closeUnknown))
	default:
		l.cnt.add(cUnknownPeer, 1)
	}
}

func (l *listener) reply(to netip.AddrPort, b []byte) {
	if err := l.s.writeOne(b, to); err == nil {
		l.cnt.add(cDatagramsOut, 1)
		l.cnt.add(cBytesOut, uint64(len(b)))
	}
}

// admit creates the link for a peer that answered its cookie.
func (l *listener) admit(from netip.AddrPort, id uint32, now time.Time) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.reply(from, control(TypeClose, id, closeNotListening))
		return
	}
	old := l.peers[from]
	if old != nil {
		// The same address with a new link id: the dialer restarted
		// with the same port. The old link is gone.
		delete(l.peers, from)
	}
	if len(l.peers) >= l.cfg.maxPeers {
		l.mu.Unlock()
		if old != nil {
			old.fail(errReplaced(old))
		}
		l.cnt.add(cPeersRefused, 1)
		l.reply(from, control(TypeClose, id, closeFull))
		return
	}
	lk := newLink(l.t, l.cfg, id, l.s, l, from)
	lk.lastRecv.Store(now.UnixNano())
	l.peers[from] = lk
	l.pending.Push(lk)
	l.mu.Unlock()
	if old != nil {
		old.fail(errReplaced(old))
	}
	l.cnt.add(cPeersAccepted, 1)
	lk.sendControl(TypeWelcome)
}

// maintain expires idle peers, sends keepalives and drops stale partial
// messages.
func (l *listener) maintain(now time.Time) {
	l.mu.Lock()
	links := slices.Collect(maps.Values(l.peers))
	l.mu.Unlock()
	for _, lk := range links {
		if lk.maintain(now) {
			l.cnt.add(cPeersExpired, 1)
		}
	}
}

// peerCount is how many links the listener holds.
func (l *listener) peerCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.peers)
}
