package transports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/internal/payloadbuf"
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

// linkMailboxBytes bounds the payload bytes waiting in a link worker's
// mailbox (one message always fits).
const linkMailboxBytes = 1 << 20

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
	s := &session{c: c, link: link, release: release, out: make(chan *[]byte, b.opts.QueueSize), done: make(chan struct{}), epoch: time.Now()}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	if _, err := b.n.StartWorker(c.id, &linkWorker{s: s}, node.WithKind(b.kind), node.WithOutboundFlow(c.flow),
		// The link's own queue (QueueBytes) is where packets wait; the
		// mailbox in front of it need hold little more than one message.
		node.WithMailboxBytes(linkMailboxBytes)); err != nil {
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
		s.closeQueue()
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

	// Bytes in out, bounded per link (Options.QueueBytes) and charged to
	// the binding's total (Options.TotalQueueBytes).
	qmu     sync.Mutex
	qused   int64
	qclosed bool
	qroom   chan struct{} // closed when bytes are released; nil if nobody waits

	once sync.Once
	err  error // why the session ended; set once before ctx is cancelled

	// lastSend is when the last Link.Send started, as time since epoch.
	lastSend atomic.Int64
	epoch    time.Time
	// one is sendDirect's batch, reused: only the worker uses it.
	one [][]byte
}

// directGap: the link worker sends a message itself, without handing it to
// the writer goroutine, when nothing is queued and no Send started in the
// last directGap. Messages closer together than that (a stream under load)
// go through the queue, where the writer batches them: one crossing of a
// plugin boundary per batch.
const directGap = 10 * time.Microsecond

// reserve charges n queued bytes to the link and the binding. When either
// is full it returns a channel closed when room may have appeared.
func (s *session) reserve(n int64) (bool, <-chan struct{}, error) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.qclosed {
		return false, nil, transport.ErrClosed
	}
	if s.qused > 0 && s.qused+n > s.c.b.opts.QueueBytes {
		if s.qroom == nil {
			s.qroom = make(chan struct{})
		}
		return false, s.qroom, nil
	}
	if ok, wait := s.c.b.queued.take(n); !ok {
		return false, wait, nil
	}
	s.qused += n
	return true, nil, nil
}

// unreserve gives back n bytes that left the queue.
func (s *session) unreserve(n int64) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.qclosed {
		return // closeQueue gave everything back
	}
	s.qused -= n
	s.c.b.queued.give(n)
	if s.qroom != nil {
		close(s.qroom)
		s.qroom = nil
	}
}

// closeQueue gives back every byte still charged once the session ended;
// packets left in out are dropped with it.
func (s *session) closeQueue() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.qclosed {
		return
	}
	s.qclosed = true
	s.c.b.queued.give(s.qused)
	s.qused = 0
	if s.qroom != nil {
		close(s.qroom)
		s.qroom = nil
	}
}

// byteBudget is a count of bytes with a limit that waiters can wait on.
// One charge is always let in when nothing is charged, so a single packet
// larger than the limit still goes.
type byteBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	room  chan struct{}
}

func (b *byteBudget) init(limit int64) { b.limit = limit }

func (b *byteBudget) take(n int64) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used > 0 && b.used+n > b.limit {
		if b.room == nil {
			b.room = make(chan struct{})
		}
		return false, b.room
	}
	b.used += n
	return true, nil
}

func (b *byteBudget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.room != nil {
		close(b.room)
		b.room = nil
	}
	b.mu.Unlock()
}

// QueuedBytes returns the bytes waiting in the write queues of all links.
func (b *Binding) QueuedBytes() int64 {
	b.queued.mu.Lock()
	defer b.queued.mu.Unlock()
	return b.queued.used
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
		err := s.send(batch)
		clear(batch)
		var sent int64
		for _, p := range bufs {
			sent += int64(len(*p))
			putBuf(p)
		}
		s.unreserve(sent)
		bufs = bufs[:0]
		if err != nil {
			return
		}
	}
}

// send sends a batch on the link. A batch the transport refuses as too
// large (its limit is lower than the binding knew) is sent again packet by
// packet, so only the packets it refuses are lost, each reported back to
// its sender; any other error ends the session and is returned.
func (s *session) send(batch [][]byte) error {
	stalled, err := s.sendOnce(batch)
	if err == nil {
		return nil
	}
	if errors.Is(err, transport.ErrTooLarge) {
		if len(batch) == 1 {
			s.refused(batch[0], err)
			return nil
		}
		for _, p := range batch {
			if err := s.send([][]byte{p}); err != nil {
				return err
			}
		}
		return nil
	}
	return s.sendFailed(err, stalled)
}

func (s *session) sendOnce(batch [][]byte) (stalled bool, err error) {
	s.lastSend.Store(int64(time.Since(s.epoch)))
	// A peer that takes nothing for StallTimeout (it does not read) is
	// cut off rather than left holding the queue.
	sctx, cancel := context.WithTimeout(s.ctx, s.c.b.opts.StallTimeout)
	err = s.link.Send(sctx, batch)
	stalled = sctx.Err() == context.DeadlineExceeded && s.ctx.Err() == nil
	cancel()
	return stalled, err
}

// refused drops packet p, which the transport refused as too large, and
// reports it back along the return route it carries.
func (s *session) refused(p []byte, err error) {
	b := s.c.b
	b.limiter.Warn(b.log, "message too large", "transport refused a message as too large; dropped it", "worker", s.c.addr(), "bytes", len(p), "error", err)
	m, derr := b.codec.Decode(p)
	if derr != nil {
		return
	}
	b.n.ReportUndeliverable(&m, fmt.Errorf("link %s: message of %d bytes refused by the %s transport: %w (%w)", s.c.addr(), len(p), b.info.Name, err, routing.ErrTooLarge))
}

func (s *session) sendFailed(err error, stalled bool) error {
	b := s.c.b
	if stalled {
		err = fmt.Errorf("the peer took nothing for %s (it does not read what it asked for); link closed: %w", b.opts.StallTimeout, err)
	}
	err = fmt.Errorf("send: %w", err)
	s.fail(err)
	return err
}

// sendDirect sends p on the link from the worker's own goroutine when the
// writer has nothing queued or in hand (queued bytes are released only
// after their Send returned) and the link has been quiet for directGap: a
// request and its reply then skip a goroutine hand-off each. The worker
// handles one message at a time, so nothing can be queued behind p's back
// while it is sent. It reports whether it took p.
func (s *session) sendDirect(p *[]byte) (bool, error) {
	if time.Since(s.epoch)-time.Duration(s.lastSend.Load()) < directGap {
		return false, nil
	}
	s.qmu.Lock()
	idle := s.qused == 0 && !s.qclosed
	s.qmu.Unlock()
	if !idle {
		return false, nil
	}
	if s.one == nil {
		s.one = make([][]byte, 1)
	}
	s.one[0] = *p
	err := s.send(s.one)
	s.one[0] = nil
	putBuf(p)
	return true, err
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

// payloadBuf is where an arriving message's payload is decoded: a bulk
// payload (a portal's data chunk) into a buffer of the shared payload pools,
// which a portal session puts back once it has written the bytes out; any
// other receiver just drops it. Nothing here touches the payload after
// delivery, so its receiver is its sole holder. A new pool-sized buffer is
// allocated only for a length that spills over its power of two (a portal
// data frame: header and power-of-two chunk), where it costs no more than
// an exact one; other lengths take a pool buffer only if there is one, so a
// receiver that never recycles (64 KiB payloads to any worker) pays nothing.
func payloadBuf(n int) []byte {
	if payloadbuf.Fits(n) {
		if b := payloadbuf.Reuse(n); b != nil {
			return b
		}
		if payloadbuf.Spills(n) {
			return payloadbuf.Get(n)
		}
	}
	return make([]byte, n)
}

// reader delivers arriving messages to the node with the link's worker at
// the front of the return route and the conn's flow for access control.
func (s *session) reader() {
	defer s.wg.Done()
	c := s.c
	b := c.b
	self := c.addr()
	// Each link is its own source for the node's error rate limits, so one
	// peer cannot use up the budget of others on the same listener.
	origin := "link/" + c.id
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
			m, err := b.codec.DecodeAlloc(p, payloadBuf)
			if err != nil {
				b.limiter.Warn(b.log, "packet does not decode", "dropped a packet that does not decode", "worker", self, "remote", s.link.RemoteAddr(), "bytes", len(p), "error", err)
				continue
			}
			if next, ok := m.Onward.Next(); !ok || !next.IsLocal() {
				// Network input may reach local workers only; a remote first
				// hop would make this node dial wherever a peer asks.
				b.log.Debug("message refused: its onward route must start with a local worker", "flow", c.flow, "onward", m.Onward.String(), "return", m.Return.String())
				m.Local.Flow, m.Local.Origin = c.flow, origin
				rerr := fmt.Errorf("route to %s: %w: network input must name a local worker first", m.Onward, node.ErrDialRefused)
				if ok {
					b.n.ReportUndeliverableVia(&m, self, rerr)
				}
				continue
			}
			ret, err := m.Return.Prepend(self)
			if err != nil {
				// A full return route: a routing loop. Tell the sender,
				// through this link since the route back cannot name it.
				b.log.Debug("message refused", "flow", c.flow, "error", err)
				m.Local.Flow, m.Local.Origin = c.flow, origin
				b.n.ReportUndeliverableVia(&m, self, fmt.Errorf("arrive at %s: %w: %v", b.n.Name(), node.ErrHopLimit, err))
				continue
			}
			m.Return = ret
			m.Local.Flow, m.Local.Origin = c.flow, origin
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
	size := routing.EncodedSize(&out)
	if size > s.c.b.opts.MaxMessageSize {
		// Refused before it is queued: the sender learns why, and the
		// link and everything queued on it are untouched.
		err := s.c.b.tooLarge(c.Address(), size)
		c.ReportUndeliverable(msg, err)
		return err
	}
	p := getBuf(size)
	pkt, err := s.c.b.codec.Append((*p)[:0], &out)
	if err != nil {
		putBuf(p)
		s.c.b.log.Warn("message not sent over link", "worker", c.Address(), "onward", onward.String(), "error", err)
		if errors.Is(err, routing.ErrTooLarge) {
			err = fmt.Errorf("link %s: %w: %w", c.Address(), err, transport.ErrTooLarge) // both sentinels, as tooLarge
			c.ReportUndeliverable(msg, err)
		}
		return err
	}
	*p = pkt
	if ok, err := s.sendDirect(p); ok {
		if err != nil {
			return fmt.Errorf("link %s is down: %w", c.Address(), err)
		}
		recycle(msg)
		return nil
	}
	if err := s.enqueue(c, p); err != nil {
		putBuf(p)
		if errors.Is(err, transport.ErrClosed) {
			c.ReportUndeliverable(msg, fmt.Errorf("%w: %v", node.ErrWorkerStopped, err))
		}
		return err
	}
	recycle(msg)
	return nil
}

// recycle gives back the payload of a message its sender handed over
// (a portal's data chunk), now that its bytes are encoded into the packet.
// Only on success: a failed message may still be read for its error report.
func recycle(msg *routing.Message) {
	if msg.Local.PayloadOwned {
		payloadbuf.Put(msg.Payload)
		msg.Payload = nil
	}
}

// tooLarge is the error for a message of size encoded bytes that the link
// at addr cannot carry.
func (b *Binding) tooLarge(addr routing.Address, size int) error {
	max := b.opts.MaxMessageSize
	// Both sentinels: transport.ErrTooLarge for callers on this node,
	// routing.ErrTooLarge for the error message's code (node.CodeTooLarge),
	// which the sender on another node matches.
	limit := fmt.Sprintf("maximum message size %d", max)
	switch b.limitFrom {
	case "":
	case "setting " + transport.SettingMaxMessageSize:
		limit = fmt.Sprintf("%s %d (%s)", transport.SettingMaxMessageSize, max, b.limitFrom)
	default:
		limit += " (" + b.limitFrom + ")"
	}
	return &tooLargeError{fmt.Sprintf("link %s: message of %d bytes exceeds the %s transport's %s", addr, size, b.info.Name, limit)}
}

// tooLargeError is a message refused as too large at a link.
type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string { return e.msg + ": " + transport.ErrTooLarge.Error() }

func (e *tooLargeError) Is(target error) bool {
	return target == transport.ErrTooLarge || target == routing.ErrTooLarge
}

// enqueue queues an encoded packet for the writer, waiting while the link's
// or the binding's queued bytes are at their limit, but never longer than
// StallTimeout: a peer that does not drain its link loses it.
func (s *session) enqueue(c *node.Context, p *[]byte) error {
	n := int64(len(*p))
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		ok, wait, err := s.reserve(n)
		if err != nil {
			return fmt.Errorf("link %s is down: %w", c.Address(), err)
		}
		if ok {
			break
		}
		if timer == nil {
			timer = time.NewTimer(s.c.b.opts.StallTimeout)
		}
		select {
		case <-wait:
		case <-timer.C:
			err := fmt.Errorf("link %s: queued bytes at their limit for %s, the peer does not take what is sent; link closed: %w", c.Address(), s.c.b.opts.StallTimeout, transport.ErrClosed)
			s.c.b.limiter.Warn(s.c.b.log, "link stalled", "closing a link whose peer does not read", "worker", c.Address(), "remote", s.link.RemoteAddr(), "queued_bytes", s.queuedBytes())
			s.fail(err)
			return err
		case <-s.ctx.Done():
			return fmt.Errorf("link %s is down: %w", c.Address(), transport.ErrClosed)
		case <-c.Done():
			return fmt.Errorf("link %s: %w", c.Address(), node.ErrWorkerStopped)
		}
	}
	select {
	case s.out <- p:
		return nil
	case <-s.ctx.Done():
		s.unreserve(n)
		return fmt.Errorf("link %s is down: %w", c.Address(), transport.ErrClosed)
	case <-c.Done():
		s.unreserve(n)
		return fmt.Errorf("link %s: %w", c.Address(), node.ErrWorkerStopped)
	}
}

func (s *session) queuedBytes() int64 {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.qused
}
