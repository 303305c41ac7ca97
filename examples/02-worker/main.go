// Command 02-worker starts an Echoer worker on a node, sends it a message
// from the program ("the app") and prints the reply:
//
//	App Received: Hello Ferry!
//
// A worker is a Go value with a HandleMessage method. The node calls it
// with one message at a time, so the worker owns its state without locks.
// Every message carries an onward route (where it goes) and a return route
// (how a reply gets back); the Echoer replies along the return route.
//
//	go run ./examples/02-worker
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Echoer sends every message back to where it came from.
type Echoer struct{}

// HandleMessage replies with the same payload along the return route.
func (Echoer) HandleMessage(c *node.Context, msg *routing.Message) error {
	return c.Reply(c, msg, msg.Payload)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "02-worker:", err)
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
	// Send from the app's own address ("app") and wait for the reply there.
	if err := node.SendAs(ctx, n, routing.MustParseRoute("/service/echoer"), "Hello Ferry!"); err != nil {
		return err
	}
	reply, _, err := node.ReceiveAs[string](ctx, n)
	if err != nil {
		return err
	}
	fmt.Printf("App Received: %s\n", reply)
	return nil
}
