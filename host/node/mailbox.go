package node

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/ferryhq/ferry/sdk/routing"
)

// batchSize is how many messages a worker goroutine takes from its mailbox
// per lock; it amortises the lock without holding messages back long.
const batchSize = 32

type worker struct {
	n       *Node
	addrs   []string
	h       Worker
	kind    string
	limit   int
	outFlow string
	ctx     Context
	cancel  context.CancelFunc
	inbox   chan routing.Message // detached contexts only

	stopFlag atomic.Bool

	mu         sync.Mutex
	buf        []routing.Message // ring buffer, grown on demand up to limit
	head, size int
	running    bool
	stopped    bool
	space      chan struct{} // closed when room appears; nil when nobody waits
	done       chan struct{} // closed when stopped and finished
	replyFlows map[string]struct{}
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
		case <-w.ctx.Done():
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
		if w.size < w.limit {
			w.push(msg)
			if !w.running {
				w.running = true
				w.n.active.Add(1)
				go w.run()
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

// push appends to the ring; the caller holds mu and checked the limit.
func (w *worker) push(msg *routing.Message) {
	if w.size == len(w.buf) {
		c := 2 * len(w.buf)
		if c < 8 {
			c = 8
		}
		if c > w.limit {
			c = w.limit
		}
		nb := make([]routing.Message, c)
		for i := 0; i < w.size; i++ {
			nb[i] = w.buf[(w.head+i)%len(w.buf)]
		}
		w.buf, w.head = nb, 0
	}
	w.buf[(w.head+w.size)%len(w.buf)] = *msg
	w.size++
}

// run drains the mailbox and exits when it is empty, so idle workers hold no
// goroutine.
func (w *worker) run() {
	defer w.n.active.Add(-1)
	var batch [batchSize]routing.Message
	for {
		w.mu.Lock()
		if w.stopped {
			var dropped []routing.Message
			if w.size > 0 && w.n.log.IsDebug() {
				dropped = make([]routing.Message, 0, w.size)
				for i := 0; i < w.size; i++ {
					dropped = append(dropped, w.buf[(w.head+i)%len(w.buf)])
				}
			}
			w.buf, w.head, w.size = nil, 0, 0
			w.running = false
			w.mu.Unlock()
			for i := range dropped {
				w.logDropped(&dropped[i])
			}
			w.finish()
			return
		}
		if w.size == 0 {
			w.running = false
			if len(w.buf) > 64 {
				w.buf, w.head = nil, 0 // give memory back once a burst is over
			}
			w.mu.Unlock()
			return
		}
		k := 0
		for k < batchSize && w.size > 0 {
			batch[k] = w.buf[w.head]
			w.buf[w.head] = routing.Message{}
			w.head = (w.head + 1) % len(w.buf)
			w.size--
			k++
		}
		if w.space != nil {
			close(w.space)
			w.space = nil
		}
		w.mu.Unlock()
		for i := 0; i < k; i++ {
			if w.isStopped() {
				for j := i; j < k; j++ {
					w.logDropped(&batch[j])
				}
				clear(batch[i:k])
				break
			}
			w.handle(&batch[i])
			batch[i] = routing.Message{}
		}
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
	w.stopped = true
	w.stopFlag.Store(true)
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	running := w.running
	if !running {
		w.buf, w.head, w.size = nil, 0, 0
	}
	w.mu.Unlock()
	n.unregister(w)
	w.cancel()
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
