package relays

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

func newID(t *testing.T, name string) *identity.Identity {
	t.Helper()
	id, err := identity.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// controlRequest sends req from n over route and decodes the answer.
func controlRequest(t *testing.T, n *node.Node, route routing.Route, req control) control {
	t.Helper()
	b, err := req.encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := n.SendAndReceive(ctxT(t), route, b)
	if err != nil {
		t.Fatalf("%s to %s: %v", req.Kind, route, err)
	}
	resp, err := decodeControl(m.Payload)
	if err != nil {
		t.Fatalf("answer to %s: %v", req.Kind, err)
	}
	return resp
}

// A name registered through a secure channel belongs to that identity: a
// second identity (through its own channel) and a registrant without a
// channel can neither replace nor delete it, whatever secret they use; the
// refusals are logged and answered; the first keeps routing. A relay that
// lists its registrants refuses everyone else.
func TestRelayNameOwnedByIdentity(t *testing.T) {
	logs := &syncBuf{}
	n2, b2 := tcpNode(t, "n2")
	svc, err := StartService(n2, ServiceConfig{Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}), Flows: ListenerFlows("", b2)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	idA, idB, idRelay := newID(t, "a"), newID(t, "b"), newID(t, "relay")
	only, err := StartService(n2, ServiceConfig{Address: "relay2", Registrants: []string{idA.Identifier}, Logger: hclog.NewNullLogger(), Flows: ListenerFlows("relay2", b2)})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close(context.Background())
	if _, err := StartService(n2, ServiceConfig{Address: "relay3", Registrants: []string{"not an identifier"}}); err == nil {
		t.Fatal("a service with an invalid registrant identifier started")
	}
	lis, err := securechannel.Listen(n2, "api", securechannel.ListenerConfig{Config: securechannel.Config{Identity: idRelay}, Allow: []string{"relay", "relay2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close(context.Background())
	l, err := b2.Listen(ctxT(t), "127.0.0.1:0", "relay", "relay2", "api")
	if err != nil {
		t.Fatal(err)
	}
	tcpTo := func(rest string) routing.Route { return routing.MustParseRoute("/tcp/" + l.Address + rest) }

	channel := func(n *node.Node, id *identity.Identity) *securechannel.Channel {
		t.Helper()
		ch, err := securechannel.Create(ctxT(t), n, tcpTo("/service/api"), securechannel.Config{Identity: id, Authorized: []string{idRelay.Identifier}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ch.Close(context.Background()) })
		return ch
	}
	through := func(ch *securechannel.Channel, rest string) routing.Route { return routeOf(t, ch.Address(), rest) }

	n3, _ := tcpNode(t, "n3")
	if _, err := n3.StartWorker("echo3", services.Echo{}); err != nil {
		t.Fatal(err)
	}
	chA := channel(n3, idA)
	opts := fast()
	opts.CheckInterval = 50 * time.Millisecond
	regA, err := Register(ctxT(t), n3, through(chA, "/service/relay"), "n3", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer regA.Close(context.Background())
	if fi, _ := svc.Get("n3"); fi.Identity != idA.Identifier {
		t.Fatalf("forwarder owned by %q, want %s", fi.Identity, idA.Identifier)
	}

	// The second identity, through its own channel, with its own secret.
	n4, _ := tcpNode(t, "n4")
	chB := channel(n4, idB)
	_, err = Register(ctxT(t), n4, through(chB, "/service/relay"), "n3", fast())
	if err == nil || !strings.Contains(err.Error(), "owned by identity "+idA.Identifier) {
		t.Fatalf("second identity's registration: %v", err)
	}
	// Even with the first registrant's proof (a relay node replaying it).
	resp := controlRequest(t, n4, through(chB, "/service/relay"), control{Kind: kindRegister, Nonce: 1, Name: "n3", Proof: regA.proof})
	if resp.Kind != kindError || !strings.Contains(resp.Error, idB.Identifier) {
		t.Fatalf("second identity with the owner's proof: %+v", resp)
	}
	// Without a secure channel, with the owner's proof.
	resp = controlRequest(t, n4, tcpTo("/service/relay"), control{Kind: kindRegister, Nonce: 2, Name: "n3", Proof: regA.proof})
	if resp.Kind != kindError || !strings.Contains(resp.Error, "without a secure channel") {
		t.Fatalf("registration without a channel: %+v", resp)
	}
	// Nor may they delete it.
	for _, via := range []routing.Route{through(chB, "/service/relay"), tcpTo("/service/relay")} {
		resp = controlRequest(t, n4, via, control{Kind: kindDelete, Nonce: 3, Name: "n3", Proof: regA.proof})
		if resp.Kind != kindError || !strings.Contains(resp.Error, "owned by identity") {
			t.Fatalf("delete through %s: %+v", via, resp)
		}
	}
	// Nor does a ping from them pass for the owner's.
	if resp = controlRequest(t, n4, through(chB, "/service/relay"), control{Kind: kindPing, Nonce: 4, Name: "n3", Proof: regA.proof}); resp.Status != statusMoved {
		t.Fatalf("ping from the second identity: %+v", resp)
	}

	// The first keeps its name and its traffic, and its checks still pass.
	client, _ := tcpNode(t, "client")
	for i := 0; i < 5; i++ {
		mustRequest(t, client, tcpTo("/service/forward_to_n3/service/echo3").String(), "hello", "hello")
	}
	fi, ok := svc.Get("n3")
	if !ok || fi.Registrations != 1 || fi.Forwarded != 5 || fi.Identity != idA.Identifier {
		t.Fatalf("forwarder after the refusals: %+v", fi)
	}
	before := regA.Info().LastSuccess
	eventually(t, "a later successful check by the owner", func() bool {
		i := regA.Info()
		return i.State == StateUp && i.LastSuccess.After(before)
	})
	if refusals := strings.Count(logs.String(), "belongs to another identity"); refusals == 0 {
		t.Fatalf("refusals not logged:\n%s", logs)
	}

	// A relay that lists its registrants: only A may register there.
	if _, err := Register(ctxT(t), n4, through(chB, "/service/relay2"), "b", fast()); err == nil || !strings.Contains(err.Error(), "not allowed to register") {
		t.Fatalf("unlisted identity at relay2: %v", err)
	}
	if _, err := Register(ctxT(t), n4, tcpTo("/service/relay2"), "b", fast()); err == nil || !strings.Contains(err.Error(), "only through a secure channel") {
		t.Fatalf("no channel at relay2: %v", err)
	}
	regA2, err := Register(ctxT(t), n3, through(chA, "/service/relay2"), "a", fast())
	if err != nil {
		t.Fatal(err)
	}
	if err := regA2.Close(ctxT(t)); err != nil {
		t.Fatalf("owner's delete: %v", err)
	}
	if _, ok := only.Get("a"); ok {
		t.Fatal("the owner's delete left the forwarder")
	}
}
