// Command 03-routing sends a message from the app through a hop worker h1 to
// an Echoer, and the reply back through h1:
//
//	app → h1 → echoer → h1 → app
//
// The route /service/h1/service/echoer lists both hops. A hop steps itself
// off the front of the onward route and puts its own address at the front
// of the return route (Context.Forward), so the Echoer's reply, sent along
// the return route, passes h1 again on its way back. Each worker prints
// what it sees, so the routes can be followed hop by hop.
//
//	go run ./examples/03-routing
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Hop forwards every message along its onward route; services.Hop is the
// same without the printing.
type Hop struct{}

// HandleMessage prints the message and forwards it.
func (Hop) HandleMessage(c *node.Context, msg *routing.Message) error {
	fmt.Printf("%s: received %q, onward %s, return %s\n", c.Address().Value, msg.Payload, msg.Onward, msg.Return)
	return c.Forward(c, msg)
}

// Echoer replies along the return route.
type Echoer struct{}

// HandleMessage prints the message and replies.
func (Echoer) HandleMessage(c *node.Context, msg *routing.Message) error {
	fmt.Printf("%s: received %q, onward %s, return %s\n", c.Address().Value, msg.Payload, msg.Onward, msg.Return)
	return c.Reply(c, msg, msg.Payload)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "03-routing:", err)
		os.Exit(1)
	}
}

func run() error {
	n, err := node.New(node.Config{Name: "n1"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	defer n.Shutdown(ctx)

	if _, err := n.StartWorker("echoer", Echoer{}); err != nil {
		return err
	}
	if _, err := n.StartWorker("h1", Hop{}); err != nil {
		return err
	}
	route, err := routing.ParseRoute("/service/h1/service/echoer")
	if err != nil {
		return err
	}
	if err := node.SendAs(ctx, n, route, "Hello Ferry!"); err != nil {
		return err
	}
	reply, _, err := node.ReceiveAs[string](ctx, n)
	if err != nil {
		return err
	}
	fmt.Printf("App Received: %s\n", reply)
	return nil
}
