package node

import (
	"context"
	"fmt"

	"github.com/ferryhq/ferry/sdk/routing"
)

// Worker is a Go value that handles messages one at a time. It owns its
// state: the node never calls HandleMessage concurrently for one worker, so
// the worker needs no locks of its own.
type Worker interface {
	HandleMessage(c *Context, msg *routing.Message) error
}

// Initializer is implemented by workers that need to prepare before their
// first message. An error aborts StartWorker.
type Initializer interface {
	Initialize(c *Context) error
}

// ShutdownHook is implemented by workers that must release resources. The
// node calls it once, after the last message was handled.
type ShutdownHook interface {
	Shutdown(c *Context) error
}

// WorkerFunc adapts a function to the Worker interface.
type WorkerFunc func(c *Context, msg *routing.Message) error

// HandleMessage calls f.
func (f WorkerFunc) HandleMessage(c *Context, msg *routing.Message) error { return f(c, msg) }

// WorkerOption configures one worker at StartWorker.
type WorkerOption func(*workerOptions)

type workerOptions struct {
	extra        []string
	kind         string
	mailbox      int
	mailboxBytes int
	outboundFor  string
}

// WithMailboxBytes overrides the node's mailbox byte bound
// (Config.MailboxBytes) for this worker.
func WithMailboxBytes(n int) WorkerOption { return func(o *workerOptions) { o.mailboxBytes = n } }

// WithAddresses registers more local addresses for the same worker.
func WithAddresses(addrs ...string) WorkerOption {
	return func(o *workerOptions) { o.extra = append(o.extra, addrs...) }
}

// WithKind labels the worker for listings ("service", "tcp-connection", ...).
func WithKind(kind string) WorkerOption { return func(o *workerOptions) { o.kind = kind } }

// WithMailboxSize overrides the node's default mailbox bound for this worker.
func WithMailboxSize(n int) WorkerOption { return func(o *workerOptions) { o.mailbox = n } }

// WithOutboundFlow marks the worker as the local end of a network link whose
// inbound messages carry flow. A local worker that sends through it is
// allowed to receive replies arriving on that flow.
func WithOutboundFlow(flow string) WorkerOption {
	return func(o *workerOptions) { o.outboundFor = flow }
}

// WorkerInfo describes a running worker for listings.
type WorkerInfo struct {
	Addresses []string `json:"addresses"`
	Kind      string   `json:"kind"`
	Queued    int      `json:"queued"`
}

// Context is what a worker handler sees: its own address, the node, and the
// operations to send. It is also a context.Context that is cancelled when the
// worker stops, so handlers can pass it to blocking calls.
type Context struct {
	context.Context
	n    *Node
	w    *worker
	self routing.Route // one hop: the primary address, shared read-only
}

// Address returns the worker's primary address.
func (c *Context) Address() routing.Address { return c.self[0] }

// Node returns the node the worker runs on.
func (c *Context) Node() *Node { return c.n }

// Send sends payload along route with this worker's address as the return
// route. It waits while the first hop's mailbox is full, until ctx ends.
func (c *Context) Send(ctx context.Context, route routing.Route, payload []byte) error {
	return c.n.route(ctx, c.w, &routing.Message{Onward: route, Return: c.self, Payload: payload}, false)
}

// SendOwned is Send for a payload handed over with the message: the caller
// never touches it again, so a transport link may recycle the buffer once it
// has encoded the message (routing.LocalInfo.PayloadOwned).
func (c *Context) SendOwned(ctx context.Context, route routing.Route, payload []byte) error {
	return c.n.route(ctx, c.w, &routing.Message{Onward: route, Return: c.self, Payload: payload, Local: routing.LocalInfo{PayloadOwned: true}}, false)
}

// SendOwnedInline is SendOwned for a goroutine of the worker's own that is
// not running a handler (a reader feeding the worker's peer, say): when the
// next hop is a local worker with nothing queued and nothing running, its
// handler runs on the calling goroutine before SendOwnedInline returns,
// instead of on a runner the node wakes for it. That saves a goroutine
// hand-off per message when messages come one at a time (a request and its
// reply); a busy worker gets the message queued as with SendOwned, so
// ordering and one-message-at-a-time handling are unchanged. Never call it
// from a handler: the handler it runs could wait on the one calling it.
func (c *Context) SendOwnedInline(ctx context.Context, route routing.Route, payload []byte) error {
	return c.n.routeMsg(ctx, c.w, &routing.Message{Onward: route, Return: c.self, Payload: payload, Local: routing.LocalInfo{PayloadOwned: true}}, true)
}

// SendMessage sends msg as it is, keeping its return route; hop-like workers
// use it after stepping and prepending. It routes on the original sender's
// behalf: a failure is also reported back along msg's return route, and
// when msg came from a network (msg.Local.Origin, which such workers should
// copy from the message they pass on) it may leave only over existing links.
func (c *Context) SendMessage(ctx context.Context, msg *routing.Message) error {
	return c.n.route(ctx, c.w, msg, true)
}

// ReportUndeliverable sends an error message for msg back along its return
// route (see Node.ReportUndeliverable).
func (c *Context) ReportUndeliverable(msg *routing.Message, err error) {
	c.n.ReportUndeliverable(msg, err)
}

// Reply sends payload along the return route of msg.
func (c *Context) Reply(ctx context.Context, msg *routing.Message, payload []byte) error {
	return c.Send(ctx, msg.Return, payload)
}

// Forward steps this worker off the front of msg's onward route, puts its
// address at the front of the return route, and sends the message on, on
// the original sender's behalf (see SendMessage). A return route already at
// routing.MaxHops (a routing loop) fails with ErrHopLimit, reported back.
func (c *Context) Forward(ctx context.Context, msg *routing.Message) error {
	_, onward, err := msg.Onward.Step()
	if err != nil {
		return err
	}
	ret, err := msg.Return.Prepend(c.self[0])
	if err != nil {
		err = fmt.Errorf("forward at %s: %w: %v", c.self[0], ErrHopLimit, err)
		c.n.bounce(msg, nil, err)
		return err
	}
	return c.n.route(ctx, c.w, &routing.Message{Onward: onward, Return: ret, Payload: msg.Payload, Local: routing.LocalInfo{Origin: originOf(msg)}}, true)
}

// Stop stops this worker after the current message; it does not wait, so it
// is safe to call from the worker's own handler.
func (c *Context) Stop() { c.n.stopWorker(c.w) }
