package udptransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// link is one flow between two sockets: an accepted peer of a listener
// (sharing its socket) or a dialled connected socket.
type link struct {
	t      *Transport
	cfg    config
	id     uint32
	peer   netip.AddrPort
	local  string
	remote string
	s      *sock
	ln     *listener // nil when dialled
	cnt    counters

	// Used by the socket's reading goroutine only.
	replay replayWindow
	reasm  *reassembler

	lastRecv atomic.Int64 // unix nanoseconds
	lastSend atomic.Int64

	mu     sync.Mutex
	q      [][]byte
	spare  [][]byte
	qBytes int
	err    error // why the link ended: io.EOF, ErrPeerVanished, ...
	closed bool  // Close was called
	wake   chan struct{}
	done   chan struct{} // closed when the link ends (closed or failed)
	ended  sync.Once

	sendMu  sync.Mutex
	w       *writer
	nextMsg uint32
}

var (
	_ transport.Link     = (*link)(nil)
	_ transport.Counters = (*link)(nil)
)

func newLink(t *Transport, cfg config, id uint32, s *sock, ln *listener, peer netip.AddrPort) *link {
	l := &link{t: t, cfg: cfg, id: id, peer: peer, s: s, ln: ln,
		local: s.conn.LocalAddr().String(), remote: peer.String(),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if ln != nil {
		l.cnt.parent = &ln.cnt
	}
	l.reasm = newReassembler(cfg.reassemblyPeer, &t.budget, cfg.reassemblyTimeout, &l.cnt)
	l.w = newWriter(s, peer)
	now := time.Now().UnixNano()
	l.lastRecv.Store(now)
	l.lastSend.Store(now)
	return l
}

func (l *link) LocalAddr() string  { return l.local }
func (l *link) RemoteAddr() string { return l.remote }

// Counters reports what this link sent and received.
func (l *link) Counters() map[string]uint64 { return l.cnt.snapshot(linkCounters...) }

func (l *link) state() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return transport.ErrClosed
	}
	if l.err != nil {
		if l.err == io.EOF {
			return fmt.Errorf("udp link %s: the peer closed it", l.remote)
		}
		return l.err
	}
	return nil
}

// Send writes each packet as one datagram, or as fragments when it is
// larger than a datagram. UDP does not wait for the receiver: a receiver
// that cannot keep up loses datagrams.
func (l *link) Send(ctx context.Context, packets [][]byte) error {
	for i, p := range packets {
		if len(p) > l.cfg.maxMessageSize {
			return fmt.Errorf("udp link %s: packet %d of %d bytes, max %d: %w", l.remote, i, len(p), l.cfg.maxMessageSize, transport.ErrTooLarge)
		}
	}
	if err := l.state(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	per := l.cfg.datagramSize - fragmentHeaderLen
	var dgrams, nbytes uint64
	for _, p := range packets {
		id := l.nextMsg
		l.nextMsg++
		if len(p)+dataHeaderLen <= l.cfg.datagramSize {
			h, err := l.w.next(dataHeaderLen, p)
			if err != nil {
				return l.sendFailed(err)
			}
			putDataHeader(h, l.id, id)
			dgrams++
			nbytes += uint64(len(p) + dataHeaderLen)
			continue
		}
		count := fragmentCount(len(p), per)
		for i := 0; i < count; i++ {
			off, n, _ := fragmentSpan(len(p), count, i)
			h, err := l.w.next(fragmentHeaderLen, p[off:off+n])
			if err != nil {
				return l.sendFailed(err)
			}
			putFragmentHeader(h, l.id, id, uint16(i), uint16(count), uint32(len(p)))
			dgrams++
			nbytes += uint64(n + fragmentHeaderLen)
		}
	}
	if err := l.w.flush(); err != nil {
		return l.sendFailed(err)
	}
	l.lastSend.Store(time.Now().UnixNano())
	l.cnt.add(cDatagramsOut, dgrams)
	l.cnt.add(cBytesOut, nbytes)
	l.cnt.add(cMessagesOut, uint64(len(packets)))
	return nil
}

func (l *link) sendFailed(err error) error {
	l.w.n = 0
	if isRefused(err) {
		// A connected socket learns from ICMP that nothing listens at
		// the peer's port any more.
		err = fmt.Errorf("udp link %s: %w: %v", l.remote, ErrPeerVanished, err)
		l.fail(err)
		return err
	}
	if st := l.state(); st != nil {
		return st
	}
	return fmt.Errorf("udp link %s: send: %w", l.remote, err)
}

// sendControl sends one control datagram, best effort.
func (l *link) sendControl(typ byte, payload ...byte) {
	b := control(typ, l.id, payload...)
	if err := l.s.writeOne(b, l.peer); err == nil {
		l.cnt.add(cDatagramsOut, 1)
		l.cnt.add(cBytesOut, uint64(len(b)))
		l.lastSend.Store(time.Now().UnixNano())
	}
}

// Recv returns every message queued since the last call, waiting for one.
func (l *link) Recv(ctx context.Context) ([][]byte, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, transport.ErrClosed
		}
		if len(l.q) > 0 {
			// The previous batch's slice is reused: the caller was
			// told it is valid until this call. Message bytes are
			// never reused.
			out := l.q
			l.q = l.spare[:0]
			l.spare = out
			l.qBytes = 0
			l.mu.Unlock()
			return out, nil
		}
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return nil, err
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// deliver queues a whole message for Recv; the reading goroutine calls it.
func (l *link) deliver(m []byte) {
	l.mu.Lock()
	if l.closed || l.err != nil {
		l.mu.Unlock()
		return
	}
	if l.qBytes+len(m) > l.cfg.recvQueueBytes {
		l.mu.Unlock()
		l.cnt.add(cDroppedQueueFull, 1)
		return
	}
	l.q = append(l.q, m)
	l.qBytes += len(m)
	l.mu.Unlock()
	l.cnt.add(cMessagesIn, 1)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// handle processes one datagram of this link on the reading goroutine.
func (l *link) handle(h header, now time.Time, sl *slab) {
	l.lastRecv.Store(now.UnixNano())
	switch h.Type {
	case TypeData:
		if l.replay.seen(h.MsgID) {
			l.cnt.add(cDuplicates, 1)
			return
		}
		l.replay.mark(h.MsgID)
		l.deliver(sl.copy(h.Payload))
	case TypeFragment:
		if l.replay.seen(h.MsgID) {
			l.cnt.add(cDuplicates, 1)
			return
		}
		if m := l.reasm.add(h, now); m != nil {
			l.replay.mark(h.MsgID)
			l.deliver(m)
		}
	case TypeKeepalive, TypeWelcome:
	case TypeHello:
		// The dialer did not get our welcome; the link exists.
		if l.ln != nil {
			l.sendControl(TypeWelcome)
		}
	case TypeClose:
		if len(h.Payload) == 0 || h.Payload[0] == closeNormal {
			l.fail(io.EOF)
		} else {
			l.fail(fmt.Errorf("udp link %s: %w: the listener no longer knows this link", l.remote, ErrPeerVanished))
		}
	default:
		l.cnt.add(cBadDatagrams, 1)
	}
}

// maintain runs on the reading goroutine every tick: idle expiry,
// keepalives and reassembly timeouts.
func (l *link) maintain(now time.Time) (expired bool) {
	if now.Sub(time.Unix(0, l.lastRecv.Load())) > l.cfg.idleTimeout {
		l.fail(fmt.Errorf("udp link %s: %w: nothing received for %s", l.remote, ErrPeerVanished, l.cfg.idleTimeout))
		return true
	}
	if now.Sub(time.Unix(0, l.lastSend.Load())) >= l.cfg.keepalive {
		l.sendControl(TypeKeepalive)
	}
	l.reasm.sweep(now)
	return false
}

// fail ends the link because of the peer or the network; Recv returns
// what was queued, then err.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.closed || l.err != nil {
		l.mu.Unlock()
		return
	}
	l.err = err
	l.mu.Unlock()
	l.end()
}

// Close sends the peer a close datagram (best effort) and ends the link.
func (l *link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	alive := l.err == nil
	l.mu.Unlock()
	if alive {
		l.sendControl(TypeClose, closeNormal)
	}
	l.end()
	return nil
}

func (l *link) end() {
	l.ended.Do(func() {
		close(l.done)
		l.reasm.release()
		if l.ln != nil {
			l.ln.remove(l)
		} else {
			_ = l.s.conn.Close()
			l.t.forgetLink(l)
		}
	})
}

// slab hands out copies of small received messages from shared chunks, so
// the reading goroutine allocates once per chunk instead of once per
// message. Bytes handed out are never reused.
type slab struct{ b []byte }

const slabSize = 64 << 10

func (s *slab) copy(p []byte) []byte {
	if len(p) > slabSize/8 {
		return append([]byte(nil), p...)
	}
	if cap(s.b)-len(s.b) < len(p) {
		s.b = make([]byte, 0, slabSize)
	}
	n := len(s.b)
	s.b = append(s.b, p...)
	return s.b[n:len(s.b):len(s.b)]
}

// isRefused: the peer's host answered with ICMP port unreachable.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
