// Command 03-routing-many-hops sends a message from the app through three
// hop workers to an Echoer, and the reply back through all three:
//
//	app → h1 → h2 → h3 → echoer → h3 → h2 → h1 → app
//
// Each hop steps itself off the onward route and prepends itself to the
// return route, so the return route the Echoer sees is the path back,
// /service/h3/service/h2/service/h1/service/app. Nothing but the route
// says where a message goes: the same hop workers serve any path.
//
//	go run ./examples/03-routing-many-hops
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
		fmt.Fprintln(os.Stderr, "03-routing-many-hops:", err)
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
	for _, h := range []string{"h1", "h2", "h3"} {
		if _, err := n.StartWorker(h, Hop{}); err != nil {
			return err
		}
	}
	route, err := routing.ParseRoute("/service/h1/service/h2/service/h3/service/echoer")
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
