package transports_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func newTCP(t *testing.T) transport.Transport {
	t.Helper()
	tr := tcptransport.New()
	t.Cleanup(func() { tr.Close() })
	return tr
}

func TestTCPEchoAndTwoHops(t *testing.T) {
	resp, mid, init := newNode(t, "responder"), newNode(t, "middle"), newNode(t, "initiator")
	br, bm, bi := attach(t, resp, newTCP(t)), attach(t, mid, newTCP(t)), attach(t, init, newTCP(t))
	startEcho(t, resp, "echoer")
	lr, err := br.Listen(tctx(t), "127.0.0.1:0", "echoer")
	if err != nil {
		t.Fatal(err)
	}
	// One hop, by connection worker and by /tcp address.
	c, err := bi.Connect(tctx(t), lr.Address)
	if err != nil {
		t.Fatal(err)
	}
	request(t, init, route(t, c.Worker, "/service/echoer"), "Hello Ferry!")
	request(t, init, route(t, "/tcp/"+lr.Address+"/service/echoer"), "by address")

	// Two hops through a relay on the middle node.
	toResp, err := bm.Connect(tctx(t), lr.Address)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mid.StartWorker("forward_to_responder", relay{to: route(t, toResp.Worker, "/service/echoer")}); err != nil {
		t.Fatal(err)
	}
	lm, err := bm.Listen(tctx(t), "127.0.0.1:0", "forward_to_responder")
	if err != nil {
		t.Fatal(err)
	}
	request(t, init, route(t, "/tcp/"+lm.Address+"/service/forward_to_responder"), "two hops")

	// A large message crosses too.
	big := string(make([]byte, 512<<10))
	request(t, init, route(t, c.Worker, "/service/echoer"), big)
}

func TestTCPPeerVanishesAndComesBack(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	ba := attach(t, a, newTCP(t))
	tb := tcptransport.New()
	bb, err := transports.Attach(b, tb, transports.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, c, r := echoPath(t, b, bb, ba)
	request(t, a, r, "before")

	// The peer goes away: its sockets close.
	bb.Close()
	tb.Close()
	eventually(t, "connection worker stopped", func() bool {
		return errors.Is(a.Send(tctx(t), r, []byte("x")), node.ErrNoRoute)
	})

	// It comes back on the same port; the connection is re-dialled at the
	// same worker address.
	tb2 := newTCP(t)
	bb2 := attach(t, b, tb2)
	if _, err := bb2.Listen(tctx(t), l.Address, "echoer"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-dialled", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		got, err := node.Request(ctx, a, r, "after")
		return err == nil && got == "after"
	})
	cs := ba.Connections()
	if len(cs) != 1 || cs[0].ID != c.ID || !cs[0].Up || cs[0].Remote != l.Address {
		t.Fatalf("connections after re-dial: %+v", cs)
	}
}

func attachB(n *node.Node) (*transports.Binding, error) {
	return transports.Attach(n, tcptransport.New(), transports.Options{})
}
