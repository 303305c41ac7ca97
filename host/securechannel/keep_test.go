package securechannel

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// responderNode is a node with a TCP listener, a secure channel listener at
// api and an echo service, stopped on its own (not only at test end).
type responderNode struct {
	n    *node.Node
	addr string // the TCP listener's address
	stop func()
}

func startResponder(t *testing.T, name string, id *identity.Identity, listen string) *responderNode {
	t.Helper()
	n, err := node.New(node.Config{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	tr := tcptransport.New()
	b, err := transports.Attach(n, tr, transports.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := func() {
		b.Close()
		tr.Close()
		_ = n.Shutdown(context.Background())
	}
	t.Cleanup(stop)
	startService(t, n, "echo", services.Echo{})
	if _, err := Listen(n, "api", ListenerConfig{Config: Config{Identity: id}, Allow: []string{"echo"}}); err != nil {
		t.Fatal(err)
	}
	l, err := b.Listen(tctx(t), listen, "api")
	if err != nil {
		t.Fatal(err)
	}
	return &responderNode{n: n, addr: l.Address, stop: stop}
}

// A kept channel re-opens under the same address when the peer's node
// restarts, on the same port (frames reach a node that no longer knows the
// channel, which reports them undelivered) and on another port (the route
// breaks; Route finds the new one): new messages through the same address
// work again without anything being recreated.
func TestKeptChannelReopensAfterPeerRestart(t *testing.T) {
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	ini := newNode(t, "initiator")
	attachTCP(t, ini)
	var mu sync.Mutex
	resp := startResponder(t, "resp", idR, "127.0.0.1:0")
	current := resp.addr
	k, err := Keep(tctx(t), ini, KeepConfig{
		Config: Config{Identity: idI, Authorized: []string{idR.Identifier}, ProbeTimeout: time.Second},
		Route: func(context.Context) (routing.Route, error) {
			mu.Lock()
			defer mu.Unlock()
			return routing.ParseRoute("/tcp/" + current + "/service/api")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	through := routing.Route{k.Address(), routing.Local("echo")}
	if got := request(t, ini, through, "one"); got != "one" {
		t.Fatalf("first request: %q", got)
	}
	works := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			m, err := ini.SendAndReceive(ctx, through, []byte(what))
			cancel()
			if err == nil && string(m.Payload) == what {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the kept channel did not carry a request again: %v (%+v)", what, err, k.Info())
			}
			time.Sleep(20 * time.Millisecond) // pace the retries; not synchronisation
		}
	}

	// Same port: the restarted node reports frames for the old channel
	// undelivered, the probe goes unanswered, the channel re-opens.
	addr := resp.addr
	resp.stop()
	resp = startResponder(t, "resp", idR, addr)
	works("after a restart on the same port")
	// At least once more (a probe answered late on a loaded machine may
	// cost one more open; never a broken address).
	first := k.Info()
	if first.Opens < 2 || first.Address != (routing.Route{k.Address()}).String() || !first.Kept {
		t.Fatalf("after the first restart: %+v", first)
	}

	// Another port: the old route breaks at the sender.
	resp.stop()
	resp = startResponder(t, "resp", idR, "127.0.0.1:0")
	mu.Lock()
	current = resp.addr
	mu.Unlock()
	works("after a restart on another port")
	if inf := k.Info(); inf.Opens <= first.Opens || inf.PeerIdentifier != idR.Identifier {
		t.Fatalf("after the second restart: %+v", inf)
	}

	// Closed for good: no worker at the address any more.
	if err := k.Close(tctx(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ini.SendAndReceive(ctx, through, []byte("x")); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("after Close: %v", err)
	}
}

// An error report that does not come from a vanished peer (anyone on the
// route may forge one) costs a probe and nothing more: the live peer
// answers and the channel stays open.
func TestForgedErrorReportDoesNotCloseChannel(t *testing.T) {
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	tn := newThreeNodes(t, ListenerConfig{Config: Config{Identity: idR}})
	ch, err := Create(tctx(t), tn.ini, tn.toAPI, Config{Identity: idI, ProbeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(context.Background())
	before := ch.Stats().FramesReceived
	forged := &routing.Message{Onward: routing.Route{ch.ch.wire}, Payload: node.EncodeError(&node.RemoteError{Code: node.CodeNoWorker, Node: "liar", Cause: "no such worker"})}
	for i := 0; i < 3; i++ {
		if err := tn.ini.Deliver(tctx(t), forged); err != nil {
			t.Fatal(err)
		}
	}
	// The probe's answer arrives and, once the probe's time is up, the
	// channel decided to stay open.
	eventually(t, "the error reports counted, a probe answered and its wait over", func() bool {
		s := ch.Stats()
		return s.ErrorReports == 3 && s.Probes >= 1 && s.FramesReceived > before && !ch.ch.probing.Load()
	})
	if !ch.Info().Open {
		t.Fatalf("the channel closed after forged error reports: %+v", ch.Info())
	}
	select {
	case <-ch.Done():
		t.Fatal("the channel's worker stopped")
	default:
	}
	if got := request(t, tn.ini, routing.Route{ch.Address(), routing.Local("echo")}, "still"); got != "still" {
		t.Fatalf("got %q", got)
	}
}
