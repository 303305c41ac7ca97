package transports_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

const testTimeout = 10 * time.Second

func newNode(t *testing.T, name string) *node.Node {
	t.Helper()
	n, err := node.New(node.Config{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	return n
}

func attach(t *testing.T, n *node.Node, tr transport.Transport) *transports.Binding {
	t.Helper()
	b, err := transports.Attach(n, tr, transports.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func startEcho(t *testing.T, n *node.Node, addr string) {
	t.Helper()
	if _, err := n.StartWorker(addr, services.Echo{}); err != nil {
		t.Fatal(err)
	}
}

// echoPath starts an echo worker at "echoer" on n, listens for it on lb
// (n's binding), connects to it from cb and returns the connection and the
// route to the echo through it, besides the listener.
func echoPath(t *testing.T, n *node.Node, lb, cb *transports.Binding) (transports.ListenerInfo, transports.ConnectionInfo, routing.Route) {
	t.Helper()
	startEcho(t, n, "echoer")
	l, err := lb.Listen(tctx(t), "127.0.0.1:0", "echoer")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cb.Connect(tctx(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	return l, c, route(t, c.Worker, "/service/echoer")
}

func route(t *testing.T, parts ...any) routing.Route {
	t.Helper()
	var r routing.Route
	for _, p := range parts {
		switch p := p.(type) {
		case routing.Address:
			r = append(r, p)
		case string:
			q, err := routing.ParseRoute(p)
			if err != nil {
				t.Fatal(err)
			}
			r = append(r, q...)
		default:
			t.Fatalf("route part %T", p)
		}
	}
	return r
}

func request(t *testing.T, n *node.Node, r routing.Route, payload string) {
	t.Helper()
	got, err := node.Request(tctx(t), n, r, payload)
	if err != nil {
		t.Fatalf("request %s: %v", r, err)
	}
	if got != payload {
		t.Fatalf("request %s: got %q, want %q", r, got, payload)
	}
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pair builds a responder node b with an echoer behind a listener and an
// initiator node a connected to it.
type pair struct {
	a, b   *node.Node
	ta, tb *memTransport
	ba, bb *transports.Binding
	l      transports.ListenerInfo
	c      transports.ConnectionInfo
}

func newPair(t *testing.T, net *memNet, allowA ...string) *pair {
	t.Helper()
	p := &pair{a: newNode(t, "a"), b: newNode(t, "b"), ta: net.transport(), tb: net.transport()}
	p.ba, p.bb = attach(t, p.a, p.ta), attach(t, p.b, p.tb)
	startEcho(t, p.b, "echoer")
	var err error
	if p.l, err = p.bb.Listen(tctx(t), "b:0", "echoer"); err != nil {
		t.Fatal(err)
	}
	if p.c, err = p.ba.Connect(tctx(t), p.l.Address, allowA...); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEchoOverLinkBothWays(t *testing.T) {
	p := newPair(t, newMemNet(), "echoer")
	if !routing.IsWorkerID(p.c.Worker.Value) || p.c.Worker.Value != p.c.ID {
		t.Fatalf("connection worker %v, id %s", p.c.Worker, p.c.ID)
	}
	// a → b through the connection worker.
	request(t, p.a, route(t, p.c.Worker, "/service/echoer"), "Hello Ferry!")
	// a → b through the resolver, which reuses the open connection.
	request(t, p.a, route(t, "/mem/"+p.l.Address+"/service/echoer"), "via resolver")
	if got := p.ta.dialCount(); got != 1 {
		t.Fatalf("resolver dialled again: %d dials", got)
	}
	// b → a through the accepted link's worker; a allowed "echoer" on its
	// connection.
	startEcho(t, p.a, "echoer")
	var acc []transports.ConnectionInfo
	eventually(t, "accepted link listed", func() bool { acc = p.bb.Connections(); return len(acc) == 1 })
	if acc[0].Listener != p.l.ID || acc[0].Flow != p.l.Flow || !acc[0].Up {
		t.Fatalf("accepted link info %+v, listener %+v", acc[0], p.l)
	}
	request(t, p.b, route(t, acc[0].Worker, "/service/echoer"), "back the other way")
	ws := p.a.Workers()
	found := false
	for _, w := range ws {
		found = found || (w.Addresses[0] == p.c.ID && w.Kind == "mem-connection")
	}
	if !found {
		t.Fatalf("no mem-connection worker at %s in %+v", p.c.ID, ws)
	}
}

func TestManyMessagesInOrder(t *testing.T) {
	p := newPair(t, newMemNet())
	sink, err := p.b.NewContext("sink", node.WithMailboxSize(64))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if _, err := p.bb.Listen(tctx(t), "b:0", "sink"); err != nil {
		t.Fatal(err)
	}
	ls := p.bb.Listeners()
	if len(ls) != 2 {
		t.Fatalf("listeners %+v", ls)
	}
	var sinkL transports.ListenerInfo
	for _, l := range ls {
		if l.Allowed[0] == "sink" {
			sinkL = l
		}
	}
	const n = 5000
	ctx := tctx(t)
	errc := make(chan error, 1)
	go func() {
		r := route(t, "/mem/"+sinkL.Address+"/service/sink")
		for i := 0; i < n; i++ {
			if err := p.a.Send(ctx, r, []byte(fmt.Sprint(i))); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := 0; i < n; i++ {
		m, err := sink.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d has payload %q", i, m.Payload)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// relay forwards every message that ends at it to a fixed route and passes
// replies (messages with hops after it) back, stepping itself off and onto
// the return route either way.
type relay struct{ to routing.Route }

func (r relay) HandleMessage(c *node.Context, m *routing.Message) error {
	onward := m.Onward[1:]
	if len(onward) == 0 {
		onward = r.to
	}
	ret, err := m.Return.Prepend(c.Address())
	if err != nil {
		return err
	}
	return c.SendMessage(c, &routing.Message{Onward: onward, Return: ret, Payload: m.Payload})
}

func TestTwoHopsThroughRelay(t *testing.T) {
	net := newMemNet()
	resp, mid, init := newNode(t, "responder"), newNode(t, "middle"), newNode(t, "initiator")
	br, bm, bi := attach(t, resp, net.transport()), attach(t, mid, net.transport()), attach(t, init, net.transport())
	startEcho(t, resp, "echoer")
	lr, err := br.Listen(tctx(t), "responder:0", "echoer")
	if err != nil {
		t.Fatal(err)
	}
	toResp, err := bm.Connect(tctx(t), lr.Address)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mid.StartWorker("forward_to_responder", relay{to: route(t, toResp.Worker, "/service/echoer")}); err != nil {
		t.Fatal(err)
	}
	lm, err := bm.Listen(tctx(t), "middle:0", "forward_to_responder")
	if err != nil {
		t.Fatal(err)
	}
	_ = bi
	request(t, init, route(t, "/mem/"+lm.Address+"/service/forward_to_responder"), "Hello Ferry!")
	request(t, init, route(t, "/mem/"+lm.Address+"/service/forward_to_responder"), "twice")
}

func TestAccessControl(t *testing.T) {
	p := newPair(t, newMemNet())
	secret, err := p.b.NewContext("secret")
	if err != nil {
		t.Fatal(err)
	}
	defer secret.Close()
	ctx := tctx(t)
	// Not allowed on b's listener: dropped, the link survives, and ordering
	// means that once the echo came back the refused message was handled.
	if err := p.a.Send(ctx, route(t, p.c.Worker, "/service/secret"), []byte("psst")); err != nil {
		t.Fatal(err)
	}
	request(t, p.a, route(t, p.c.Worker, "/service/echoer"), "still up")
	if m := tryReceive(secret); m != nil {
		t.Fatalf("secret received %q over a listener that does not allow it", m.Payload)
	}

	// On a: nothing is allowed on the connection, so b cannot reach a's
	// bystander; replies to a's senders were allowed above.
	bystander, err := p.a.NewContext("bystander")
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Close()
	acc := p.bb.Connections()[0]
	if err := p.b.Send(ctx, route(t, acc.Worker, "/service/bystander"), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	// A message with a remote first hop would make a dial: refused too.
	if err := p.b.Send(ctx, route(t, acc.Worker, "/mem/"+p.l.Address+"/service/echoer"), []byte("bounce")); err != nil {
		t.Fatal(err)
	}
	// b's app sends through the accepted link, so replies to it on that
	// flow are allowed: have a's bystander-free echo round trip prove order.
	startEcho(t, p.a, "open")
	if _, err := p.ba.Connect(ctx, p.l.Address, "open"); err != nil {
		t.Fatal(err)
	}
	// The first connection still allows nothing: "open" must not be reached
	// over it.
	sub, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := node.Request(sub, p.b, route(t, acc.Worker, "/service/open"), "x"); !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("reached a worker not allowed on the connection, or no error came back: %v", err)
	}
	if m := tryReceive(bystander); m != nil {
		t.Fatalf("bystander received %q", m.Payload)
	}
}

func tryReceive(c *node.Context) *routing.Message {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m, _ := c.Receive(ctx)
	return m
}

func TestRouteThroughClosedConnection(t *testing.T) {
	p := newPair(t, newMemNet())
	ctx := tctx(t)
	if err := p.ba.CloseConnection(ctx, p.c.ID); err != nil {
		t.Fatal(err)
	}
	err := p.a.Send(ctx, route(t, p.c.Worker, "/service/echoer"), []byte("x"))
	if !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("send through a closed connection: %v, want ErrNoRoute", err)
	}
	if err := p.ba.CloseConnection(ctx, p.c.ID); !errors.Is(err, transports.ErrNotFound) {
		t.Fatalf("second close: %v", err)
	}
	// The accepted side notices and stops its worker too.
	eventually(t, "accepted link gone", func() bool { return len(p.bb.Connections()) == 0 })
	// The listener still works.
	request(t, p.a, route(t, "/mem/"+p.l.Address+"/service/echoer"), "new link")
}

func TestPeerVanishesAndComesBack(t *testing.T) {
	net := newMemNet()
	p := newPair(t, net)
	r := route(t, p.c.Worker, "/service/echoer")
	request(t, p.a, r, "before")
	// An implicit (resolver) connection too, to a second listener.
	l2, err := p.bb.Listen(tctx(t), "b2:0", "echoer")
	if err != nil {
		t.Fatal(err)
	}
	request(t, p.a, route(t, "/mem/"+l2.Address+"/service/echoer"), "implicit")
	if n := len(p.ba.Connections()); n != 2 {
		t.Fatalf("%d connections", n)
	}

	// The responder's transport goes away.
	p.tb.crash()
	if err := p.bb.Close(); err != nil {
		t.Fatal(err)
	}
	// The connection worker stops, so a send fails at once instead of
	// hanging; the implicit connection is forgotten.
	eventually(t, "connection worker stopped", func() bool {
		err := p.a.Send(tctx(t), r, []byte("x"))
		return errors.Is(err, node.ErrNoRoute)
	})
	eventually(t, "implicit connection forgotten", func() bool { return len(p.ba.Connections()) == 1 })
	if c := p.ba.Connections()[0]; c.ID != p.c.ID || c.Up {
		t.Fatalf("connections %+v", c)
	}

	// The responder comes back on the same address; the connection is
	// re-dialled and the same route works again.
	bb2 := attach(t, p.b, net.transport())
	if _, err := bb2.Listen(tctx(t), p.l.Address, "echoer"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-dialled", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		got, err := node.Request(ctx, p.a, r, "after")
		return err == nil && got == "after"
	})
}

func TestListenerReopensAfterTransportCrash(t *testing.T) {
	net := newMemNet()
	p := newPair(t, net)
	before := p.ta.dialCount()
	// Both sides' transports die, as a crashed plugin's would.
	p.tb.crash()
	p.ta.crash()
	p.bb.Reconnect()
	p.ba.Reconnect()
	// The listener is re-opened on its bound address and the connection is
	// re-dialled; the same route works again.
	r := route(t, p.c.Worker, "/service/echoer")
	eventually(t, "recovered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		got, err := node.Request(ctx, p.a, r, "again")
		return err == nil && got == "again"
	})
	if p.ta.dialCount() <= before {
		t.Fatal("no re-dial happened")
	}
	ls := p.bb.Listeners()
	if len(ls) != 1 || ls[0].Address != p.l.Address || !ls[0].Up {
		t.Fatalf("listeners after recovery: %+v", ls)
	}
}

func TestBadPacketsDroppedLinkSurvives(t *testing.T) {
	net := newMemNet()
	b := newNode(t, "b")
	bb := attach(t, b, net.transport())
	startEcho(t, b, "echoer")
	l, err := bb.Listen(tctx(t), "b:0", "/service/echoer")
	if err != nil {
		t.Fatal(err)
	}
	raw := net.transport()
	ctx := tctx(t)
	link, err := raw.Dial(ctx, l.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	good, err := routing.Codec{}.Encode(&routing.Message{Onward: route(t, "/service/echoer"), Return: route(t, "/service/me"), Payload: []byte("ok")})
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{{}, {0xff}, {1, 0x80}, []byte("random garbage here"), {1, 1, 0, 5, 'x'}}
	if err := link.Send(ctx, append(bad, good)); err != nil {
		t.Fatal(err)
	}
	pkts, err := link.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := routing.Codec{}.Decode(pkts[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Payload) != "ok" || !m.Onward.Equal(route(t, "/service/me")) {
		t.Fatalf("reply %+v", m)
	}
	// The reply's return route starts at the echoer (behind the accepted link).
	if len(m.Return) != 1 || m.Return[0].Value != "echoer" {
		t.Fatalf("reply return route %s", m.Return)
	}
}

func TestBadInput(t *testing.T) {
	n := newNode(t, "n")
	b := attach(t, n, newMemNet().transport())
	ctx := tctx(t)
	if _, err := b.Listen(ctx, "x:0", "/tcp/1.2.3.4:5"); err == nil {
		t.Fatal("a remote address was accepted as a consumer")
	}
	if _, err := b.Connect(ctx, "nowhere:1"); err == nil {
		t.Fatal("connect to nothing succeeded")
	}
	if err := n.Send(ctx, route(t, "/mem/nowhere:1/service/echo"), []byte("x")); err == nil {
		t.Fatal("route to nothing succeeded")
	}
	if err := b.CloseListener(ctx, "nope"); !errors.Is(err, transports.ErrNotFound) {
		t.Fatalf("close unknown listener: %v", err)
	}
	// Ending at the link (nothing after it) is logged, not sent.
	if len(b.Connections()) != 0 {
		t.Fatalf("connections left after failed dials: %+v", b.Connections())
	}
	b.Close()
	if _, err := b.Listen(ctx, "x:0"); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("listen after close: %v", err)
	}
	if err := n.Send(ctx, route(t, "/mem/x:1/service/echo"), []byte("x")); !errors.Is(err, node.ErrUnknownTranspt) {
		t.Fatalf("route after close: %v", err)
	}
}

func TestNodeShutdownClosesBinding(t *testing.T) {
	p := newPair(t, newMemNet())
	ctx := tctx(t)
	if err := p.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.bb.Close(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("binding did not close after node shutdown")
	}
	eventually(t, "initiator notices", func() bool { return !p.ba.Connections()[0].Up })
}

func TestStoppingTheWorkerClosesTheConnection(t *testing.T) {
	p := newPair(t, newMemNet())
	ctx := tctx(t)
	if err := p.a.StopWorker(ctx, p.c.ID); err != nil {
		t.Fatal(err)
	}
	// Closed for good: not re-dialled, forgotten, and the peer notices.
	eventually(t, "connection forgotten", func() bool { return len(p.ba.Connections()) == 0 })
	eventually(t, "peer notices", func() bool { return len(p.bb.Connections()) == 0 })
	if err := p.a.Send(ctx, route(t, p.c.Worker, "/service/echoer"), []byte("x")); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("send after stop: %v", err)
	}
}

// ConnectAs puts the connection's worker at a given id, so a restarted
// node's routes that name /worker/<id> keep working; a bad or taken id is
// refused.
func TestConnectAsKeepsTheWorkerID(t *testing.T) {
	p := newPair(t, newMemNet())
	id := node.NewWorkerID()
	c, err := p.ba.ConnectAs(tctx(t), id, p.l.Address)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != id || c.Worker != routing.Local(id) {
		t.Fatalf("ConnectAs(%s) gave %+v", id, c)
	}
	request(t, p.a, route(t, "/worker/"+id+"/service/echoer"), "same id")
	if _, err := p.ba.ConnectAs(tctx(t), id, p.l.Address); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("ConnectAs on a taken id: %v", err)
	}
	if _, err := p.ba.ConnectAs(tctx(t), "echoer", p.l.Address); err == nil || !strings.Contains(err.Error(), "not a worker id") {
		t.Fatalf("ConnectAs with a service name: %v", err)
	}
	// The refused attempts left the first connection alone.
	request(t, p.a, route(t, "/worker/"+id+"/service/echoer"), "still there")
	if n := len(p.ba.Connections()); n != 2 {
		t.Fatalf("%d connections after refused ConnectAs calls, want 2", n)
	}
}
