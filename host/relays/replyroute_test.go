package relays

import (
	"context"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/routing"
)

// TestRouteThatAlreadyCarriesTheRouteBack: a sender answering along a
// return route that came through the forwarder (as portal session workers
// do with the route of "opened") already has the route back after the
// forwarder; the forwarder must not put it in front a second time.
func TestRouteThatAlreadyCarriesTheRouteBack(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/hop/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())

	before := reg.Info().Forwarded
	mustRequest(t, n, "/service/forward_to_n3/service/echo", "plain", "plain")
	plain := reg.Info().Forwarded - before // the request and the reply

	fi, ok := svc.Get("n3")
	if !ok {
		t.Fatal("no forwarder")
	}
	before = reg.Info().Forwarded
	mustRequest(t, n, "/service/forward_to_n3"+fi.RouteBack+"/service/echo", "carried", "carried")
	if got := reg.Info().Forwarded - before; got != plain {
		t.Fatalf("the registrant passed on %d messages for a route that already carries the route back, %d for a plain one: the route back was doubled", got, plain)
	}
}
