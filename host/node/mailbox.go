package node

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/ferryhq/ferry/sdk/routing"
)

type worker struct {
	n       *Node
	addrs   []string
	addr0   [1]string          // backing store of addrs for one address
	self0   [1]routing.Address // backing store of ctx.self
	h       Worker
	kind    string
	limit   int
	outFlow string
	// byteLimit bounds the payload bytes queued (see Config.MailboxBytes).
	byteLimit int
	// generated is set when the only address is a fresh random id.
	generated bool
	ctx       Context
	inbox     chan routing.Message // detached contexts only

	stopFlag atomic.Bool

	mu          sync.Mutex
	first, last *segment // queued messages (see segment)
	size        int
	bytes       int // payload bytes queued, bounded by n.mailboxBytes
	running     bool
	stopped     bool
	space       chan struct{} // closed when room appears; nil when nobody waits
	done        chan struct{} // closed when stopped and finished
	replyFlows  map[string]struct{}
	cancelled   chan struct{}           // Done() of the worker's context; made on first use
	after       map[*afterFunc]struct{} // context.AfterFunc callbacks
}

func (w *worker) isStopped() bool { return w.stopFlag.Load() }

func (w *worker) info() WorkerInfo {
	w.mu.Lock()
	q := w.size
	w.mu.Unlock()
	if w.inbox != nil {
		q = len(w.inbox)
	}
	kind := w.kind
	if kind == "" {
		kind = fmt.Sprintf("%T", w.h)
	}
	return WorkerInfo{Addresses: append([]string(nil), w.addrs...), Kind: kind, Queued: q}
}

func (w *worker) allowReplies(flow string) {
	w.mu.Lock()
	if _, ok := w.replyFlows[flow]; !ok {
		if w.replyFlows == nil {
			w.replyFlows = map[string]struct{}{}
		}
		w.replyFlows[flow] = struct{}{}
	}
	w.mu.Unlock()
}

func (w *worker) allowsReplies(flow string) bool {
	w.mu.Lock()
	_, ok := w.replyFlows[flow]
	w.mu.Unlock()
	return ok
}

func (w *worker) stoppedErr() error {
	return fmt.Errorf("deliver to %s: %w", routing.Local(w.addrs[0]), ErrWorkerStopped)
}

// enqueue adds msg to the mailbox, waiting while it is full.
func (w *worker) enqueue(ctx context.Context, msg *routing.Message) error {
	if w.inbox != nil {
		if w.isStopped() {
			return w.stoppedErr()
		}
		select {
		case w.inbox <- *msg:
			return nil
		default:
		}
		select {
		case w.inbox <- *msg:
			return nil
		case <-w.Done():
			return w.stoppedErr()
		case <-ctx.Done():
			return fmt.Errorf("deliver to %s: mailbox full: %w", routing.Local(w.addrs[0]), ctx.Err())
		}
	}
	for {
		w.mu.Lock()
		if w.stopped {
			w.mu.Unlock()
			return w.stoppedErr()
		}
		// Bounded in messages and in bytes; one message always fits in an
		// empty mailbox, whatever its size.
		if w.size < w.limit && (w.size == 0 || w.bytes+len(msg.Payload) <= w.byteLimit) {
			w.push(msg)
			if !w.running {
				w.running = true
				w.n.active.Add(1)
				w.n.schedule(w)
			}
			w.mu.Unlock()
			return nil
		}
		if w.space == nil {
			w.space = make(chan struct{})
		}
		sp := w.space
		w.mu.Unlock()
		select {
		case <-sp:
		case <-ctx.Done():
			return fmt.Errorf("deliver to %s: mailbox full: %w", routing.Local(w.addrs[0]), ctx.Err())
		}
	}
}

// enqueueInline delivers msg like enqueue, but when the worker is idle
// (nothing queued, no runner, not a detached context) it handles msg on the
// calling goroutine: the worker is marked running as a runner would mark
// it, so messages that arrive meanwhile queue behind it and are handled
// after it, by a runner started once it is done.
func (w *worker) enqueueInline(ctx context.Context, msg *routing.Message) error {
	if w.inbox != nil {
		return w.enqueue(ctx, msg)
	}
	w.mu.Lock()
	if w.stopped || w.running || w.size > 0 {
		w.mu.Unlock()
		return w.enqueue(ctx, msg)
	}
	w.running = true
	w.n.active.Add(1)
	w.mu.Unlock()
	w.handle(msg)
	w.mu.Lock()
	if w.stopped {
		// Stopped while handling (by the handler itself, or from
		// outside while it ran): this goroutine runs what a runner
		// would, the hook included.
		w.endStopped()
		w.n.active.Add(-1)
		return nil
	}
	if w.size > 0 {
		// Messages queued behind this one: a runner takes over, still
		// marked running, so they keep their order.
		w.n.schedule(w)
		w.mu.Unlock()
		return nil
	}
	w.running = false
	w.mu.Unlock()
	w.n.active.Add(-1)
	return nil
}

// segment is a fixed-size piece of a mailbox queue. Mailboxes are linked
// lists of segments taken from a pool, so a burst costs no copying, and a
// drained mailbox holds no memory at all.
type segment struct {
	msgs       [segmentSize]routing.Message
	head, tail int // msgs[head:tail] are queued
	next       *segment
}

// segmentSize is the number of messages per segment; it is also the batch a
// runner takes from a mailbox under one lock.
const segmentSize = 32

var segmentPool = sync.Pool{New: func() any { return new(segment) }}

func putSegment(s *segment) {
	clear(s.msgs[s.head:s.tail]) // drop references before pooling
	s.head, s.tail, s.next = 0, 0, nil
	segmentPool.Put(s)
}

// push appends msg; the caller holds mu and checked the limit.
func (w *worker) push(msg *routing.Message) {
	if w.last == nil || w.last.tail == segmentSize {
		s := segmentPool.Get().(*segment)
		if w.last == nil {
			w.first = s
		} else {
			w.last.next = s
		}
		w.last = s
	}
	w.last.msgs[w.last.tail] = *msg
	w.last.tail++
	w.size++
	w.bytes += len(msg.Payload)
}

// takeQueued detaches and returns every queued segment; the caller holds mu.
func (w *worker) takeQueued() *segment {
	s := w.first
	w.first, w.last, w.size, w.bytes = nil, nil, 0, 0
	return s
}

// dropSegments logs every message in the list and returns the segments to
// the pool.
func (w *worker) dropSegments(s *segment) {
	for s != nil {
		next := s.next
		for i := s.head; i < s.tail; i++ {
			w.logDropped(&s.msgs[i])
		}
		putSegment(s)
		s = next
	}
}

// endStopped ends a stopped worker's last run: what is still queued is
// dropped and the stop hook runs. Called holding w.mu, which it releases.
func (w *worker) endStopped() {
	q := w.takeQueued()
	w.running = false
	w.mu.Unlock()
	w.dropSegments(q)
	w.finish()
}

// run drains the mailbox and returns when it is empty, so idle workers hold
// no goroutine.
func (w *worker) run() {
	defer w.n.active.Add(-1)
	for {
		w.mu.Lock()
		if w.stopped {
			w.endStopped()
			return
		}
		if w.size == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		// Take the first segment whole; senders start a new one if it was
		// the last.
		seg := w.first
		w.first = seg.next
		if w.first == nil {
			w.last = nil
		}
		seg.next = nil
		w.size -= seg.tail - seg.head
		for i := seg.head; i < seg.tail; i++ {
			w.bytes -= len(seg.msgs[i].Payload)
		}
		if w.space != nil {
			close(w.space)
			w.space = nil
		}
		w.mu.Unlock()
		for ; seg.head < seg.tail; seg.head++ {
			if w.isStopped() {
				break
			}
			w.handle(&seg.msgs[seg.head])
			seg.msgs[seg.head] = routing.Message{}
		}
		w.dropSegments(seg) // logs what a stop left unhandled
	}
}

// logDropped records a message that was accepted into the mailbox but could
// not be handled because the worker stopped first. Senders already got nil
// back, so the debug log is where such a message can be traced.
func (w *worker) logDropped(m *routing.Message) {
	if w.n.log.IsDebug() {
		w.n.log.Debug("worker stopped before handling a queued message; dropped it",
			"address", routing.Local(w.addrs[0]).String(), "onward", m.Onward.String(), "return", m.Return.String())
	}
}

func (w *worker) handle(msg *routing.Message) {
	defer func() {
		if r := recover(); r != nil {
			w.n.log.Error("worker panicked; stopping it", "address", w.addrs[0], "panic", fmt.Sprint(r), "onward", msg.Onward.String(), "stack", string(debug.Stack()))
			w.n.stopWorker(w)
		}
	}()
	if err := w.h.HandleMessage(&w.ctx, msg); err != nil {
		w.n.log.Debug("worker returned an error", "address", w.addrs[0], "error", err, "onward", msg.Onward.String(), "return", msg.Return.String())
	}
}

// stopWorker marks w stopped, unregisters it and returns a channel closed
// once its shutdown hook has run. If the worker is busy, its goroutine
// finishes the current message and runs the hook; otherwise the caller does.
func (n *Node) stopWorker(w *worker) <-chan struct{} {
	w.mu.Lock()
	if w.done == nil {
		w.done = make(chan struct{})
	}
	d := w.done
	if w.stopped {
		w.mu.Unlock()
		return d
	}
	w.markStopped()
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	running := w.running
	var q *segment
	if !running {
		q = w.takeQueued() // empty unless a racing push; nobody will run it
	}
	w.mu.Unlock()
	w.dropSegments(q)
	n.unregister(w)
	if w.inbox != nil {
		w.drainInbox()
	}
	if !running {
		w.finish()
	}
	return d
}

// finish runs the shutdown hook once and signals done.
func (w *worker) finish() {
	if h, ok := w.h.(ShutdownHook); ok {
		hc := w.ctx
		hc.Context = context.WithoutCancel(w.ctx.Context)
		if err := safeCall(func() error { return h.Shutdown(&hc) }); err != nil {
			w.n.log.Warn("worker shutdown hook failed", "address", w.addrs[0], "error", err)
		}
	}
	if w.n.log.IsDebug() {
		w.n.log.Debug("worker stopped", "address", w.addrs[0])
	}
	w.mu.Lock()
	d := w.done
	w.mu.Unlock()
	close(d)
}

// drainInbox logs and discards what a stopped detached context never read.
// A sender racing with the stop may still add a message after the drain; it
// is garbage collected with the channel.
func (w *worker) drainInbox() {
	for {
		select {
		case m := <-w.inbox:
			w.logDropped(&m)
		default:
			return
		}
	}
}
