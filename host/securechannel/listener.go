package securechannel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// DefaultListenerAddress is where every node's secure channel listener runs
// by convention (/service/api).
const DefaultListenerAddress = "api"

// DefaultMaxPending bounds the handshakes a listener has in progress.
const DefaultMaxPending = 256

// ListenerConfig configures a listener.
type ListenerConfig struct {
	Config
	// Allow lists the local addresses that messages decrypted by this
	// listener's channels may reach (network-style deny by default: the
	// listener's flow admits only these). More can be added with
	// Listener.Allow.
	Allow []string
	// MaxPending bounds the handshakes in progress at once; a hello beyond
	// it is refused. Default DefaultMaxPending.
	MaxPending int
}

// Listener accepts secure channels: one responder channel worker per
// initiator that completes a handshake.
type Listener struct {
	n       *node.Node
	cfg     ListenerConfig
	addr    routing.Address
	flow    string
	stats   counters
	pending atomic.Int64

	mu       sync.Mutex
	channels map[string]*channel // by local address value
	hellos   map[string]*channel // handshakes in progress, by the hello's ephemeral key
	closed   bool
}

// Listen starts a listener at the local address addr (DefaultListenerAddress
// when empty). The listener address itself must be allowed on the network
// flows initiators reach it through (for example a transport listener's
// allow list), like any other service.
func Listen(n *node.Node, addr string, cfg ListenerConfig) (*Listener, error) {
	if err := cfg.validate(n); err != nil {
		return nil, err
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if addr == "" {
		addr = DefaultListenerAddress
	}
	l := &Listener{n: n, cfg: cfg, channels: map[string]*channel{}, hellos: map[string]*channel{}}
	l.flow = "secure-channel-listener/" + node.NewWorkerID()
	a, err := n.StartWorker(addr, l, node.WithKind("secure-channel-listener"))
	if err != nil {
		return nil, fmt.Errorf("start secure channel listener: %w", err)
	}
	l.addr = a
	for _, c := range cfg.Allow {
		l.Allow(c)
	}
	return l, nil
}

// Address returns the listener's address.
func (l *Listener) Address() routing.Address { return l.addr }

// Identifier returns the identifier the listener proves.
func (l *Listener) Identifier() string { return l.cfg.Identity.Identifier }

// Flow is the flow decrypted messages carry; consumers allowed on it may
// receive them.
func (l *Listener) Flow() string { return l.flow }

// Allow lets messages decrypted by this listener's channels reach the local
// worker at addr ("uppercase", or "/service/uppercase").
func (l *Listener) Allow(addr string) {
	if r, err := routing.ParseRoute(addr); err == nil && len(r) == 1 && r[0].IsLocal() {
		addr = r[0].Value
	}
	l.n.AllowConsumer(l.flow, addr)
}

// Authorize adds identifiers to those the listener accepts. A listener
// made with an empty Authorized list accepts every identity; once it has
// one entry it accepts only those listed.
func (l *Listener) Authorize(ids ...string) error {
	for _, id := range ids {
		if err := identity.ValidIdentifier(id); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.cfg.Authorized = append(l.cfg.Authorized, ids...)
	l.mu.Unlock()
	return nil
}

// Stats sums the counters of every channel the listener accepted.
func (l *Listener) Stats() Stats { return l.stats.snapshot() }

// Channels lists the listener's channels that are open.
func (l *Listener) Channels() []Info {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Info, 0, len(l.channels))
	for _, ch := range l.channels {
		if ch.state.Load() == stateOpen {
			out = append(out, ch.info())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

// Close stops the listener and every channel it accepted.
func (l *Listener) Close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	chs := make([]*channel, 0, len(l.channels))
	for _, ch := range l.channels {
		chs = append(chs, ch)
	}
	l.mu.Unlock()
	var errs []error
	if err := l.n.StopWorker(ctx, l.addr.Value); err != nil && !errors.Is(err, node.ErrNoRoute) {
		errs = append(errs, err)
	}
	for _, ch := range chs {
		if err := l.n.StopWorker(ctx, ch.local.Value); err != nil && !errors.Is(err, node.ErrNoRoute) {
			errs = append(errs, err)
		}
	}
	l.n.RemoveFlow(l.flow)
	l.n.ForgetConsumer(l.addr.Value)
	return errors.Join(errs...)
}

// HandleMessage answers a hello (handshake message 1) by starting a
// responder channel worker and sending message 2 from it. Anything else is
// counted and dropped: frames for a channel go to that channel's worker.
func (l *Listener) HandleMessage(c *node.Context, m *routing.Message) error {
	l.stats.c[cFramesReceived].Add(1)
	f, err := decodeFrame(m.Payload)
	if err != nil {
		l.stats.c[cMalformed].Add(1)
		l.cfg.Logger.Debug("dropped a frame that does not decode", "error", err, "return", m.Return.String())
		return nil
	}
	if f.typ != typeHello {
		l.stats.c[cUnexpected].Add(1)
		return nil
	}
	if len(m.Return) == 0 {
		l.stats.c[cMalformed].Add(1)
		return nil
	}
	// A hello seen before (the initiator retransmits while it waits for
	// message 2): answer again from the same responder instead of
	// starting another.
	key := string(f.body[:min(len(f.body), 32)])
	l.mu.Lock()
	dup := l.hellos[key]
	l.mu.Unlock()
	if dup != nil {
		if dup.state.Load() == stateHandshake {
			if err := dup.sendFrame(c, dup.reply); err != nil {
				l.cfg.Logger.Debug("could not answer a repeated hello", "error", err)
			}
		}
		return nil
	}
	if l.pending.Add(1) > int64(l.cfg.MaxPending) {
		l.pending.Add(-1)
		l.stats.c[cRefused].Add(1)
		l.cfg.Logger.Warn("secure channel hello refused: too many handshakes in progress", "limit", l.cfg.MaxPending)
		return nil
	}
	released := false
	release := func() {
		if !released {
			released = true
			l.pending.Add(-1)
			l.mu.Lock()
			delete(l.hellos, key)
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	cfg := l.cfg.Config
	cfg.Authorized = slices.Clone(cfg.Authorized)
	l.mu.Unlock()
	ch := newChannel(l.n, cfg, Responder, "")
	ch.parent = &l.stats
	ch.flow = l.flow
	ch.peerRoute = m.Return.Clone()
	ch.routeDesc = ch.peerRoute.String()
	ch.onHandshake = release
	ch.onClose = l.forget
	msg2, err := ch.consumeHello(f.body)
	if err != nil {
		release()
		l.stats.c[cMalformed].Add(1)
		l.cfg.Logger.Debug("dropped a hello", "error", err)
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		release()
		return nil
	}
	ch.reply = msg2
	l.channels[ch.local.Value] = ch
	l.hellos[key] = ch
	l.mu.Unlock()
	ch.timer = time.AfterFunc(l.cfg.HandshakeTimeout, func() { ch.expire(l.n) })
	if _, err := l.n.StartWorker(ch.local.Value, ch, node.WithAddresses(ch.wire.Value), node.WithKind("secure-channel"), node.WithOutboundFlow(l.flow)); err != nil {
		ch.timer.Stop()
		release()
		l.forget(ch)
		return fmt.Errorf("secure channel listener: start channel worker: %w", err)
	}
	// The peer's later frames arrive where its hello did.
	if m.Local.Flow != "" {
		l.n.AllowConsumer(m.Local.Flow, ch.wire.Value)
	}
	if err := ch.sendFrame(c, msg2); err != nil {
		ch.ctx.Stop()
		return err
	}
	return nil
}

func (l *Listener) forget(ch *channel) {
	l.mu.Lock()
	delete(l.channels, ch.local.Value)
	l.mu.Unlock()
}
