package transports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// maxBatchBytes bounds the bytes of one Link.Send besides Options.MaxBatch,
// so one batch of large messages does not hold up the link for long.
const maxBatchBytes = 1 << 20

// stopTimeout bounds the wait for a link worker to finish its current
// message when its link goes down; the handler never blocks past the
// session's end, so this is only a safety net.
const stopTimeout = 5 * time.Second

var errClosedLocally = errors.New("closed locally")

// listener is one Listen call: a transport listener plus its flow. It
// outlives failures of the transport listener, which it re-opens.
type listener struct {
	b       *Binding
	id      string
	flow    string
	allowed []string
	ctx     context.Context
	cancel  context.CancelFunc
	fin     chan struct{}

	mu     sync.Mutex
	addr   string
	tl     transport.Listener
	up     bool
	closed bool
	links  int // accepted links still open; the flow lives while any is
}

func (l *listener) info() ListenerInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return ListenerInfo{ID: l.id, Address: l.addr, Flow: l.flow, Allowed: append([]string(nil), l.allowed...), Up: l.up}
}

func (l *listener) done() <-chan struct{} { return l.fin }

func (l *listener) close() {
	l.cancel()
	l.mu.Lock()
	tl := l.tl
	l.mu.Unlock()
	if tl != nil {
		tl.Close()
	}
}

// release is called when an accepted link ends.
func (l *listener) release() {
	l.mu.Lock()
	l.links--
	last := l.closed && l.links == 0
	l.mu.Unlock()
	if last {
		l.b.n.RemoveFlow(l.flow)
	}
}

func (l *listener) run() {
	b := l.b
	defer func() {
		l.mu.Lock()
		l.closed, l.up = true, false
		tl := l.tl
		last := l.links == 0
		l.mu.Unlock()
		if tl != nil {
			tl.Close()
		}
		if last {
			b.n.RemoveFlow(l.flow)
		}
		b.mu.Lock()
		delete(b.listeners, l.id)
		b.mu.Unlock()
		close(l.fin)
		b.wg.Done()
	}()
	for {
		l.mu.Lock()
		tl := l.tl
		l.mu.Unlock()
		link, err := tl.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			b.log.Warn("accept failed; re-opening the listener", "address", l.addr, "error", err)
			if !l.reopen() {
				return
			}
			continue
		}
		l.accept(link)
	}
}

// reopen replaces a failed transport listener with a new one on the same
// bound address, retrying with backoff until it works or the listener is
// closed.
func (l *listener) reopen() bool {
	b := l.b
	l.mu.Lock()
	old := l.tl
	l.up = false
	l.mu.Unlock()
	old.Close()
	var delay time.Duration
	for {
		delay = b.nextBackoff(delay)
		if !b.wait(l.ctx, delay) {
			return false
		}
		tl, err := b.t.Listen(l.ctx, l.addr)
		if err != nil {
			b.log.Debug("re-opening listener failed; will retry", "address", l.addr, "error", err, "retry_in", b.nextBackoff(delay))
			continue
		}
		l.mu.Lock()
		if l.ctx.Err() != nil {
			l.mu.Unlock()
			tl.Close()
			return false
		}
		l.tl, l.up = tl, true
		l.mu.Unlock()
		b.log.Info("listener re-opened", "address", l.addr)
		return true
	}
}

func (l *listener) accept(link transport.Link) {
	b := l.b
	l.mu.Lock()
	l.links++
	l.mu.Unlock()
	c := b.newConn(node.NewWorkerID(), l.flow, l.allowed, l)
	if err := b.add(c); err != nil {
		link.Close()
		l.release()
		return
	}
	if err := c.start(link, func() {}); err != nil {
		b.log.Warn("cannot start a worker for an accepted link; closing it", "remote", link.RemoteAddr(), "error", err)
		link.Close()
		b.remove(c)
		close(c.finished)
		return
	}
	b.log.Debug("accepted", "listener", l.addr, "remote", link.RemoteAddr(), "worker", c.addr())
	go c.supervise()
}

// conn is one link's identity on the node: its worker address and flow. A
// Connect'ed conn survives its link breaking: it gets a new session on a
// re-dialled link at the same address.
type conn struct {
	b        *Binding
	id       string
	flow     string
	allowed  []string
	listener *listener // accepted from; nil when dialled
	dialled  string
	redial   bool
	ctx      context.Context // ends when the conn is closed for good
	cancel   context.CancelFunc
	finished chan struct{}

	mu   sync.Mutex
	sess *session
}

func (b *Binding) newConn(id, flow string, allowed []string, l *listener) *conn {
	c := &conn{b: b, id: id, flow: flow, allowed: allowed, listener: l, finished: make(chan struct{})}
	// Accepted links outlive their listener (CloseListener keeps them), so
	// every conn hangs off the binding, not the listener.
	c.ctx, c.cancel = context.WithCancel(b.ctx)
	return c
}

func (c *conn) addr() routing.Address { return routing.Local(c.id) }

func (c *conn) isUp() bool {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	return s != nil && s.ctx.Err() == nil
}

func (c *conn) info() ConnectionInfo {
	ci := ConnectionInfo{ID: c.id, Worker: c.addr(), Flow: c.flow, Dialled: c.dialled, Redial: c.redial,
		Allowed: append([]string(nil), c.allowed...)}
	if c.listener != nil {
		ci.Listener = c.listener.id
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		ci.Local, ci.Remote = s.link.LocalAddr(), s.link.RemoteAddr()
		ci.Up = s.ctx.Err() == nil
	}
	return ci
}

// start runs a session on link: the worker at the conn's address and the
// link's reader and writer.
func (c *conn) start(link transport.Link, release func()) error {
	b := c.b
	s := &session{c: c, link: link, release: release, out: make(chan *[]byte, b.opts.QueueSize), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	if _, err := b.n.StartWorker(c.id, &linkWorker{s: s}, node.WithKind(b.kind), node.WithOutboundFlow(c.flow)); err != nil {
		s.cancel()
		return err
	}
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	s.wg.Add(2)
	go s.reader()
	go s.writer()
	go func() {
		s.wg.Wait()
		s.release()
		close(s.done)
	}()
	return nil
}

func (c *conn) stopWorker() {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := c.b.n.StopWorker(ctx, c.id); err != nil && !errors.Is(err, node.ErrNoRoute) {
		c.b.log.Warn("link worker did not stop in time", "worker", c.addr(), "error", err)
	}
}

// supervise waits for the session to end, stops the worker, and for a
// Connect'ed conn re-dials with backoff and starts a new session at the same
// address; otherwise it forgets the conn.
func (c *conn) supervise() {
	b := c.b
	defer func() {
		b.remove(c)
		close(c.finished)
	}()
	for {
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		select {
		case <-s.done:
		case <-c.ctx.Done():
			s.fail(errClosedLocally)
			<-s.done
		}
		c.stopWorker()
		if c.ctx.Err() != nil {
			b.log.Debug("connection closed", "worker", c.addr(), "remote", s.link.RemoteAddr())
			return
		}
		if !c.redial {
			b.log.Debug("link down; its worker stopped", "worker", c.addr(), "remote", s.link.RemoteAddr(), "reason", s.err)
			return
		}
		b.log.Info("connection lost; re-dialling", "address", c.dialled, "worker", c.addr(), "reason", s.err)
		if !c.redialLoop() {
			return
		}
	}
}

func (c *conn) redialLoop() bool {
	b := c.b
	var delay time.Duration
	for {
		delay = b.nextBackoff(delay)
		if !b.wait(c.ctx, delay) {
			return false
		}
		link, release, err := b.dialLink(c.ctx, c.ctx, c.dialled)
		if err != nil {
			b.log.Debug("re-dial failed; will retry", "address", c.dialled, "error", err, "retry_in", b.nextBackoff(delay))
			continue
		}
		if err := c.start(link, release); err != nil {
			link.Close()
			release()
			b.log.Warn("re-dialled but cannot restart the connection worker", "worker", c.addr(), "error", err)
			continue
		}
		b.log.Info("re-connected", "address", c.dialled, "worker", c.addr())
		return true
	}
}

// session is one link's run: its writer queue and the goroutines moving
// packets.
type session struct {
	c       *conn
	link    transport.Link
	release func()
	ctx     context.Context
	cancel  context.CancelFunc
	out     chan *[]byte
	wg      sync.WaitGroup
	done    chan struct{}

	once sync.Once
	err  error // why the session ended; set once before ctx is cancelled
}

func (s *session) fail(err error) {
	s.once.Do(func() {
		s.err = err
		s.cancel()
		s.link.Close()
	})
}

// writer batches queued packets into Link.Send calls: one crossing of a
// plugin boundary per batch instead of per message. Packet buffers go back
// to the pool once Send returns: a Link copies or writes what it is given
// before returning, as every transport here does.
func (s *session) writer() {
	defer s.wg.Done()
	b := s.c.b
	batch := make([][]byte, 0, b.opts.MaxBatch)
	bufs := make([]*[]byte, 0, b.opts.MaxBatch)
	for {
		select {
		case p := <-s.out:
			batch, bufs = append(batch[:0], *p), append(bufs[:0], p)
		case <-s.ctx.Done():
			return
		}
		size := len(batch[0])
	fill:
		for len(batch) < b.opts.MaxBatch && size < maxBatchBytes {
			select {
			case p := <-s.out:
				batch, bufs = append(batch, *p), append(bufs, p)
				size += len(*p)
			default:
				break fill
			}
		}
		err := s.link.Send(s.ctx, batch)
		clear(batch)
		for _, p := range bufs {
			putBuf(p)
		}
		bufs = bufs[:0]
		if err != nil {
			if errors.Is(err, transport.ErrTooLarge) {
				b.log.Warn("transport refused a batch as too large; dropped it", "worker", s.c.addr(), "packets", len(batch), "error", err)
				continue
			}
			s.fail(fmt.Errorf("send: %w", err))
			return
		}
	}
}

// Encoded packets come from two pools, so small messages do not pin large
// buffers; buffers above maxPooled are left to the garbage collector.
const (
	smallBuf  = 2 << 10
	maxPooled = 1 << 20
)

var smallBufs, largeBufs sync.Pool

func getBuf(size int) *[]byte {
	pool := &largeBufs
	if size <= smallBuf {
		pool = &smallBufs
	}
	if size <= maxPooled {
		if p, ok := pool.Get().(*[]byte); ok {
			return p
		}
	}
	c := size
	if size <= smallBuf {
		c = smallBuf
	}
	b := make([]byte, 0, c)
	return &b
}

func putBuf(p *[]byte) {
	switch c := cap(*p); {
	case c > maxPooled:
	case c <= smallBuf:
		*p = (*p)[:0]
		smallBufs.Put(p)
	default:
		*p = (*p)[:0]
		largeBufs.Put(p)
	}
}

// reader delivers arriving messages to the node with the link's worker at
// the front of the return route and the conn's flow for access control.
func (s *session) reader() {
	defer s.wg.Done()
	c := s.c
	b := c.b
	self := c.addr()
	for {
		pkts, err := s.link.Recv(s.ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("peer closed the link")
			}
			s.fail(fmt.Errorf("receive: %w", err))
			return
		}
		for _, p := range pkts {
			m, err := b.codec.Decode(p)
			if err != nil {
				b.log.Warn("dropped a packet that does not decode", "worker", self, "remote", s.link.RemoteAddr(), "bytes", len(p), "error", err)
				continue
			}
			if next, ok := m.Onward.Next(); !ok || !next.IsLocal() {
				// Network input may reach local workers only; a remote first
				// hop would make this node dial wherever a peer asks.
				b.log.Debug("message refused: its onward route must start with a local worker", "flow", c.flow, "onward", m.Onward.String(), "return", m.Return.String())
				continue
			}
			ret, err := m.Return.Prepend(self)
			if err != nil {
				b.log.Debug("message refused", "flow", c.flow, "error", err)
				continue
			}
			m.Return = ret
			m.Local.Flow = c.flow
			if err := b.n.Deliver(s.ctx, &m); err != nil {
				if s.ctx.Err() != nil {
					s.fail(errClosedLocally)
					return
				}
				b.log.Debug("message from the network not delivered", "flow", c.flow, "onward", m.Onward.String(), "return", m.Return.String(), "error", err)
			}
		}
	}
}

// linkWorker is the node-side end of a link: a message routed to it leaves
// the node over the link.
type linkWorker struct{ s *session }

// Shutdown closes the connection for good when the worker was stopped by
// someone other than the binding (Node.StopWorker, node shutdown): a link
// without its worker could only drop messages. When the binding stops the
// worker itself, the session has already ended and this does nothing.
func (w *linkWorker) Shutdown(*node.Context) error {
	if w.s.ctx.Err() == nil {
		w.s.c.b.log.Debug("link worker stopped; closing its connection", "worker", w.s.c.addr())
		w.s.c.cancel()
	}
	return nil
}

func (w *linkWorker) HandleMessage(c *node.Context, msg *routing.Message) error {
	s := w.s
	onward := msg.Onward[1:]
	if len(onward) == 0 {
		return fmt.Errorf("link %s: the onward route ends at the link; add the worker on the other side, e.g. %s/service/echo", c.Address(), c.Address())
	}
	out := routing.Message{Onward: onward, Return: msg.Return, Payload: msg.Payload}
	p := getBuf(routing.EncodedSize(&out))
	pkt, err := s.c.b.codec.Append((*p)[:0], &out)
	if err != nil {
		putBuf(p)
		s.c.b.log.Warn("message not sent over link", "worker", c.Address(), "onward", onward.String(), "error", err)
		return err
	}
	*p = pkt
	select {
	case s.out <- p:
		return nil
	case <-s.ctx.Done():
		putBuf(p)
		return fmt.Errorf("link %s is down: %w", c.Address(), transport.ErrClosed)
	case <-c.Done():
		putBuf(p)
		return fmt.Errorf("link %s: %w", c.Address(), node.ErrWorkerStopped)
	}
}
