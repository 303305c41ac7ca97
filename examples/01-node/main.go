// Command 01-node creates a Ferry node and stops it: the smallest program
// that embeds Ferry.
//
// A node is the runtime that holds workers and routes messages between
// them. Creating one is cheap; Shutdown stops every worker (running their
// shutdown hooks) and returns when they are done.
//
//	go run ./examples/01-node
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ferryhq/ferry/host/node"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "01-node:", err)
		os.Exit(1)
	}
}

func run() error {
	n, err := node.New(node.Config{Name: "n1"})
	if err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	fmt.Printf("Node %s started with %d worker (its app mailbox)\n", n.Name(), n.WorkerCount())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		return fmt.Errorf("stop node: %w", err)
	}
	fmt.Printf("Node %s stopped\n", n.Name())
	return nil
}
