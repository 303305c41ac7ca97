// Package portals carries byte streams (TCP connections) over Ferry routes.
//
// An Outlet is a worker (by default at /service/outlet) that, for each portal
// session opened to it, dials its target and starts a session worker. An
// Inlet listens on a local address and, for each accepted stream, starts a
// session worker that opens a session along its route to an outlet. After
// the handshake the two session workers exchange frames directly, each using
// the return route of the other's open/opened message.
//
// Bytes flow both ways in order, in chunks, under credit-based flow control
// (a receiver grants credit as it writes to its stream, a sender stops
// reading its stream when out of credit), so a slow reader slows the writer
// end to end and memory per session is bounded by the window. Sessions are
// reliable end to end: every data message carries a sequence number and is
// kept by its sender until acknowledged (cumulative ack plus SACK ranges);
// the receiver delivers in order, buffers what arrives early within the
// window and drops duplicates; the sender retransmits on a timeout derived
// from the measured round trip (RFC 6298) and at once on SACK holes. A
// stream's EOF is sent as fin and becomes a half-close on the other side.
// A path that fails after the session is up (a lost link, a relay node
// restarting, an error from a node on the path) pauses the session: both
// ends keep retransmitting with backoff, each follows the return route of
// the latest frame from its peer, and a paused inlet re-sends along its
// configured route with the outlet service replaced by the outlet session.
// Silence longer than SessionOptions.SessionTimeout, either side closing,
// or a protocol violation tears the session down on both ends (the local
// connections are reset).
//
// Streams come from a portal.Portal, in-process or a plugin; the session
// logic here is the same for both.
//
// Access control: an outlet is a worker like any other, so a node admits
// network input to it only when the flow it arrives on allows the outlet's
// address (Outlet.Address). Session workers need no extra grants: each one
// first sends through the link the peer uses, which admits the replies.
package portals

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/logging"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/routing"
)

// DefaultOutletAddress is where an outlet listens for sessions unless
// configured otherwise (route text /service/outlet).
const DefaultOutletAddress = "outlet"

// Status describes an inlet or outlet for listings such as `node show`.
type Status struct {
	Kind string `json:"kind"` // "inlet" or "outlet"
	// Address is the inlet's bound listen address or the outlet's worker
	// address in route text.
	Address string `json:"address"`
	// Route is the inlet's route to its outlet; Target is the outlet's
	// target.
	Route  string `json:"route,omitempty"`
	Target string `json:"target,omitempty"`
	// State is "connecting", "up", "down" or "closed".
	State          string `json:"state"`
	LastError      string `json:"last_error,omitempty"`
	ActiveSessions int64  `json:"active_sessions"`
	TotalSessions  int64  `json:"total_sessions"`
	// BytesOut counts bytes read from local streams and sent into the
	// portal; BytesIn counts bytes that came through the portal and were
	// written to local streams.
	BytesOut uint64 `json:"bytes_out"`
	BytesIn  uint64 `json:"bytes_in"`
	// Retransmits counts session messages sent again (lost or late on the
	// route); Duplicates counts messages that arrived twice and were
	// dropped.
	Retransmits uint64 `json:"retransmits"`
	Duplicates  uint64 `json:"duplicates"`
	// MaxSessions is the cap on open sessions (Options.MaxSessions);
	// Refused counts sessions refused because of it (an outlet counts
	// refused opens: one sent again is refused again, keeping no state).
	MaxSessions int    `json:"max_sessions"`
	Refused     uint64 `json:"refused"`
}

// Portal states.
const (
	StateConnecting = "connecting"
	StateUp         = "up"
	StateDown       = "down"
	StateClosed     = "closed"
)

type stateBox struct {
	mu      sync.Mutex
	state   string
	lastErr string
}

func (b *stateBox) set(state string, err error) {
	b.mu.Lock()
	b.state = state
	if err != nil {
		b.lastErr = err.Error()
	}
	b.mu.Unlock()
}

func (b *stateBox) get() (string, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.lastErr
}

// OutletOptions configure an outlet.
type OutletOptions struct {
	// Address is the local worker address sessions are opened to
	// (default DefaultOutletAddress).
	Address string
	// Target is what the portal dials for each session, e.g.
	// "127.0.0.1:9000".
	Target string
	// Portal dials the target.
	Portal portal.Portal
	// DialTimeout bounds dialling the target (default 10s).
	DialTimeout time.Duration
	// MaxSessions bounds the outlet's open sessions: each one that arrives
	// from the network dials the target, so beyond it an open is refused.
	// Default DefaultMaxSessions.
	MaxSessions int
	// Logger defaults to the node's logger.
	Logger  hclog.Logger
	Session SessionOptions
	// Wrap, when set, wraps the outlet's worker before it starts, e.g. to
	// admit only messages that came through a secure channel.
	Wrap func(node.Worker) node.Worker
}

// Outlet accepts portal sessions and connects each to its target.
type Outlet struct {
	n     *node.Node
	opts  OutletOptions
	log   hclog.Logger
	addr  routing.Address
	stats counters
	state stateBox
	wg    sync.WaitGroup

	ctx    context.Context
	cancel context.CancelFunc

	limiter *logging.Limiter
	refused atomic.Uint64 // sessions refused because of MaxSessions

	mu       sync.Mutex
	closed   bool
	sessions map[[idLen]byte]*session // nil value: session being started
	// early holds early data that arrived while its session was being
	// started (at most one message of maxEarlyData per such session).
	early map[[idLen]byte]*routing.Message
}

// NewOutlet starts an outlet worker on n.
func NewOutlet(n *node.Node, opts OutletOptions) (*Outlet, error) {
	if opts.Address == "" {
		opts.Address = DefaultOutletAddress
	}
	if opts.Target == "" {
		return nil, errors.New("outlet: a target address is required (e.g. 127.0.0.1:9000)")
	}
	if opts.Portal == nil {
		return nil, errors.New("outlet: a portal is required to dial the target")
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	so, err := opts.Session.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("outlet: %w", err)
	}
	opts.Session = so
	log := opts.Logger
	if log == nil {
		log = n.Logger()
	}
	o := &Outlet{n: n, opts: opts, log: log.Named("outlet").With("outlet", opts.Address, "target", opts.Target), sessions: map[[idLen]byte]*session{}, early: map[[idLen]byte]*routing.Message{}, limiter: logging.NewLimiter(0, 0)}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.state.set(StateUp, nil)
	var w node.Worker = outletWorker{o}
	if opts.Wrap != nil {
		w = opts.Wrap(w)
	}
	addr, err := n.StartWorker(opts.Address, w, node.WithKind("tcp-outlet"))
	if err != nil {
		o.cancel()
		return nil, fmt.Errorf("start outlet: %w", err)
	}
	o.addr = addr
	return o, nil
}

// Address returns the outlet's worker address; allow it on the flows that
// may open sessions.
func (o *Outlet) Address() routing.Address { return o.addr }

// Status reports counters and state.
func (o *Outlet) Status() Status {
	st, le := o.state.get()
	return Status{
		Kind: "outlet", Address: o.addr.String(), Target: o.opts.Target,
		State: st, LastError: le,
		ActiveSessions: o.stats.active.Load(), TotalSessions: o.stats.total.Load(),
		BytesOut: o.stats.bytesOut.Load(), BytesIn: o.stats.bytesIn.Load(),
		Retransmits: o.stats.retransmits.Load(), Duplicates: o.stats.duplicates.Load(),
		MaxSessions: o.opts.MaxSessions, Refused: o.refused.Load(),
	}
}

// Close stops the outlet and ends its sessions, telling each peer why.
func (o *Outlet) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	var live []*session
	for _, s := range o.sessions {
		if s != nil {
			live = append(live, s)
		}
	}
	o.mu.Unlock()
	o.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := o.n.StopWorker(ctx, o.addr.Value)
	if errors.Is(err, node.ErrNoRoute) {
		err = nil // already gone with the node
	}
	for _, s := range live {
		s.end(errors.New("outlet closed"), true)
	}
	o.wg.Wait()
	o.state.set(StateClosed, nil)
	return err
}

type outletWorker struct{ o *Outlet }

func (w outletWorker) HandleMessage(c *node.Context, m *routing.Message) error {
	o := w.o
	f, err := decodeFrame(m.Payload)
	if err != nil {
		return fmt.Errorf("outlet %s: frame from %s: %w", o.addr, m.Return, err)
	}
	switch f.kind {
	case kindPing:
		return c.Reply(c, m, (&frame{kind: kindPong}).encode())
	case kindOpen:
	default:
		return fmt.Errorf("outlet %s: unexpected %s frame from %s", o.addr, kindName(f.kind), m.Return)
	}
	if f.version != ProtocolVersion {
		return c.Reply(c, m, (&frame{kind: kindClose, reason: fmt.Sprintf("outlet speaks portal protocol %d, the inlet %d", ProtocolVersion, f.version)}).encode())
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return c.Reply(c, m, (&frame{kind: kindClose, reason: "outlet is closing"}).encode())
	}
	s, dup := o.sessions[f.id]
	if !dup && len(o.sessions) >= o.opts.MaxSessions {
		o.mu.Unlock()
		o.refused.Add(1)
		o.limiter.Warn(o.log, "outlet full", "session refused: the outlet holds its maximum of sessions", "max_sessions", o.opts.MaxSessions, "from", m.Return.String())
		return c.Reply(c, m, (&frame{kind: kindClose, reason: fmt.Sprintf("outlet %s holds its maximum of %d sessions", o.addr, o.opts.MaxSessions)}).encode())
	}
	if !dup {
		o.sessions[f.id] = nil
		o.wg.Add(1)
	}
	if dup && s == nil && len(f.data) > 0 {
		// Early data for a session still starting: it takes it then.
		o.early[f.id] = &routing.Message{Return: m.Return.Clone(), Payload: bytes.Clone(m.Payload)}
	}
	o.mu.Unlock()
	if dup {
		if s != nil {
			// Let the session answer the repeated open, or take the
			// early data, itself.
			return c.SendMessage(c, &routing.Message{Onward: routing.Route{s.addr}, Return: m.Return, Payload: m.Payload})
		}
		return nil // still starting; the opened will come
	}
	ret := m.Return.Clone()
	var early *routing.Message
	if len(f.data) > 0 {
		// The early data overtook its open (a reordering route).
		early = &routing.Message{Return: ret, Payload: bytes.Clone(m.Payload)}
	}
	go func() {
		defer o.wg.Done()
		o.accept(c, f, ret, early)
	}()
	return nil
}

// accept starts the session for a new open and answers it at once, then
// dials the target: the inlet's first data crosses the route while the dial
// is in flight instead of after it (the session's stream waits for the
// dial, see dialingStream). If the dial fails, the session ends and tells
// the inlet why, so it can close its client promptly.
func (o *Outlet) accept(c *node.Context, f frame, ret routing.Route, early *routing.Message) {
	forget := func() {
		o.mu.Lock()
		delete(o.sessions, f.id)
		delete(o.early, f.id)
		o.mu.Unlock()
	}
	refuse := func(reason error) {
		forget()
		ctx, cancel := context.WithTimeout(o.ctx, 5*time.Second)
		defer cancel()
		if err := c.Send(ctx, ret, (&frame{kind: kindClose, reason: reason.Error()}).encode()); err != nil {
			o.log.Debug("could not tell the inlet the session was refused", "error", err)
		}
	}
	ctx, cancel := context.WithTimeout(o.ctx, o.opts.DialTimeout)
	defer cancel()
	ds := newDialingStream(cancel)
	s := newSession(o.opts.Session, &o.stats, ds, o.log, &o.wg, func(s *session, err error) {
		forget()
		if err != nil {
			o.limiter.Info(o.log, "session ended", "session ended", "session", s.addr.String(), "error", err)
		}
	})
	s.peer = ret
	s.peerWindow = f.window
	if _, err := o.n.StartWorker("", s, node.WithKind("tcp-outlet-session")); err != nil {
		ds.Close()
		o.stats.active.Add(-1)
		refuse(fmt.Errorf("outlet %s: %w", o.addr, err))
		return
	}
	o.mu.Lock()
	closed := o.closed
	if !closed {
		o.sessions[f.id] = s
		if e := o.early[f.id]; e != nil {
			early = e
			delete(o.early, f.id)
		}
	}
	o.mu.Unlock()
	if closed {
		s.end(errors.New("outlet closed"), true)
		return
	}
	if err := s.c.Send(s.c, ret, (&frame{kind: kindOpened, version: ProtocolVersion, window: uint64(o.opts.Session.Window)}).encode()); err != nil {
		s.end(fmt.Errorf("answer open from %s: %w", ret, err), false)
		return
	}
	s.start()
	if early != nil {
		early.Onward = routing.Route{s.addr}
		_ = s.c.SendMessage(s.c, early)
	}
	conn, err := o.opts.Portal.Dial(ctx, o.opts.Target)
	if err != nil {
		if s.ending.Load() {
			return // ended meanwhile (the inlet closed); the dial was cancelled
		}
		err = fmt.Errorf("outlet %s cannot reach its target: %w", o.addr, err)
		o.state.set(StateUp, err)
		o.limiter.Warn(o.log, "target unreachable", "session refused", "error", err)
		s.end(err, true)
		return
	}
	ds.resolve(conn)
}

// dialingStream stands for the target's stream while the outlet dials it:
// reads and writes wait for the dial, and a Close before it completes
// cancels the dial and closes what it returns.
type dialingStream struct {
	ready  chan struct{}
	cancel context.CancelFunc

	mu     sync.Mutex
	conn   portal.Stream
	err    error
	linger *int
}

func newDialingStream(cancel context.CancelFunc) *dialingStream {
	return &dialingStream{ready: make(chan struct{}), cancel: cancel}
}

// resolve hands over the dialled stream, or closes it if the session
// already ended.
func (d *dialingStream) resolve(conn portal.Stream) {
	d.mu.Lock()
	if d.err != nil {
		d.mu.Unlock()
		conn.Close()
		return
	}
	d.conn = conn
	if d.linger != nil {
		if l, ok := conn.(interface{ SetLinger(int) error }); ok {
			_ = l.SetLinger(*d.linger)
		}
	}
	d.mu.Unlock()
	close(d.ready)
}

func (d *dialingStream) wait() (portal.Stream, error) {
	<-d.ready
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	return d.conn, nil
}

func (d *dialingStream) Read(p []byte) (int, error) {
	st, err := d.wait()
	if err != nil {
		return 0, err
	}
	return st.Read(p)
}

func (d *dialingStream) Write(p []byte) (int, error) {
	st, err := d.wait()
	if err != nil {
		return 0, err
	}
	return st.Write(p)
}

// TryWrite writes p without waiting when the dialled stream is there and
// can (see tryWriter); while the dial is in flight it declines.
func (d *dialingStream) TryWrite(p []byte) (bool, error) {
	select {
	case <-d.ready:
	default:
		return false, nil
	}
	st, err := d.wait()
	if err != nil {
		return false, err
	}
	if tw, ok := st.(tryWriter); ok {
		return tw.TryWrite(p)
	}
	return false, nil
}

func (d *dialingStream) CloseWrite() error {
	st, err := d.wait()
	if err != nil {
		return err
	}
	return st.CloseWrite()
}

// SetLinger passes a reset request on to the dialled stream (see
// resetStream), or keeps it for a stream still being dialled.
func (d *dialingStream) SetLinger(sec int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		d.linger = &sec
		return nil
	}
	if l, ok := d.conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

func (d *dialingStream) Close() error {
	d.mu.Lock()
	if d.err != nil {
		d.mu.Unlock()
		return nil
	}
	conn := d.conn
	d.err = portal.ErrClosed
	d.mu.Unlock()
	if conn == nil {
		d.cancel()
		close(d.ready)
		return nil
	}
	return conn.Close()
}

func newSessionID() [idLen]byte {
	var id [idLen]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on supported platforms
	return id
}
