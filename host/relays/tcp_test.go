package relays

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// tcpNode is a node with a TCP transport bound to it, all closed at cleanup.
func tcpNode(t testing.TB, name string) (*node.Node, *transports.Binding) {
	t.Helper()
	n := newNode(t, name)
	tr := tcptransport.New()
	b, err := transports.Attach(n, tr, transports.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		tr.Close()
	})
	return n, b
}

func routeOf(t *testing.T, first routing.Address, rest string) routing.Route {
	t.Helper()
	r, err := routing.Route{first}.Concat(routing.MustParseRoute(rest))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// requestEventually retries a request until it gets the wanted reply, for
// paths that are coming back up.
func requestEventually(t *testing.T, n *node.Node, route routing.Route, payload, want string) {
	t.Helper()
	var got string
	var err error
	eventually(t, "a reply over "+route.String(), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		got, err = node.Request(ctx, n, route, payload)
		return err == nil && got == want
	})
}

func TestThreeNodesOverTCP(t *testing.T) {
	checkGoroutines(t)
	n2, b2 := tcpNode(t, "n2")
	n3, b3 := tcpNode(t, "n3")
	n1, b1 := tcpNode(t, "n1")

	svc, err := StartService(n2, ServiceConfig{Flows: ListenerFlows("", b2)})
	if err != nil {
		t.Fatal(err)
	}
	// Only the relay service may be reached from the network on n2; the
	// forwarder is allowed on the registration's flow by the service.
	l, err := b2.Listen(ctxT(t), "127.0.0.1:0", ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	// n3 only dials out, and allows nothing from the network explicitly.
	c3, err := b3.Connect(ctxT(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := Register(ctxT(t), n3, routeOf(t, c3.Worker, "/service/relay"), "n3", fast())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	if got := n2.Consumers(l.Flow); strings.Join(got, ",") != "forward_to_n3,relay" {
		t.Fatalf("consumers of the listener's flow: %v", got)
	}

	c1, err := b1.Connect(ctxT(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	viaRelay := routeOf(t, c1.Worker, "/service/forward_to_n3/service/uppercase")
	mustRequest(t, n1, viaRelay.String(), "hello", "HELLO")
	mustRequest(t, n1, routeOf(t, c1.Worker, "/service/forward_to_n3/service/hop/service/echo").String(), "through a hop", "through a hop")

	// Deny by default: n1 cannot reach n2's own uppercase.
	deny := func(r routing.Route) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if got, err := node.Request(ctx, n1, r, "x"); err == nil {
			t.Fatalf("%s answered %q although it is not allowed", r, got)
		}
	}
	deny(routeOf(t, c1.Worker, "/service/uppercase"))

	eventually(t, "the relay counters to settle", func() bool {
		fi, _ := svc.Get("n3")
		return fi.Forwarded == 2 && fi.Returned == 2
	})
	fi, ok := svc.Get("n3")
	if !ok || fi.State != ForwarderUp || fi.Forwarded != 2 || fi.Returned != 2 || fi.Node != "n3" || fi.Errors != 0 {
		t.Fatalf("forwarder on n2: %+v\nregistration %+v", fi, reg.Info())
	}
	if !strings.HasSuffix(fi.RouteBack, reg.Address().String()) || !strings.HasPrefix(fi.RouteBack, "/worker/") {
		t.Fatalf("route back %s does not lead to the registrant %s", fi.RouteBack, reg.Address())
	}

	// A sender on n1 that forges the registrant's route back as its return
	// route does not turn the forwarder into a hop into n2: n2's link puts
	// its own address first, so the message still goes to n3.
	secret := make(chan struct{}, 1)
	if _, err := n2.StartWorker("secret", node.WorkerFunc(func(*node.Context, *routing.Message) error {
		secret <- struct{}{}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	forger, err := n1.NewContext("")
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	back := routing.MustParseRoute(fi.RouteBack)
	refusedBefore := reg.Info().Refused
	if err := forger.SendMessage(ctxT(t), &routing.Message{Onward: routeOf(t, c1.Worker, "/service/forward_to_n3/service/secret"), Return: back, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the forged message to reach n3", func() bool { fi, _ := svc.Get("n3"); return fi.Forwarded == 3 })
	// Nor does the registrant dial out for a sender on the network.
	if err := n1.Send(ctxT(t), routeOf(t, c1.Worker, "/service/forward_to_n3/tcp/"+strings.ReplaceAll(l.Address, "/", "%2F")+"/service/relay"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Two refusals: n3 has no "secret" for the forged message, and the
	// transport address.
	eventually(t, "the registrant to refuse a transport address", func() bool { return reg.Info().Refused == refusedBefore+2 })
	if e := reg.Info().LastRefusal; !strings.Contains(e, "not a local address") {
		t.Fatalf("last refusal: %q", e)
	}
	select {
	case <-secret:
		t.Fatal("a forged return route let n1 reach a worker on n2")
	default:
	}

	// A second listener that allows the relay service reaches the forwarder
	// too (ServiceConfig.Flows), although n3 registered through the first.
	lb, err := b2.Listen(ctxT(t), "127.0.0.1:0", ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	// A registration limited to echo refuses to pass anything else on.
	regEcho, err := Register(ctxT(t), n3, routeOf(t, c3.Worker, "/service/relay"), "n3echo", Options{CheckInterval: time.Hour, Allow: []string{"/service/echo"}})
	if err != nil {
		t.Fatal(err)
	}
	c1b, err := b1.Connect(ctxT(t), lb.Address)
	if err != nil {
		t.Fatal(err)
	}
	requestEventually(t, n1, routeOf(t, c1b.Worker, "/service/forward_to_n3/service/uppercase"), "second listener", "SECOND LISTENER")
	mustRequest(t, n1, routeOf(t, c1b.Worker, "/service/forward_to_n3echo/service/echo").String(), "echo only", "echo only")
	deny(routeOf(t, c1b.Worker, "/service/forward_to_n3echo/service/uppercase"))
	if i := regEcho.Info(); i.Refused != 1 || i.Forwarded != 2 || !strings.Contains(i.LastRefusal, "not in the allowed") {
		t.Fatalf("allow-listed registration: %+v", i)
	}
	if err := regEcho.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := b1.CloseConnection(ctxT(t), c1b.ID); err != nil {
		t.Fatal(err)
	}
	if err := b2.CloseListener(ctxT(t), lb.ID); err != nil {
		t.Fatal(err)
	}

	// n2's listener goes away with its connections and comes back on the
	// same address: n3 and n1 re-dial, n3 registers again.
	before := reg.Info().Registrations
	if err := b2.CloseListener(ctxT(t), l.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range b2.Connections() {
		if c.Listener == l.ID {
			if err := b2.CloseConnection(ctxT(t), c.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, "the registrant to notice the drop", func() bool { return reg.Info().State == StateDown })
	l2, err := b2.Listen(ctxT(t), l.Address, ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "n3 to register again", func() bool {
		i := reg.Info()
		return i.State == StateUp && i.Registrations > before
	})
	if reg.Info().Reregistrations < 1 {
		t.Fatalf("info: %+v", reg.Info())
	}
	requestEventually(t, n1, viaRelay, "again", "AGAIN")
	if got := n2.Consumers(l2.Flow); strings.Join(got, ",") != "forward_to_n3,relay" {
		t.Fatalf("consumers of the new listener's flow: %v", got)
	}

	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := svc.Get("n3"); ok {
		t.Fatal("the forwarder outlived its registration's Close")
	}
}

func TestRelayNodeRestartsOverTCP(t *testing.T) {
	checkGoroutines(t)
	n3, _ := tcpNode(t, "n3")
	n1, b1 := tcpNode(t, "n1")

	n2, b2 := tcpNode(t, "n2")
	if _, err := StartService(n2, ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	l, err := b2.Listen(ctxT(t), "127.0.0.1:0", ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	// The route names the relay by transport address: the node's resolver
	// dials (and re-dials) it.
	reg, err := Register(ctxT(t), n3, routing.MustParseRoute("/tcp/"+l.Address+"/service/relay"), "n3", fast())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	c1, err := b1.Connect(ctxT(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	viaRelay := routeOf(t, c1.Worker, "/service/forward_to_n3/service/uppercase")
	mustRequest(t, n1, viaRelay.String(), "hello", "HELLO")

	// n2 stops and a fresh n2 starts on the same address, knowing nothing.
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if err := n2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b2.Close()
	eventually(t, "the registrant to notice n2 is gone", func() bool { return reg.Info().State == StateDown })

	n2b, b2b := tcpNode(t, "n2")
	svc, err := StartService(n2b, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2b.Listen(ctxT(t), l.Address, ServiceAddress); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n3 to register at the new n2", func() bool {
		_, ok := svc.Get("n3")
		return ok && reg.Info().State == StateUp
	})
	requestEventually(t, n1, viaRelay, "again", "AGAIN")
	if i := reg.Info(); i.Reregistrations < 1 || i.LastError != "" {
		t.Fatalf("info: %+v", i)
	}
}

func TestCloseAfterReconnectDeletesForwarder(t *testing.T) {
	checkGoroutines(t)
	n2, b2 := tcpNode(t, "n2")
	n3, b3 := tcpNode(t, "n3")
	svc, err := StartService(n2, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := b2.Listen(ctxT(t), "127.0.0.1:0", ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := b3.Connect(ctxT(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	// No checks during the test: the registration keeps its old route back.
	reg, err := Register(ctxT(t), n3, routeOf(t, c3.Worker, "/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	accepted := func() []transports.ConnectionInfo {
		var out []transports.ConnectionInfo
		for _, c := range b2.Connections() {
			if c.Listener == l.ID {
				out = append(out, c)
			}
		}
		return out
	}
	old := accepted()
	if len(old) != 1 {
		t.Fatalf("accepted connections: %+v", old)
	}
	if err := b2.CloseConnection(ctxT(t), old[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n3 to re-dial", func() bool {
		a := accepted()
		return len(a) == 1 && a[0].ID != old[0].ID && a[0].Up
	})
	eventually(t, "n3's side of the connection to be up again", func() bool {
		for _, c := range b3.Connections() {
			if c.ID == c3.ID {
				return c.Up
			}
		}
		return false
	})
	// The path changed, the registrant did not: its Close still removes
	// its forwarder.
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if fi, ok := svc.Get("n3"); ok {
		t.Fatalf("forwarder left after its registrant closed: %+v", fi)
	}
	// Nor does its address stay open to the network for whatever is
	// started there next.
	if got := n2.Consumers(l.Flow); slices.Contains(got, ForwarderAddress("n3")) {
		t.Fatalf("consumers of the listener's flow after the forwarder was deleted: %v", got)
	}
}
