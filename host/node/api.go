package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferryhq/ferry/sdk/routing"
)

// detachedMailbox is the default bound of a detached context's mailbox.
const detachedMailbox = 64

type detached struct{}

func (detached) HandleMessage(*Context, *routing.Message) error { return nil }

// NewContext creates a detached context: an address with a mailbox that code
// outside any worker reads with Receive. An empty addr gets a random id.
// Close it when done.
func (n *Node) NewContext(addr string, opts ...WorkerOption) (*Context, error) {
	if n.stopping.Load() {
		return nil, ErrNodeStopped
	}
	o := workerOptions{mailbox: detachedMailbox, kind: "context"}
	for _, opt := range opts {
		opt(&o)
	}
	if addr == "" {
		addr = NewWorkerID()
	}
	wk := n.newWorker(addr, detached{}, o)
	for _, a := range wk.addrs {
		if err := validLocal(a); err != nil {
			return nil, fmt.Errorf("new context: %w", err)
		}
	}
	wk.inbox = make(chan routing.Message, wk.limit)
	if err := n.register(wk); err != nil {
		wk.abandon()
		return nil, err
	}
	return &wk.ctx, nil
}

// Receive waits for the next message sent to a detached context.
func (c *Context) Receive(ctx context.Context) (*routing.Message, error) {
	if c.w.inbox == nil {
		return nil, errors.New("receive: only detached contexts (Node.NewContext) have a mailbox to read; workers get messages in HandleMessage")
	}
	select {
	case m := <-c.w.inbox:
		return &m, nil
	default:
	}
	select {
	case m := <-c.w.inbox:
		return &m, nil
	case <-c.w.Done():
		return nil, fmt.Errorf("receive at %s: %w", c.self[0], ErrWorkerStopped)
	case <-ctx.Done():
		return nil, fmt.Errorf("receive at %s: %w", c.self[0], ctx.Err())
	}
}

// SendAndReceive sends payload along route from a fresh temporary address and
// waits for the first reply, until ctx ends.
func (c *Context) SendAndReceive(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error) {
	return c.n.SendAndReceive(ctx, route, payload)
}

// Close stops a detached context.
func (c *Context) Close() { c.n.stopWorker(c.w) }

// Send sends payload along route from the node's "app" address.
func (n *Node) Send(ctx context.Context, route routing.Route, payload []byte) error {
	return n.app.Send(ctx, route, payload)
}

// Receive waits for the next message sent to the node's "app" address.
func (n *Node) Receive(ctx context.Context) (*routing.Message, error) {
	return n.app.Receive(ctx)
}

// App returns the detached context behind the node's "app" address.
func (n *Node) App() *Context { return n.app }

// SendAndReceive sends payload along route from a fresh temporary address
// and returns the first message that comes back, or an error when ctx ends
// (use context.WithTimeout for a timeout). When what comes back is an error
// message (a node on the way could not deliver), the error wraps a
// *RemoteError with the cause and the node that reported it.
func (n *Node) SendAndReceive(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error) {
	tmp, err := n.NewContext("", WithMailboxSize(4))
	if err != nil {
		return nil, err
	}
	defer tmp.Close()
	if err := tmp.Send(ctx, route, payload); err != nil {
		return nil, err
	}
	m, err := tmp.Receive(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait for reply from %s: %w", route, err)
	}
	if re, ok := AsRemoteError(m); ok {
		return nil, fmt.Errorf("send to %s: %w", route, re)
	}
	return m, nil
}

// Payload is a type the typed helpers carry as a message payload.
type Payload interface{ ~string | ~[]byte }

// SendAs sends v from the node's "app" address.
func SendAs[T Payload](ctx context.Context, n *Node, route routing.Route, v T) error {
	return n.Send(ctx, route, []byte(v))
}

// ReceiveAs waits for the next message to the node's "app" address and
// returns its payload as T with the message's return route.
func ReceiveAs[T Payload](ctx context.Context, n *Node) (T, routing.Route, error) {
	m, err := n.Receive(ctx)
	if err != nil {
		var zero T
		return zero, nil, err
	}
	return T(m.Payload), m.Return, nil
}

// Request sends v along route and returns the reply's payload as T.
func Request[T Payload](ctx context.Context, n *Node, route routing.Route, v T) (T, error) {
	m, err := n.SendAndReceive(ctx, route, []byte(v))
	if err != nil {
		var zero T
		return zero, err
	}
	return T(m.Payload), nil
}
