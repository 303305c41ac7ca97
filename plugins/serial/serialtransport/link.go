package serialtransport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// link is one session on a line.
type link struct {
	ln          *line
	local, peer uint32 // session ids, fixed for the link's life
	rq          recvQueue

	sendMu  sync.Mutex // one Send encodes and queues at a time, so message ids follow the queue
	nextID  uint32
	scratch []byte

	asm reassembly // the reader goroutine's only

	closed    atomic.Bool
	closeOnce sync.Once
	endOnce   sync.Once
	cause     error // set before done closes
	done      chan struct{}
}

type reassembly struct {
	active      bool
	id          uint32
	next, count uint16
	buf         []byte
	last        time.Time
}

func (a *reassembly) reset() {
	a.active = false
	a.buf = nil
}

func newLink(ln *line, local, peer uint32) *link {
	lk := &link{ln: ln, local: local, peer: peer, done: make(chan struct{})}
	lk.rq.init(max(2*ln.cfg.maxMessageSize, 256<<10))
	return lk
}

func (lk *link) LocalAddr() string  { return lk.ln.path }
func (lk *link) RemoteAddr() string { return lk.ln.path }

// Counters reports the line's counters (for a listener's link: every line
// that listener opened).
func (lk *link) Counters() map[string]uint64 { return lk.ln.ctr.snapshot() }

// Send encodes packets as frames and queues them for the line's writer. It
// returns once they are queued; it blocks while the writer is behind
// (backpressure from the device) until ctx ends.
func (lk *link) Send(ctx context.Context, packets [][]byte) error {
	for i, p := range packets {
		if len(p) > lk.ln.cfg.maxMessageSize {
			return fmt.Errorf("send packet %d of %d bytes on %s (maximum %d): %w", i, len(p), lk.ln.path, lk.ln.cfg.maxMessageSize, transport.ErrTooLarge)
		}
	}
	if len(packets) == 0 {
		return nil
	}
	if lk.closed.Load() {
		return transport.ErrClosed
	}
	if err := lk.ended(); err != nil {
		return err
	}
	lk.sendMu.Lock()
	defer lk.sendMu.Unlock()
	maxPayload := lk.ln.cfg.maxFrameSize - frameOverhead
	buf := lk.ln.getBuf()
	frames, msgs := 0, 0
	flush := func() error {
		w := &wreq{buf: buf, frames: frames, msgs: msgs}
		buf, frames, msgs = nil, 0, 0
		select {
		case lk.ln.wq <- w:
			return nil
		case <-lk.done:
			return lk.ended()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, p := range packets {
		lk.nextID++
		count := max(1, (len(p)+maxPayload-1)/maxPayload)
		h := header{typ: frameData, src: lk.local, dst: lk.peer, msgID: lk.nextID, fragCount: uint16(count)}
		for i := 0; i < count; i++ {
			chunk := p[min(i*maxPayload, len(p)):min((i+1)*maxPayload, len(p))]
			h.fragIndex = uint16(i)
			if buf == nil {
				buf = lk.ln.getBuf()
			}
			buf, lk.scratch = appendFrame(buf, lk.scratch, h, chunk)
			frames++
			if len(buf) >= sendChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		msgs++
	}
	if frames > 0 {
		return flush()
	}
	return nil
}

func (ln *line) getBuf() []byte {
	// The pool holds *[]byte so a Put does not allocate a slice header.
	if b, ok := ln.frameBufs.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 0, poolCap)
}

// ended returns why the link ended, or nil while it is up.
func (lk *link) ended() error {
	select {
	case <-lk.done:
		if lk.closed.Load() {
			return transport.ErrClosed
		}
		return fmt.Errorf("%w: %w", transport.ErrClosed, lk.cause)
	default:
		return nil
	}
}

// Recv returns every packet received since the last call, waiting for one
// when there is none.
func (lk *link) Recv(ctx context.Context) ([][]byte, error) {
	if lk.closed.Load() {
		return nil, transport.ErrClosed
	}
	return lk.rq.pop(ctx)
}

// Close sends a close frame, so the far end's Recv returns io.EOF after
// every packet sent before, and ends the link.
func (lk *link) Close() error {
	lk.closeOnce.Do(func() {
		lk.closed.Store(true)
		if lk.ended() == nil {
			done := make(chan error, 1)
			buf, _ := appendFrame(nil, nil, header{typ: frameClose, src: lk.local, dst: lk.peer, fragCount: 1}, nil)
			t := time.NewTimer(closeGrace)
			lk.sendMu.Lock()
			select {
			case lk.ln.wq <- &wreq{buf: buf, frames: 1, done: done}:
				select {
				case <-done:
				case <-t.C:
				case <-lk.ln.done:
				}
			case <-t.C:
			case <-lk.ln.done:
			}
			lk.sendMu.Unlock()
			t.Stop()
		}
		lk.ln.linkEnded(lk, transport.ErrClosed)
	})
	return nil
}

// end ends the link: a Recv gets what was queued, then cause.
func (lk *link) end(cause error) {
	lk.endOnce.Do(func() {
		lk.cause = cause
		lk.rq.finish(cause)
		close(lk.done)
	})
}

// recvQueue holds received packets for Recv, up to a byte budget; the
// reader waits for room (backpressure) rather than drop.
type recvQueue struct {
	mu     sync.Mutex
	pkts   [][]byte
	spare  [][]byte
	bytes  int
	limit  int
	err    error
	notify chan struct{}
	space  chan struct{}
}

func (q *recvQueue) init(limit int) {
	q.limit = limit
	q.notify = make(chan struct{}, 1)
	q.space = make(chan struct{}, 1)
}

// push queues p, waiting while the queue is over budget. It gives up when
// done closes or the queue was finished.
func (q *recvQueue) push(p []byte, done <-chan struct{}) bool {
	for {
		q.mu.Lock()
		if q.err != nil {
			q.mu.Unlock()
			return false
		}
		if q.bytes == 0 || q.bytes+len(p) <= q.limit {
			q.pkts = append(q.pkts, p)
			q.bytes += len(p)
			q.mu.Unlock()
			select {
			case q.notify <- struct{}{}:
			default:
			}
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-done:
			return false
		}
	}
}

func (q *recvQueue) pop(ctx context.Context) ([][]byte, error) {
	for {
		q.mu.Lock()
		if len(q.pkts) > 0 {
			out := q.pkts
			q.pkts = q.spare[:0]
			q.spare = out
			q.bytes = 0
			q.mu.Unlock()
			select {
			case q.space <- struct{}{}:
			default:
			}
			return out, nil
		}
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return nil, err
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// finish makes pop return err once the queued packets were taken.
func (q *recvQueue) finish(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

var (
	_ transport.Link     = (*link)(nil)
	_ transport.Counters = (*link)(nil)
)
