package serialtransport

import (
	"context"
	"sync"
	"time"

	"github.com/ferryhq/ferry/internal/acceptq"
	"github.com/ferryhq/ferry/sdk/transport"
)

// reopenMin is the first wait before re-opening a failed device.
const reopenMin = 50 * time.Millisecond

// listener keeps a device open: it runs one line after another (re-opening
// the device with backoff after it failed) and hands each new link to
// Accept.
type listener struct {
	t    *Transport
	path string
	cfg  config
	ctr  counters

	mu      sync.Mutex
	pending *acceptq.Queue[*link] // at most one: the line's current link, not yet accepted
	cur     *line
	closed  bool

	done      chan struct{}
	closeOnce sync.Once
}

func newListener(t *Transport, path string, cfg config, port *device) *listener {
	l := &listener{t: t, path: path, cfg: cfg, done: make(chan struct{})}
	l.pending = acceptq.New[*link](&l.mu)
	go l.run(port)
	return l
}

func (l *listener) Addr() string { return l.path }

// Counters reports the counters of every line this listener opened.
func (l *listener) Counters() map[string]uint64 { return l.ctr.snapshot() }

func (l *listener) run(port *device) {
	defer func() {
		close(l.done)
		l.t.mu.Lock()
		delete(l.t.listeners, l)
		l.t.mu.Unlock()
		l.t.release(l.path)
	}()
	for {
		ln := newLine(port, l.path, l.cfg, &l.ctr, l)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			ln.shutdown(transport.ErrClosed)
			return
		}
		l.cur = ln
		l.mu.Unlock()
		ln.start(false)
		<-ln.done
		l.mu.Lock()
		l.cur = nil
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return
		}
		// The device failed (unplugged, or its other side went away):
		// re-open it when it is back.
		backoff := reopenMin
		for {
			select {
			case <-time.After(backoff):
			case <-l.pending.Done():
				return
			}
			var err error
			port, err = openDevice(l.path, l.cfg)
			if err == nil {
				break
			}
			l.ctr.openFailures.Add(1)
			backoff = min(2*backoff, l.cfg.reopenBackoffMax)
		}
	}
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// offer queues a new link for Accept. A link still waiting from an earlier
// session has ended by now (one line carries one link at a time), so it is
// dropped.
func (l *listener) offer(lk *link) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		lk.ln.linkEnded(lk, transport.ErrClosed)
		return
	}
	old := l.pending.Drain()
	l.pending.Push(lk)
	l.mu.Unlock()
	for _, o := range old {
		o.end(transport.ErrClosed)
	}
}

// Accept waits for the line's next link: the first peer session, or the next
// one after the previous link ended.
func (l *listener) Accept(ctx context.Context) (transport.Link, error) {
	lk, err := l.pending.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return lk, nil
}

// Close stops accepting. A link already accepted stays open (the device with
// it); the device is closed when that link ends.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		pending := l.pending.Close()
		ln := l.cur
		l.mu.Unlock()
		for _, lk := range pending {
			lk.ln.linkEnded(lk, transport.ErrClosed)
		}
		if ln != nil && ln.idleLink() {
			ln.shutdown(transport.ErrClosed)
		}
	})
	return nil
}

// closeAll closes the listener and its line's link (Transport.Close).
func (l *listener) closeAll() {
	_ = l.Close()
	l.mu.Lock()
	ln := l.cur
	l.mu.Unlock()
	if ln != nil {
		ln.closeLink()
	}
	<-l.done
}

var (
	_ transport.Listener = (*listener)(nil)
	_ transport.Counters = (*listener)(nil)
)
