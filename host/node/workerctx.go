package node

import (
	"context"
	"time"
)

// A worker is the context.Context its handlers see (Context embeds it). It
// is cancelled when the worker stops; node shutdown stops every worker, so
// it also ends with the node. Done's channel is made only when someone asks
// for it, so an idle worker pays nothing for being a context.

// closedChan is returned by Done once a worker stopped before anyone asked.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Deadline reports no deadline.
func (w *worker) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done returns a channel closed when the worker stops.
func (w *worker) Done() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancelled == nil {
		if w.stopped {
			return closedChan
		}
		w.cancelled = make(chan struct{})
	}
	return w.cancelled
}

// Err returns context.Canceled once the worker stopped. It reads under the
// lock that also closes Done, so Err and Done always agree.
func (w *worker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return context.Canceled
	}
	return nil
}

// Value carries no values.
func (w *worker) Value(any) any { return nil }

// afterFunc is one callback registered through context.AfterFunc or by the
// context package for a context derived from a worker's.
type afterFunc struct{ f func() }

// AfterFunc lets the context package propagate cancellation to derived
// contexts (context.WithCancel(c), WithTimeout(c, ...)) without a goroutine
// per derived context. It follows context.AfterFunc's contract.
func (w *worker) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if w.after == nil {
		w.after = map[*afterFunc]struct{}{}
	}
	w.after[a] = struct{}{}
	w.mu.Unlock()
	return func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.after[a]; ok {
			delete(w.after, a)
			return true
		}
		return false
	}
}

// markStopped flags the worker stopped and cancels its context. The caller
// holds w.mu.
func (w *worker) markStopped() {
	w.stopped = true
	w.stopFlag.Store(true)
	if w.cancelled != nil {
		close(w.cancelled)
	}
	for a := range w.after {
		go a.f()
	}
	w.after = nil
}

// abandon cancels the context of a worker that never got registered.
func (w *worker) abandon() {
	w.mu.Lock()
	if !w.stopped {
		w.markStopped()
	}
	w.mu.Unlock()
}
