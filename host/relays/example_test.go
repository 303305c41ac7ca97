package relays_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

// A relay on one node, for brevity: in real use the relay service runs on a
// node that listens and Register is called on a node that only dials out,
// with a route such as /tcp/127.0.0.1:7000/service/relay.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, _ := node.New(node.Config{Name: "n"})
	defer n.Shutdown(context.Background())
	services.Start(n, "uppercase", "")

	svc, err := relays.StartService(n, relays.ServiceConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer svc.Close(context.Background())
	reg, err := relays.Register(ctx, n, routing.MustParseRoute("/service/relay"), "n3", relays.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close(context.Background())
	fmt.Println(reg.Info().State, reg.Info().Forwarder)

	reply, err := node.Request(ctx, n, routing.MustParseRoute("/service/forward_to_n3/service/uppercase"), "hello")
	fmt.Println(reply, err)
	for _, f := range svc.List() {
		fmt.Println(f.Name, f.Address, f.State, f.Forwarded)
	}
	// Output:
	// up /service/forward_to_n3
	// HELLO <nil>
	// n3 /service/forward_to_n3 up 1
}
