// Package acceptq is the queue between a listener that opens links itself
// (on a first datagram, record or session from a new peer: udp, kafka,
// serial) and the callers of its Accept.
package acceptq

import (
	"context"
	"sync"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Queue holds the links a listener opened that Accept has not returned yet.
// Its state is guarded by the listener's own lock, given to New, so that a
// listener registers a link and queues it in one critical section: Push,
// Remove, Drain and Close are called holding that lock; Accept takes it.
type Queue[T comparable] struct {
	mu     sync.Locker
	items  []T
	closed bool
	ready  chan struct{} // one slot: an Accept may find a link
	done   chan struct{} // closed by Close
}

// New returns an empty queue guarded by mu.
func New[T comparable](mu sync.Locker) *Queue[T] {
	return &Queue[T]{mu: mu, ready: make(chan struct{}, 1), done: make(chan struct{})}
}

func (q *Queue[T]) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Push queues v for Accept. Call holding the lock, after checking that the
// listener is not closed.
func (q *Queue[T]) Push(v T) {
	q.items = append(q.items, v)
	q.signal()
}

// Remove drops v if it is still queued (its link ended before Accept
// returned it). Call holding the lock.
func (q *Queue[T]) Remove(v T) {
	for i, x := range q.items {
		if x == v {
			var zero T
			copy(q.items[i:], q.items[i+1:])
			q.items[len(q.items)-1] = zero
			q.items = q.items[:len(q.items)-1]
			return
		}
	}
}

// Drain removes and returns every queued link. Call holding the lock.
func (q *Queue[T]) Drain() []T {
	items := q.items
	q.items = nil
	return items
}

// Close makes every Accept, waiting or to come, fail with
// transport.ErrClosed, and returns the links still queued for the caller to
// close. Call holding the lock; later calls return nothing.
func (q *Queue[T]) Close() []T {
	if q.closed {
		return nil
	}
	q.closed = true
	close(q.done)
	return q.Drain()
}

// Done is closed by Close.
func (q *Queue[T]) Done() <-chan struct{} { return q.done }

// Accept returns the next queued link, waiting until one is queued, the
// queue is closed (transport.ErrClosed) or ctx ends. Several goroutines may
// call it; each link goes to one of them.
func (q *Queue[T]) Accept(ctx context.Context) (T, error) {
	var zero T
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return zero, transport.ErrClosed
		}
		if len(q.items) > 0 {
			v := q.items[0]
			q.items[0] = zero
			q.items = q.items[1:]
			more := len(q.items) > 0
			q.mu.Unlock()
			if more {
				// The one-slot signal may have woken only this caller.
				q.signal()
			}
			return v, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-q.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}
