package portals

import (
	"bytes"
	"context"
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

// InletOptions configure an inlet.
type InletOptions struct {
	// ListenAddress is where local clients connect, e.g. "127.0.0.1:6000".
	ListenAddress string
	// Route leads to the outlet, e.g. /tcp/127.0.0.1:7000/service/outlet.
	Route routing.Route
	// Portal listens for clients.
	Portal portal.Portal
	// OpenTimeout bounds how long one client waits for the outlet to
	// answer its session (default 5s).
	OpenTimeout time.Duration
	// WaitTimeout is how long after creation the inlet keeps retrying an
	// outlet it has never reached (default 30s). Clients arriving in that
	// time wait (up to OpenTimeout) for the path instead of being refused
	// at the first failed send; later, a client whose path is down is
	// closed at once.
	WaitTimeout time.Duration
	// ProbeInterval is how often the inlet checks its path for Status
	// while it is up (default 10s).
	ProbeInterval time.Duration
	// MaxSessions bounds the inlet's open sessions (clients); a client
	// beyond it is reset at once. Default DefaultMaxSessions.
	MaxSessions int
	// Logger defaults to the node's logger.
	Logger  hclog.Logger
	Session SessionOptions
}

// Inlet accepts local streams and carries each to the outlet over a route.
type Inlet struct {
	n       *node.Node
	opts    InletOptions
	log     hclog.Logger
	addr    string // the bound listen address, kept across re-listens
	created time.Time
	stats   counters
	state   stateBox
	wg      sync.WaitGroup // accept loop, prober, sessions' goroutines

	ctx       context.Context
	cancel    context.CancelFunc
	stopWatch func() bool

	relistenMu sync.Mutex
	limiter    *logging.Limiter
	refused    atomic.Uint64 // clients reset because of MaxSessions

	mu       sync.Mutex
	ln       portal.Listener
	lnGen    int
	closed   bool
	sessions map[*session]struct{}
}

// NewInlet starts listening and returns at once; the path to the outlet is
// probed in the background and Status reports it.
func NewInlet(ctx context.Context, n *node.Node, opts InletOptions) (*Inlet, error) {
	if len(opts.Route) == 0 {
		return nil, errors.New("inlet: a route to the outlet is required (e.g. /service/outlet)")
	}
	if err := opts.Route.Validate(); err != nil {
		return nil, fmt.Errorf("inlet: route %s: %w", opts.Route, err)
	}
	if opts.Portal == nil {
		return nil, errors.New("inlet: a portal is required to listen for clients")
	}
	if opts.ListenAddress == "" {
		return nil, errors.New("inlet: a listen address is required (e.g. 127.0.0.1:6000)")
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 5 * time.Second
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 30 * time.Second
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 10 * time.Second
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	so, err := opts.Session.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("inlet: %w", err)
	}
	opts.Session = so
	opts.Route = opts.Route.Clone()
	log := opts.Logger
	if log == nil {
		log = n.Logger()
	}
	ln, err := opts.Portal.Listen(ctx, opts.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("inlet: %w", err)
	}
	in := &Inlet{
		n: n, opts: opts, ln: ln, addr: ln.Addr(), created: time.Now(),
		log:      log.Named("inlet").With("inlet", ln.Addr(), "route", opts.Route.String()),
		sessions: map[*session]struct{}{},
		limiter:  logging.NewLimiter(0, 0),
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.state.set(StateConnecting, nil)
	in.wg.Add(2)
	go func() { defer in.wg.Done(); in.acceptLoop() }()
	go func() { defer in.wg.Done(); in.probeLoop() }()
	// An inlet cannot work without its node: stop listening when it stops.
	in.stopWatch = context.AfterFunc(n.Context(), func() { in.Close() })
	return in, nil
}

// Addr returns the bound listen address.
func (in *Inlet) Addr() string { return in.addr }

// Status reports counters and the path's state.
func (in *Inlet) Status() Status {
	st, le := in.state.get()
	return Status{
		Kind: "inlet", Address: in.addr, Route: in.opts.Route.String(),
		State: st, LastError: le,
		ActiveSessions: in.stats.active.Load(), TotalSessions: in.stats.total.Load(),
		BytesOut: in.stats.bytesOut.Load(), BytesIn: in.stats.bytesIn.Load(),
		Retransmits: in.stats.retransmits.Load(), Duplicates: in.stats.duplicates.Load(),
		MaxSessions: in.opts.MaxSessions, Refused: in.refused.Load(),
	}
}

// Close stops listening and ends every session, telling each outlet side.
func (in *Inlet) Close() error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	ln := in.ln
	stopWatch := in.stopWatch
	live := make([]*session, 0, len(in.sessions))
	for s := range in.sessions {
		live = append(live, s)
	}
	in.mu.Unlock()
	in.cancel()
	if stopWatch != nil {
		stopWatch()
	}
	err := ln.Close()
	for _, s := range live {
		s.end(errors.New("inlet closed"), true)
	}
	in.wg.Wait()
	in.state.set(StateClosed, nil)
	return err
}

// waiting reports whether the inlet is still within its initial wait for an
// outlet it has never reached.
func (in *Inlet) waiting() bool {
	st, _ := in.state.get()
	return st == StateConnecting && time.Since(in.created) < in.opts.WaitTimeout
}

// acceptors is how many Accept calls an inlet keeps outstanding. With a
// plugin every Accept is a gRPC round trip; several in flight keep
// connection bursts from queueing behind one another.
const acceptors = 4

func (in *Inlet) acceptLoop() {
	var wg sync.WaitGroup
	for range acceptors {
		wg.Add(1)
		go func() { defer wg.Done(); in.acceptor() }()
	}
	wg.Wait()
}

func (in *Inlet) acceptor() {
	backoff := 10 * time.Millisecond
	for {
		ln, gen := in.listener()
		conn, err := ln.Accept(in.ctx)
		if err == nil {
			backoff = 10 * time.Millisecond
			in.startSession(conn)
			continue
		}
		if in.ctx.Err() != nil {
			return
		}
		if errors.Is(err, portal.ErrClosed) || errors.Is(err, portal.ErrUnavailable) {
			// The listener is gone (a portal plugin died): listen again
			// on the same address until it works or the inlet closes.
			if !in.relisten(gen, err) {
				return
			}
			continue
		}
		// Accept errors such as EMFILE pass; back off instead of spinning.
		in.log.Warn("accept failed", "error", err)
		select {
		case <-time.After(backoff):
		case <-in.ctx.Done():
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (in *Inlet) listener() (portal.Listener, int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.ln, in.lnGen
}

// relisten replaces the listener of generation gen, which failed with
// cause: it listens again at the bound address with capped backoff. Only
// the first acceptor to see a generation fail does the work; the others
// wait for it. It returns false once the inlet is closing.
func (in *Inlet) relisten(gen int, cause error) bool {
	in.relistenMu.Lock()
	defer in.relistenMu.Unlock()
	if _, cur := in.listener(); cur != gen {
		return in.ctx.Err() == nil
	}
	in.log.Warn("listener lost; listening again", "error", cause)
	old, _ := in.listener()
	old.Close()
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(in.ctx, 30*time.Second)
		ln, err := in.opts.Portal.Listen(ctx, in.addr)
		cancel()
		if err == nil {
			in.mu.Lock()
			closed := in.closed
			if !closed {
				in.ln = ln
				in.lnGen++
			}
			in.mu.Unlock()
			if closed {
				ln.Close()
				return false
			}
			in.log.Info("listening again")
			return true
		}
		in.state.set(StateDown, fmt.Errorf("listen on %s: %w", in.addr, err))
		select {
		case <-time.After(backoff):
		case <-in.ctx.Done():
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (in *Inlet) startSession(conn portal.Stream) {
	in.mu.Lock()
	full := len(in.sessions) >= in.opts.MaxSessions
	in.mu.Unlock()
	if full {
		in.refused.Add(1)
		in.limiter.Warn(in.log, "inlet full", "client reset: the inlet holds its maximum of sessions", "max_sessions", in.opts.MaxSessions)
		resetStream(conn)
		conn.Close()
		return
	}
	s := newSession(in.opts.Session, &in.stats, conn, in.log, &in.wg, in.sessionEnded)
	s.base = in.opts.Route
	open := (&frame{kind: kindOpen, version: ProtocolVersion, id: newSessionID(), window: uint64(in.opts.Session.Window)}).encode()
	s.earlyOpen = open
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		conn.Close()
		in.stats.active.Add(-1)
		return
	}
	in.sessions[s] = struct{}{}
	in.mu.Unlock()
	if _, err := in.n.StartWorker("", s, node.WithKind("tcp-inlet-session")); err != nil {
		s.end(fmt.Errorf("start session worker: %w", err), false)
		return
	}
	// Read the client at once: its first bytes go out as early data
	// right behind the open.
	s.startReader()
	in.wg.Add(1)
	go func() { defer in.wg.Done(); in.open(s, open) }()
}

func (in *Inlet) sessionEnded(s *session, err error) {
	in.mu.Lock()
	delete(in.sessions, s)
	in.mu.Unlock()
	if err == nil {
		return
	}
	select {
	case <-s.opened:
		in.limiter.Info(in.log, "session ended", "session ended", "session", s.addr.String(), "error", err)
	default:
		// The client never got a session: say why it was closed.
		in.limiter.Warn(in.log, "no session", "closed client connection: no portal session", "error", err)
	}
}

// open sends open frames until the outlet answers, the open timeout passes
// or the path is known to be down.
func (in *Inlet) open(s *session, msg []byte) {
	deadline := time.NewTimer(in.opts.OpenTimeout)
	defer deadline.Stop()
	backoff := 20 * time.Millisecond
	const resend = time.Second // an open or opened lost on a lossy route
	for {
		s.mu.Lock()
		if s.openSentAt.IsZero() {
			s.openSentAt = time.Now()
		} else {
			s.openResent = true
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(s.c, in.opts.OpenTimeout)
		err := s.c.Send(ctx, in.opts.Route, bytes.Clone(msg))
		cancel()
		wait := resend
		if err != nil {
			err = fmt.Errorf("outlet not reachable along %s: %w", in.opts.Route, err)
			if !in.waiting() {
				in.state.set(StateDown, err)
				s.end(err, false)
				return
			}
			in.state.set(StateConnecting, err)
			wait, backoff = backoff, min(2*backoff, 500*time.Millisecond)
		}
		select {
		case <-s.opened:
			in.state.set(StateUp, nil)
			s.startRest()
			return
		case <-s.done:
			// The outlet refused (its reason is the session's error).
			return
		case <-deadline.C:
			err := fmt.Errorf("outlet along %s did not answer within %s", in.opts.Route, in.opts.OpenTimeout)
			in.state.set(StateDown, err)
			s.end(err, false)
			return
		case <-time.After(wait):
		}
	}
}

// probeLoop keeps Status honest: ping the outlet, quickly while never
// reached, at ProbeInterval once up.
func (in *Inlet) probeLoop() {
	ping := (&frame{kind: kindPing}).encode()
	backoff := 100 * time.Millisecond
	for {
		timeout := min(in.opts.OpenTimeout, 5*time.Second)
		ctx, cancel := context.WithTimeout(in.ctx, timeout)
		m, err := in.n.SendAndReceive(ctx, in.opts.Route, ping)
		cancel()
		if in.ctx.Err() != nil {
			return
		}
		if err == nil {
			if f, ferr := decodeFrame(m.Payload); ferr != nil || f.kind != kindPong {
				err = fmt.Errorf("the worker at %s is not a portal outlet", in.opts.Route)
			}
		}
		wait := in.opts.ProbeInterval
		if err != nil {
			err = fmt.Errorf("probe outlet along %s: %w", in.opts.Route, err)
			st, _ := in.state.get()
			switch {
			case in.waiting():
				in.state.set(StateConnecting, err)
				wait, backoff = backoff, min(2*backoff, 2*time.Second)
			case st != StateDown:
				in.log.Warn("path to outlet is down", "error", err)
				in.state.set(StateDown, err)
			default:
				in.state.set(StateDown, err)
			}
		} else {
			backoff = 100 * time.Millisecond
			in.state.set(StateUp, nil)
		}
		select {
		case <-time.After(wait):
		case <-in.ctx.Done():
			return
		}
	}
}
