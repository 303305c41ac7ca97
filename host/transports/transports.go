// Package transports binds a transport.Transport to a node: every link the
// transport carries (accepted by a listener or dialled) becomes a worker on
// the node, messages routed to that worker go out on the link, and messages
// arriving on it are delivered to the node with the worker's address at the
// front of their return route, so replies go back over the same link.
//
// Network input is denied by default. A listener and a dialled connection
// each have a flow; only the local addresses passed as allow when the
// listener or connection was made may receive messages that arrive on it.
// Replies to a local worker that sent out through a link are allowed by the
// node itself (node.WithOutboundFlow). Everything else is dropped and logged
// at debug level; the link stays up.
//
// Failures: a broken link stops its worker, so a send to it fails with
// node.ErrNoRoute instead of hanging. A connection made with Connect is
// re-dialled with capped exponential backoff and comes back at the same
// worker address, so routes that name it keep working; a listener whose
// Accept fails (for example because a plugin process crashed) is re-opened
// on the address it was bound to. Reconnect cuts the backoff short; Attach
// subscribes to a supervised plugin (*plugins.Transport) and calls it when
// the plugin has been restarted.
//
// Performance: each link has a writer goroutine that packs every packet
// queued at the moment into one Link.Send (one crossing of the plugin
// boundary per batch) and a reader goroutine that decodes and delivers.
// Encoded packets are pooled and reused once Link.Send returns, so a Link
// must copy or write the packets before Send returns (the TCP transport and
// the plugin client both do). A payload its sender handed over with the
// message (routing.LocalInfo.PayloadOwned, a portal's data chunk) goes back
// to the shared payload pools (internal/payloadbuf) once it is encoded, and
// an arriving portal data frame is decoded into a buffer of those pools,
// which the receiving portal session recycles: on a portal path over a
// transport no data buffer is allocated per chunk. A destination whose
// mailbox is full slows the link's reader, which in turn slows the sender
// on the other side.
//
// Limits against the network: the bytes waiting to be written are bounded
// per link (Options.QueueBytes, 16 MiB) and for all links of a binding
// (Options.TotalQueueBytes, 256 MiB); a link worker's mailbox holds about
// one message; a peer that does not take what is sent to it (it asks for
// replies and never reads them) loses its link after Options.StallTimeout
// (30 s) instead of making the node buffer. So one peer holds at most about
// QueueBytes plus one message in flight per direction, and all peers
// together TotalQueueBytes plus one message each. Messages from the network
// never make the node dial: the resolver refuses (node.ErrDialRefused)
// unless a connection to the address is already open, and an error goes
// back to the sender. Repeated warnings are rate-limited per cause
// (host/logging).
package transports

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/logging"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// ErrClosed is returned by operations on a closed Binding.
var ErrClosed = errors.New("transport binding is closed")

// ErrNotFound is returned for an unknown listener or connection id.
var ErrNotFound = errors.New("no such listener or connection")

// Options tunes a Binding. The zero value is usable.
type Options struct {
	// Logger receives the binding's logs; default: the node's logger, named
	// after the transport.
	Logger hclog.Logger
	// Settings, when not nil, are passed to Transport.Configure by Attach.
	// Leave nil when the caller configured the transport already.
	Settings map[string]string
	// MaxMessageSize bounds an encoded message; default: the transport's
	// limit as configured (transport.EffectiveMaxMessageSize: its
	// max_message_size setting or what it reports after Configure), else
	// routing.DefaultMaxMessageSize. A larger message sent over a link
	// fails at once with an error wrapping transport.ErrTooLarge, reported
	// back along its return route; the link stays up.
	MaxMessageSize int
	// MinBackoff and MaxBackoff bound the wait between re-dial and re-listen
	// attempts; defaults 50ms and 5s. The wait doubles after each failure.
	MinBackoff, MaxBackoff time.Duration
	// MaxBatch bounds how many packets go into one Link.Send; default 256.
	MaxBatch int
	// QueueSize bounds the packets waiting to be written on one link; a
	// full queue slows the sending worker (backpressure). Default 1024.
	QueueSize int
	// QueueBytes bounds the bytes waiting to be written on one link (one
	// packet is always let in, whatever its size); default
	// DefaultQueueBytes. TotalQueueBytes bounds them for all links of the
	// binding together; default DefaultTotalQueueBytes.
	QueueBytes, TotalQueueBytes int64
	// StallTimeout closes a link whose peer does not take what is sent to
	// it: a write that makes no progress, or a full queue that gets no
	// room, for this long. Default DefaultStallTimeout.
	StallTimeout time.Duration
}

// Defaults for Options.
const (
	DefaultQueueBytes      = 16 << 20
	DefaultTotalQueueBytes = 256 << 20
	DefaultStallTimeout    = 30 * time.Second
)

// ListenerInfo describes a listener.
type ListenerInfo struct {
	ID      string   `json:"id"`
	Address string   `json:"address"` // the bound address, with the real port
	Flow    string   `json:"flow"`
	Allowed []string `json:"allowed"` // local addresses network input may reach
	Up      bool     `json:"up"`      // false while being re-opened
}

// ConnectionInfo describes one link.
type ConnectionInfo struct {
	ID string `json:"id"`
	// Worker is the local address to put in routes to send over this link.
	Worker   routing.Address `json:"worker"`
	Flow     string          `json:"flow"`
	Local    string          `json:"local"`
	Remote   string          `json:"remote"`
	Listener string          `json:"listener,omitempty"` // id of the listener that accepted it
	// Dialled is the address given to Connect or resolved from a route; empty
	// for accepted links.
	Dialled string   `json:"dialled,omitempty"`
	Allowed []string `json:"allowed,omitempty"`
	// Redial is true for Connect'ed connections, which come back after a
	// failure at the same worker address.
	Redial bool `json:"redial"`
	Up     bool `json:"up"`
}

// Binding is a transport bound to a node.
type Binding struct {
	n     *node.Node
	t     transport.Transport
	info  transport.Info
	log   hclog.Logger
	codec routing.Codec
	opts  Options
	kind  string
	// limitFrom says where opts.MaxMessageSize comes from when it is below
	// the transport's own maximum ("setting max_message_size"); empty
	// otherwise.
	limitFrom string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	listeners map[string]*listener
	conns     map[string]*conn
	dialing   map[string]*pendingDial // resolver dials in flight, by address
	kick      chan struct{}           // closed and replaced by Reconnect

	queued  byteBudget // bytes in every link's write queue
	limiter *logging.Limiter
}

type pendingDial struct {
	done chan struct{}
	c    *conn
	err  error
}

// Attach binds t to n and registers a resolver for t.Info().AddressType, so
// routes such as /tcp/127.0.0.1:4000/service/echo work. The caller keeps
// ownership of t: Close closes the binding's links and listeners but not
// the transport. The binding closes itself when the node shuts down.
func Attach(n *node.Node, t transport.Transport, opts Options) (*Binding, error) {
	if n == nil || t == nil {
		return nil, errors.New("attach transport: node and transport must not be nil")
	}
	info := t.Info()
	if info.AddressType == "" {
		return nil, fmt.Errorf("attach transport %q: it declares no address type", info.Name)
	}
	if _, err := routing.NewAddress(info.AddressType, "x"); err != nil {
		return nil, fmt.Errorf("attach transport %q: bad address type: %w", info.Name, err)
	}
	if opts.Logger == nil {
		opts.Logger = n.Logger().Named("transport-" + info.AddressType)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	if opts.TotalQueueBytes <= 0 {
		opts.TotalQueueBytes = DefaultTotalQueueBytes
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.Settings != nil {
		ctx, cancel := context.WithTimeout(n.Context(), 30*time.Second)
		err := t.Configure(ctx, opts.Settings)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("configure transport %q: %w", info.Name, err)
		}
	}
	// The configured limit, known only now: sends above it must fail
	// here, before they reach the transport (across a plugin boundary a
	// refused packet would otherwise cost the whole link).
	limitFrom := "option MaxMessageSize"
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = transport.EffectiveMaxMessageSize(t, opts.Settings)
		limitFrom = "as the transport reports it configured"
		if slices.ContainsFunc(info.Settings, func(s transport.Setting) bool { return s.Name == transport.SettingMaxMessageSize }) {
			limitFrom = "setting " + transport.SettingMaxMessageSize
		}
		if opts.MaxMessageSize <= 0 || opts.MaxMessageSize >= info.MaxMessageSize {
			limitFrom = ""
		}
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = routing.DefaultMaxMessageSize
	}
	b := &Binding{
		n: n, t: t, info: info, log: opts.Logger, opts: opts, limitFrom: limitFrom,
		codec:     routing.Codec{MaxSize: opts.MaxMessageSize},
		kind:      info.AddressType + "-connection",
		listeners: map[string]*listener{},
		conns:     map[string]*conn{},
		dialing:   map[string]*pendingDial{},
		kick:      make(chan struct{}),
		limiter:   logging.NewLimiter(0, 0),
	}
	b.queued.init(opts.TotalQueueBytes)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	n.RegisterResolver(info.AddressType, node.ResolverFunc(b.Resolve))
	if p, ok := t.(*plugins.Transport); ok {
		// Links and listeners fail when the plugin process dies and their
		// loops retry with backoff; a restart makes them retry at once.
		unsubscribe := p.Subscribe(func(e plugins.Event) {
			switch e.Kind {
			case plugins.Restarted:
				b.log.Info("plugin restarted; re-opening listeners and re-dialling connections", "plugin", e.Plugin, "pid", e.Pid)
				b.Reconnect()
			case plugins.GaveUp:
				b.log.Error("plugin degraded: restarts keep failing and are retried at a long interval; its links stay down until one works", "plugin", e.Plugin, "error", e.Err)
			}
		})
		context.AfterFunc(b.ctx, unsubscribe)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case <-n.Done():
			go b.Close() // Close waits for this goroutine
		case <-b.ctx.Done():
		}
	}()
	return b, nil
}

// Transport returns the bound transport.
func (b *Binding) Transport() transport.Transport { return b.t }

// localAddrs checks and normalises allow lists: "echoer", "/service/echoer"
// and "/worker/<id>" are accepted.
func localAddrs(allow []string) ([]string, error) {
	out := make([]string, 0, len(allow))
	for _, a := range allow {
		v := a
		if strings.HasPrefix(a, "/") {
			addr, err := routing.ParseAddress(a)
			if err != nil {
				return nil, fmt.Errorf("allowed consumer: %w", err)
			}
			if !addr.IsLocal() {
				return nil, fmt.Errorf("allowed consumer %s is not a local address; write /service/NAME or /worker/ID", a)
			}
			v = addr.Value
		}
		if v == "" || len(v) > routing.MaxValueLen {
			return nil, fmt.Errorf("allowed consumer %q: want a local worker name", a)
		}
		out = append(out, v)
	}
	sort.Strings(out)
	return out, nil
}

// Listen starts accepting links at addr. Messages arriving on any of them
// may reach only the local addresses in allow.
func (b *Binding) Listen(ctx context.Context, addr string, allow ...string) (ListenerInfo, error) {
	allowed, err := localAddrs(allow)
	if err != nil {
		return ListenerInfo{}, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if b.isClosed() {
		return ListenerInfo{}, fmt.Errorf("listen on %s: %w", addr, ErrClosed)
	}
	tl, err := b.t.Listen(ctx, addr)
	if err != nil {
		return ListenerInfo{}, fmt.Errorf("listen on %s: %w", addr, err)
	}
	id := node.NewWorkerID()
	l := &listener{b: b, id: id, flow: "listener/" + id, allowed: allowed, addr: tl.Addr(), tl: tl, up: true, fin: make(chan struct{})}
	for _, a := range allowed {
		b.n.AllowConsumer(l.flow, a)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		tl.Close()
		b.n.RemoveFlow(l.flow)
		return ListenerInfo{}, fmt.Errorf("listen on %s: %w", addr, ErrClosed)
	}
	l.ctx, l.cancel = context.WithCancel(b.ctx)
	b.listeners[id] = l
	b.wg.Add(1)
	b.mu.Unlock()
	go l.run()
	b.log.Debug("listening", "address", l.addr, "id", id, "allowed", allowed)
	return l.info(), nil
}

// Connect dials addr and keeps the connection up: after a failure it is
// re-dialled with capped exponential backoff at the same worker address.
// Messages arriving on it may reach only the local addresses in allow, plus
// replies to workers that sent out through it.
func (b *Binding) Connect(ctx context.Context, addr string, allow ...string) (ConnectionInfo, error) {
	allowed, err := localAddrs(allow)
	if err != nil {
		return ConnectionInfo{}, fmt.Errorf("connect to %s: %w", addr, err)
	}
	c, err := b.dial(ctx, "", addr, allowed, true)
	if err != nil {
		return ConnectionInfo{}, err
	}
	return c.info(), nil
}

// ConnectAs is Connect with the connection's worker at id, a worker id (32
// lower-case hex digits) such as one an earlier ConnectionInfo reported. A
// node that restores its connections after a restart uses it so that
// routes naming /worker/<id> keep working.
func (b *Binding) ConnectAs(ctx context.Context, id, addr string, allow ...string) (ConnectionInfo, error) {
	if !routing.IsWorkerID(id) {
		return ConnectionInfo{}, fmt.Errorf("connect to %s: %q is not a worker id (%d lower-case hex digits)", addr, id, routing.WorkerIDLen)
	}
	allowed, err := localAddrs(allow)
	if err != nil {
		return ConnectionInfo{}, fmt.Errorf("connect to %s: %w", addr, err)
	}
	// Checked before dialling: the flow is named after the id, so a second
	// connection at a taken id must not touch the first one's consumers.
	b.mu.Lock()
	_, taken := b.conns[id]
	b.mu.Unlock()
	if taken {
		return ConnectionInfo{}, fmt.Errorf("connect to %s: worker %s: %w", addr, routing.Local(id), node.ErrAddressInUse)
	}
	c, err := b.dial(ctx, id, addr, allowed, true)
	if err != nil {
		return ConnectionInfo{}, err
	}
	return c.info(), nil
}

// dial opens a link to addr and starts its worker at id (a new id if empty).
func (b *Binding) dial(ctx context.Context, id, addr string, allowed []string, redial bool) (*conn, error) {
	if b.isClosed() {
		return nil, fmt.Errorf("connect to %s: %w", addr, ErrClosed)
	}
	if id == "" {
		id = node.NewWorkerID()
	}
	c := b.newConn(id, "connection/"+id, allowed, nil)
	c.dialled, c.redial = addr, redial
	link, release, err := b.dialLink(ctx, c.ctx, addr)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	for _, a := range allowed {
		b.n.AllowConsumer(c.flow, a)
	}
	if err := b.add(c); err != nil {
		link.Close()
		release()
		c.cancel()
		b.n.RemoveFlow(c.flow)
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if err := c.start(link, release); err != nil {
		link.Close()
		release()
		b.remove(c)
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	go c.supervise()
	b.log.Debug("connected", "address", addr, "worker", c.addr(), "redial", redial)
	return c, nil
}

// dialLink dials with a context that lives until release is called (when
// the link's session ends) or parent ends, but that gives up when the
// caller's ctx ends before the dial returns: a transport may tie the link's
// lifetime to the dial context.
func (b *Binding) dialLink(ctx, parent context.Context, addr string) (link transport.Link, release func(), err error) {
	dctx, dcancel := context.WithCancel(parent)
	stop := context.AfterFunc(ctx, dcancel)
	link, err = b.t.Dial(dctx, addr)
	if !stop() && err == nil {
		// The caller gave up while the dial succeeded; the link may already
		// be tied to a cancelled context.
		link.Close()
		dcancel()
		return nil, nil, ctx.Err()
	}
	if err != nil {
		dcancel()
		return nil, nil, err
	}
	return link, dcancel, nil
}

// add registers a connection; it fails once the binding is closed.
func (b *Binding) add(c *conn) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if _, dup := b.conns[c.id]; dup {
		return fmt.Errorf("worker %s: %w", routing.Local(c.id), node.ErrAddressInUse)
	}
	b.conns[c.id] = c
	b.wg.Add(1)
	return nil
}

// remove forgets a connection and its flow. The caller ends its goroutines.
func (b *Binding) remove(c *conn) {
	b.mu.Lock()
	if b.conns[c.id] == c {
		delete(b.conns, c.id)
		b.wg.Done()
	}
	b.mu.Unlock()
	c.cancel()
	if c.listener == nil {
		b.n.RemoveFlow(c.flow)
	} else {
		c.listener.release()
	}
}

func (b *Binding) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Resolve turns /TYPE/ADDR into the worker of an open outgoing connection
// to ADDR, dialling one when there is none; it is the node.Resolver Attach
// registers. Concurrent resolutions of one address share a single dial.
func (b *Binding) Resolve(ctx context.Context, a routing.Address) (routing.Address, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return routing.Address{}, ErrClosed
	}
	for _, c := range b.conns {
		if c.dialled == a.Value && c.isUp() {
			b.mu.Unlock()
			return c.addr(), nil
		}
	}
	if !node.MayDial(ctx) {
		b.mu.Unlock()
		return routing.Address{}, fmt.Errorf("%s has no open connection and the message came from a network: %w", a, node.ErrDialRefused)
	}
	p := b.dialing[a.Value]
	if p == nil {
		p = &pendingDial{done: make(chan struct{})}
		b.dialing[a.Value] = p
		b.mu.Unlock()
		// The dial must not die with this one sender's context, since
		// others may be waiting on it; bound it instead.
		dctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		p.c, p.err = b.dial(dctx, "", a.Value, nil, false)
		cancel()
		b.mu.Lock()
		delete(b.dialing, a.Value)
		b.mu.Unlock()
		close(p.done)
	} else {
		b.mu.Unlock()
		select {
		case <-p.done:
		case <-ctx.Done():
			return routing.Address{}, fmt.Errorf("wait for connection to %s: %w", a.Value, ctx.Err())
		}
	}
	if p.err != nil {
		return routing.Address{}, p.err
	}
	return p.c.addr(), nil
}

// Listeners lists the listeners, sorted by id.
func (b *Binding) Listeners() []ListenerInfo {
	b.mu.Lock()
	ls := make([]*listener, 0, len(b.listeners))
	for _, l := range b.listeners {
		ls = append(ls, l)
	}
	b.mu.Unlock()
	out := make([]ListenerInfo, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Connections lists every link, accepted or dialled, sorted by id.
func (b *Binding) Connections() []ConnectionInfo {
	b.mu.Lock()
	cs := make([]*conn, 0, len(b.conns))
	for _, c := range b.conns {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	out := make([]ConnectionInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// CloseListener stops a listener. Links it accepted stay open.
func (b *Binding) CloseListener(ctx context.Context, id string) error {
	b.mu.Lock()
	l := b.listeners[id]
	b.mu.Unlock()
	if l == nil {
		return fmt.Errorf("close listener %s: %w", id, ErrNotFound)
	}
	l.close()
	select {
	case <-l.done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close listener %s: %w", id, ctx.Err())
	}
}

// CloseConnection closes a link and stops its worker; a Connect'ed
// connection is not re-dialled. Routes naming its worker then fail.
func (b *Binding) CloseConnection(ctx context.Context, id string) error {
	b.mu.Lock()
	c := b.conns[id]
	b.mu.Unlock()
	if c == nil {
		return fmt.Errorf("close connection %s: %w", id, ErrNotFound)
	}
	c.cancel()
	select {
	case <-c.finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close connection %s: %w", id, ctx.Err())
	}
}

// Reconnect wakes every re-dial and re-listen loop that is waiting out its
// backoff, so they try again now. Call it when the transport is known to be
// usable again, for example after a supervised plugin restarted.
func (b *Binding) Reconnect() {
	b.mu.Lock()
	close(b.kick)
	b.kick = make(chan struct{})
	b.mu.Unlock()
}

func (b *Binding) kicked() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kick
}

// wait sleeps d unless the binding or the given context ends (false) or
// Reconnect is called (true, early).
func (b *Binding) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.kicked():
		return true
	case <-ctx.Done():
		return false
	}
}

func (b *Binding) nextBackoff(d time.Duration) time.Duration {
	if d <= 0 {
		return b.opts.MinBackoff
	}
	d *= 2
	if d > b.opts.MaxBackoff {
		d = b.opts.MaxBackoff
	}
	return d
}

// Close closes every listener and link of the binding, stops their workers
// and unregisters the resolver. It does not close the transport.
func (b *Binding) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return nil
	}
	b.closed = true
	ls := make([]*listener, 0, len(b.listeners))
	for _, l := range b.listeners {
		ls = append(ls, l)
	}
	b.mu.Unlock()
	b.n.RegisterResolver(b.info.AddressType, nil)
	for _, l := range ls {
		l.close()
	}
	b.cancel()
	b.wg.Wait()
	return nil
}
