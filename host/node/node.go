// Package node is Ferry's runtime: workers with bounded mailboxes, the router
// that moves messages between them and out through transports, access
// control for messages that arrive from a network, and the embedding API
// (Send, Receive, SendAndReceive) a Go program uses.
//
// An idle worker holds no goroutine: a goroutine is started when a message
// lands in an empty mailbox and exits once the mailbox is drained, so a node
// can hold millions of idle workers.
package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/routing"
)

// Errors a sender can test with errors.Is.
var (
	ErrNodeStopped    = errors.New("node is stopped")
	ErrNoRoute        = errors.New("no worker at address")
	ErrAddressInUse   = errors.New("address already in use")
	ErrWorkerStopped  = errors.New("worker stopped")
	ErrAccessDenied   = errors.New("access denied")
	ErrEmptyRoute     = errors.New("route is empty")
	ErrUnknownTranspt = errors.New("no transport for address type")
)

// DefaultMailboxSize is the mailbox bound when Config.MailboxSize is zero.
const DefaultMailboxSize = 1024

// DefaultMailboxBytes is the mailbox byte bound when Config.MailboxBytes is
// zero.
const DefaultMailboxBytes = 32 << 20

// AppAddress is the address of the embedding program's own mailbox, which
// Node.Send uses as return route and Node.Receive reads.
const AppAddress = "app"

// Config configures a node. The zero value is usable.
type Config struct {
	// Name identifies the node in logs.
	Name string
	// Logger receives the node's logs; default: a quiet hclog logger (warn).
	Logger hclog.Logger
	// MailboxSize bounds each worker's mailbox; default DefaultMailboxSize.
	MailboxSize int
	// MailboxBytes bounds the payload bytes queued in each worker's mailbox
	// (one message is always let into an empty mailbox); default
	// DefaultMailboxBytes. A full mailbox slows its senders, so a peer
	// whose replies are not taken cannot make the node buffer without
	// limit.
	MailboxBytes int
	// NetworkDialAllow lists transport addresses (route text such as
	// "/tcp/127.0.0.1:4000") that a message which arrived from a network
	// may make this node dial. Default none: such messages go out only over
	// links that exist, and a route naming any other transport address is
	// refused with an error sent back.
	NetworkDialAllow []string
	// ErrorsPerSecond and ErrorBurst rate-limit the error messages sent back
	// towards one source (a link; local workers count as one source);
	// defaults DefaultErrorsPerSecond and DefaultErrorBurst.
	ErrorsPerSecond float64
	ErrorBurst      int
	// NodeErrorsPerSecond bounds error messages from the whole node, with
	// bursts of twice as many; default DefaultNodeErrorsPerSecond.
	NodeErrorsPerSecond float64
}

// Resolver turns a non-local address (for example /tcp/127.0.0.1:4000) into
// the local address of the worker that carries messages there, dialling if
// needed. Transports register one per address type.
type Resolver interface {
	Resolve(ctx context.Context, addr routing.Address) (routing.Address, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, addr routing.Address) (routing.Address, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, a routing.Address) (routing.Address, error) {
	return f(ctx, a)
}

// shardBits sets the number of address-table shards (1<<shardBits).
const shardBits = 5

const shardCount = 1 << shardBits

// shard is one part of the address table. Addresses of exactly
// routing.WorkerIDLen bytes (every generated worker id) are kept in a map
// keyed by a byte array: such keys live inside the map's slots, so growing a
// map of a million ids does not chase a pointer per key. Other names are
// keyed by string.
type shard struct {
	mu      sync.RWMutex
	workers map[string]*worker
	ids     map[idKey]*worker
}

type idKey [routing.WorkerIDLen]byte

// parseID returns the array key of an id-sized address.
func parseID(addr string) (idKey, bool) {
	var k idKey
	if len(addr) != len(k) {
		return k, false
	}
	copy(k[:], addr)
	return k, true
}

// shard picks a shard for an id-sized key with a multiplicative hash of its
// first 8 bytes: generated ids are random, and other id-sized names only
// need a reasonable spread across locks.
func (k *idKey) shard() int {
	return int(binary.LittleEndian.Uint64(k[:8]) * 0x9E3779B97F4A7C15 >> (64 - shardBits))
}

func (s *shard) get(addr string) *worker {
	if k, ok := parseID(addr); ok {
		return s.ids[k]
	}
	return s.workers[addr]
}

func (s *shard) put(addr string, w *worker) {
	if k, ok := parseID(addr); ok {
		s.ids[k] = w
		return
	}
	s.workers[addr] = w
}

func (s *shard) del(addr string, w *worker) bool {
	if k, ok := parseID(addr); ok {
		if s.ids[k] == w {
			delete(s.ids, k)
			return true
		}
		return false
	}
	if s.workers[addr] == w {
		delete(s.workers, addr)
		return true
	}
	return false
}

// each calls f for every entry; the caller holds s.mu.
func (s *shard) each(f func(*worker)) {
	for _, w := range s.workers {
		f(w)
	}
	for _, w := range s.ids {
		f(w)
	}
}

// Node runs workers and routes messages between them.
type Node struct {
	name    string
	log     hclog.Logger
	mailbox int
	seed    maphash.Seed

	mailboxBytes int

	shards [shardCount]shard
	count  atomic.Int64

	resMu     sync.RWMutex
	resolvers map[string]Resolver
	fallback  Resolver // for address types nobody registered; may be nil

	flowMu    sync.RWMutex
	consumers map[string]map[string]struct{} // flow -> allowed local addresses

	life     context.Context
	cancel   context.CancelFunc
	stopping atomic.Bool
	active   atomic.Int64 // workers currently being run

	runq        chan *worker // hands a worker to an idle runner (runner.go)
	idleRunners atomic.Int64

	app *Context

	dialAllow map[routing.Address]struct{} // Config.NetworkDialAllow
	errs      errorLimiter
}

// New creates a running node with its "app" mailbox.
func New(cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Warn})
	}
	if cfg.Name != "" {
		log = log.With("node", cfg.Name)
	}
	mb := cfg.MailboxSize
	if mb <= 0 {
		mb = DefaultMailboxSize
	}
	mbb := cfg.MailboxBytes
	if mbb <= 0 {
		mbb = DefaultMailboxBytes
	}
	n := &Node{
		mailboxBytes: mbb,
		name:         cfg.Name,
		log:          log,
		mailbox:      mb,
		seed:         maphash.MakeSeed(),
		resolvers:    map[string]Resolver{},
		consumers:    map[string]map[string]struct{}{},
		runq:         make(chan *worker),
	}
	n.errs = errorLimiter{rate: cfg.ErrorsPerSecond, burst: float64(cfg.ErrorBurst), nodeRate: cfg.NodeErrorsPerSecond, sources: map[string]*tokenBucket{}}
	if n.errs.rate <= 0 {
		n.errs.rate = DefaultErrorsPerSecond
	}
	if n.errs.burst <= 0 {
		n.errs.burst = DefaultErrorBurst
	}
	if n.errs.nodeRate <= 0 {
		n.errs.nodeRate = DefaultNodeErrorsPerSecond
	}
	n.dialAllow = map[routing.Address]struct{}{}
	for _, a := range cfg.NetworkDialAllow {
		addr, err := routing.ParseAddress(a)
		if err != nil {
			return nil, fmt.Errorf("network dial allow %q: %w", a, err)
		}
		if addr.IsLocal() {
			return nil, fmt.Errorf("network dial allow %q: want a transport address such as /tcp/127.0.0.1:4000", a)
		}
		n.dialAllow[addr] = struct{}{}
	}
	for i := range n.shards {
		n.shards[i].workers = map[string]*worker{}
		n.shards[i].ids = map[idKey]*worker{}
	}
	n.life, n.cancel = context.WithCancel(context.Background())
	app, err := n.NewContext(AppAddress)
	if err != nil {
		return nil, err
	}
	n.app = app
	return n, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.name }

// Logger returns the node's logger.
func (n *Node) Logger() hclog.Logger { return n.log }

func (n *Node) shardIndex(addr string) int {
	if k, ok := parseID(addr); ok {
		return k.shard()
	}
	return int(maphash.String(n.seed, addr) % shardCount)
}

func (n *Node) shard(addr string) *shard { return &n.shards[n.shardIndex(addr)] }

func (n *Node) lookup(addr string) *worker {
	if k, ok := parseID(addr); ok { // parse once: this is every message's path
		s := &n.shards[k.shard()]
		s.mu.RLock()
		w := s.ids[k]
		s.mu.RUnlock()
		return w
	}
	s := &n.shards[maphash.String(n.seed, addr)%shardCount]
	s.mu.RLock()
	w := s.workers[addr]
	s.mu.RUnlock()
	return w
}

// NewWorkerID returns a fresh random worker id (32 hex digits).
func NewWorkerID() string {
	var b [routing.WorkerIDLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

func validLocal(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	if len(addr) > routing.MaxValueLen {
		return fmt.Errorf("address is %d bytes, the limit is %d", len(addr), routing.MaxValueLen)
	}
	return nil
}

// StartWorker starts w at addr (a fresh random id when addr is empty) and
// returns its primary address. Starting on an address in use is an error.
func (n *Node) StartWorker(addr string, w Worker, opts ...WorkerOption) (routing.Address, error) {
	if n.stopping.Load() {
		return routing.Address{}, ErrNodeStopped
	}
	var o workerOptions
	for _, opt := range opts {
		opt(&o)
	}
	generated := addr == ""
	if generated {
		addr = NewWorkerID()
	}
	wk := n.newWorker(addr, w, o)
	wk.generated = generated && len(o.extra) == 0
	addrs := wk.addrs
	for _, a := range addrs {
		if err := validLocal(a); err != nil {
			return routing.Address{}, fmt.Errorf("start worker: %w", err)
		}
	}
	if init, ok := w.(Initializer); ok {
		if err := safeCall(func() error { return init.Initialize(&wk.ctx) }); err != nil {
			wk.abandon()
			return routing.Address{}, fmt.Errorf("initialise worker %s: %w", addr, err)
		}
	}
	if err := n.register(wk); err != nil {
		wk.abandon()
		return routing.Address{}, err
	}
	if n.log.IsDebug() {
		n.log.Debug("worker started", "addresses", addrs, "kind", wk.kind)
	}
	return wk.ctx.self[0], nil
}

// newWorker builds a worker with addr as primary address plus o.extra.
func (n *Node) newWorker(addr string, w Worker, o workerOptions) *worker {
	mb := o.mailbox
	if mb <= 0 {
		mb = n.mailbox
	}
	mbb := o.mailboxBytes
	if mbb <= 0 {
		mbb = n.mailboxBytes
	}
	wk := &worker{n: n, h: w, kind: o.kind, limit: mb, byteLimit: mbb, outFlow: o.outboundFor}
	// The address list and the one-hop self route live inside the worker
	// so that an idle worker is one allocation (plus its id), not three.
	wk.addr0[0] = addr
	wk.addrs = wk.addr0[:]
	if len(o.extra) > 0 {
		wk.addrs = append([]string{addr}, o.extra...)
	}
	wk.self0[0] = routing.Local(addr)
	// The worker is its own context.Context (see workerctx.go): a
	// context.WithCancel per worker would cost a cancelCtx and an entry in
	// the node's child map for each of a million idle workers.
	wk.ctx = Context{Context: wk, n: n, w: wk, self: wk.self0[:]}
	return wk
}

// register adds every address of wk or none of them.
func (n *Node) register(wk *worker) error {
	if len(wk.addrs) == 1 {
		// The common case, kept free of allocations: starting a million
		// workers spends its time here.
		a := wk.addrs[0]
		s := n.shard(a)
		s.mu.Lock()
		defer s.mu.Unlock()
		if n.stopping.Load() {
			return ErrNodeStopped
		}
		// A fresh 128-bit random id cannot be taken (anyone choosing an id
		// explicitly goes through the check), so skip the lookup: at a
		// million workers it is a sixth of the start time.
		if !wk.generated {
			if s.get(a) != nil {
				return fmt.Errorf("start worker at %s: %w", routing.Local(a), ErrAddressInUse)
			}
		}
		s.put(a, wk)
		n.count.Add(1)
		return nil
	}
	// Lock shards in index order so concurrent multi-address registrations
	// cannot deadlock.
	idx := make([]int, 0, len(wk.addrs))
	for _, a := range wk.addrs {
		idx = append(idx, n.shardIndex(a))
	}
	sorted := append([]int(nil), idx...)
	sort.Ints(sorted)
	locked := sorted[:0:0]
	for i, s := range sorted {
		if i > 0 && s == sorted[i-1] {
			continue
		}
		n.shards[s].mu.Lock()
		locked = append(locked, s)
	}
	defer func() {
		for _, s := range locked {
			n.shards[s].mu.Unlock()
		}
	}()
	if n.stopping.Load() {
		return ErrNodeStopped
	}
	seen := map[string]bool{}
	for i, a := range wk.addrs {
		if n.shards[idx[i]].get(a) != nil || seen[a] {
			return fmt.Errorf("start worker at %s: %w", routing.Local(a), ErrAddressInUse)
		}
		seen[a] = true
	}
	for i, a := range wk.addrs {
		n.shards[idx[i]].put(a, wk)
	}
	n.count.Add(1)
	return nil
}

func (n *Node) unregister(wk *worker) {
	removed := false
	for _, a := range wk.addrs {
		s := n.shard(a)
		s.mu.Lock()
		if s.del(a, wk) {
			removed = true
		}
		s.mu.Unlock()
	}
	if removed {
		n.count.Add(-1)
	}
}

// StopWorker stops the worker at addr and waits, until ctx ends, for its
// shutdown hook to finish. Do not call it from the worker's own handler
// (use Context.Stop there).
func (n *Node) StopWorker(ctx context.Context, addr string) error {
	wk := n.lookup(addr)
	if wk == nil {
		return fmt.Errorf("stop worker %s: %w", routing.Local(addr), ErrNoRoute)
	}
	done := n.stopWorker(wk)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop worker %s: %w", routing.Local(addr), ctx.Err())
	}
}

// WorkerCount returns the number of running workers.
func (n *Node) WorkerCount() int { return int(n.count.Load()) }

// Workers lists the running workers, sorted by primary address.
func (n *Node) Workers() []WorkerInfo {
	var out []WorkerInfo
	seen := map[*worker]bool{}
	for i := range n.shards {
		s := &n.shards[i]
		s.mu.RLock()
		s.each(func(wk *worker) {
			if !seen[wk] {
				seen[wk] = true
				out = append(out, wk.info())
			}
		})
		s.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addresses[0] < out[j].Addresses[0] })
	return out
}

// RegisterResolver makes addresses of type typ routable through r.
func (n *Node) RegisterResolver(typ string, r Resolver) {
	n.resMu.Lock()
	defer n.resMu.Unlock()
	if r == nil {
		delete(n.resolvers, typ)
		return
	}
	n.resolvers[typ] = r
}

// SetFallbackResolver sets what resolves addresses of a type no transport
// has registered a Resolver for, for example one that starts the plugin
// named after the type on first use. nil removes it.
func (n *Node) SetFallbackResolver(r Resolver) {
	n.resMu.Lock()
	n.fallback = r
	n.resMu.Unlock()
}

// AllowConsumer lets messages that arrive on flow reach the local worker at
// addr. Network input is denied by default.
func (n *Node) AllowConsumer(flow, addr string) {
	n.flowMu.Lock()
	defer n.flowMu.Unlock()
	m := n.consumers[flow]
	if m == nil {
		m = map[string]struct{}{}
		n.consumers[flow] = m
	}
	m[addr] = struct{}{}
}

// ForgetConsumer removes addr from the consumers of every flow, so a worker
// started later at the same address does not inherit network access that
// was granted to a worker that has stopped.
func (n *Node) ForgetConsumer(addr string) {
	n.flowMu.Lock()
	defer n.flowMu.Unlock()
	for flow, m := range n.consumers {
		delete(m, addr)
		if len(m) == 0 {
			delete(n.consumers, flow)
		}
	}
}

// RemoveFlow forgets every consumer of flow.
func (n *Node) RemoveFlow(flow string) {
	n.flowMu.Lock()
	delete(n.consumers, flow)
	n.flowMu.Unlock()
}

// Consumers returns the addresses allowed to receive from flow.
func (n *Node) Consumers(flow string) []string {
	n.flowMu.RLock()
	defer n.flowMu.RUnlock()
	out := make([]string, 0, len(n.consumers[flow]))
	for a := range n.consumers[flow] {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func (n *Node) allowed(flow, addr string, wk *worker) bool {
	if wk.allowsReplies(flow) {
		return true
	}
	n.flowMu.RLock()
	_, ok := n.consumers[flow][addr]
	n.flowMu.RUnlock()
	return ok
}

// Deliver routes a message that arrived from outside the node's workers, for
// example from a transport link. msg.Local.Flow names the link so access
// control applies.
//
// Deliver routes on the sender's behalf: when it fails, an error message goes
// back along msg's return route (rate-limited) besides the returned error.
func (n *Node) Deliver(ctx context.Context, msg *routing.Message) error {
	return n.route(ctx, nil, msg, true)
}

// route moves msg to the worker named by its first onward hop, resolving
// transport addresses. from is the sending worker (nil for external input).
// onBehalf marks a message routed for someone other than the caller (network
// input, a hop or relay passing it on): its failure is reported back to the
// sender with an error message.
func (n *Node) route(ctx context.Context, from *worker, msg *routing.Message, onBehalf bool) error {
	err := n.routeMsg(ctx, from, msg, false)
	if err != nil && onBehalf {
		n.bounce(msg, nil, err)
	}
	return err
}

// routeMsg moves msg towards its next hop; with inline, an idle local
// destination handles it on the calling goroutine (worker.enqueueInline).
func (n *Node) routeMsg(ctx context.Context, from *worker, msg *routing.Message, inline bool) error {
	if n.stopping.Load() && !n.draining(from) {
		return ErrNodeStopped
	}
	next, ok := msg.Onward.Next()
	if !ok {
		return fmt.Errorf("route message: %w", ErrEmptyRoute)
	}
	origin := originOf(msg)
	if origin != msg.Local.Origin {
		m2 := *msg
		m2.Local.Origin = origin
		msg = &m2
	}
	if !next.IsLocal() {
		rctx := ctx
		_, allowed := n.dialAllow[routing.Address{Type: next.Type, Value: next.Value}]
		fromNet := origin != "" && !allowed
		if fromNet {
			rctx = context.WithValue(ctx, noDialKey{}, true)
		}
		n.resMu.RLock()
		r := n.resolvers[next.Type]
		if r == nil && !fromNet {
			// The fallback may start a plugin; network input must not.
			r = n.fallback
		}
		n.resMu.RUnlock()
		if r == nil {
			return fmt.Errorf("route to %s: %w %q; start that transport first", msg.Onward, ErrUnknownTranspt, next.Type)
		}
		local, err := r.Resolve(rctx, next)
		if err != nil {
			return fmt.Errorf("route to %s: %w", msg.Onward, err)
		}
		onward := make(routing.Route, len(msg.Onward))
		copy(onward, msg.Onward)
		onward[0] = local
		m2 := *msg
		m2.Onward = onward
		msg = &m2
		next = local
	}
	wk := n.lookup(next.Value)
	if wk == nil {
		return fmt.Errorf("route to %s: %w %s", msg.Onward, ErrNoRoute, next)
	}
	if flow := msg.Local.Flow; flow != "" && !n.allowed(flow, next.Value, wk) {
		n.log.Debug("message refused: destination not allowed for this flow", "flow", flow, "onward", msg.Onward.String(), "return", msg.Return.String())
		return fmt.Errorf("route to %s: %w: %s does not accept messages from %s", msg.Onward, ErrAccessDenied, next, flow)
	}
	if wk.outFlow != "" && from != nil && from != wk {
		from.allowReplies(wk.outFlow)
	}
	if inline {
		return wk.enqueueInline(ctx, msg)
	}
	return wk.enqueue(ctx, msg)
}

// draining reports whether a worker may still send while the node stops: a
// worker finishing its current message may reply.
func (n *Node) draining(from *worker) bool { return from != nil && !from.isStopped() }

// Shutdown stops every worker, runs their shutdown hooks and returns when
// they are done or ctx ends. Messages still queued are dropped and logged at
// debug level. Calling Shutdown twice is harmless. A handler that wants to
// stop its node must call Shutdown in a new goroutine: its own worker cannot
// finish until the handler returns.
func (n *Node) Shutdown(ctx context.Context) error {
	if n.stopping.Swap(true) {
		return nil
	}
	var all []*worker
	seen := map[*worker]bool{}
	for i := range n.shards {
		s := &n.shards[i]
		s.mu.RLock()
		s.each(func(wk *worker) {
			if !seen[wk] {
				seen[wk] = true
				all = append(all, wk)
			}
		})
		s.mu.RUnlock()
	}
	dones := make([]<-chan struct{}, 0, len(all))
	for _, wk := range all {
		dones = append(dones, n.stopWorker(wk))
	}
	n.cancel()
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return fmt.Errorf("shutdown node %s: %w", n.name, ctx.Err())
		}
	}
	return nil
}

// Done is closed when the node has begun shutting down.
func (n *Node) Done() <-chan struct{} { return n.life.Done() }

// Context returns a context cancelled when the node shuts down.
func (n *Node) Context() context.Context { return n.life }

func safeCall(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}
