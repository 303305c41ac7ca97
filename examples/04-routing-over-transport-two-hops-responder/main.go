// Command 04-routing-over-transport-two-hops-responder is the last node of
// the two-hop example: an echoer at "echoer" behind a TCP listener, which
// the middle node connects to.
//
//	go run ./examples/04-routing-over-transport-two-hops-responder -listen 127.0.0.1:4000
//
// It prints "listening on ADDR" once bound (port 0 picks a free port) and
// runs until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Echoer prints what it receives and replies along the return route, which
// leads back through the middle node's relay to the initiator.
type Echoer struct{}

// HandleMessage replies to m.
func (Echoer) HandleMessage(c *node.Context, m *routing.Message) error {
	fmt.Printf("Echoer: Received: %s (return route %s)\n", m.Payload, m.Return)
	return c.Reply(c, m, m.Payload)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:4000", "TCP address to listen on (host:port; port 0 picks one)")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "responder:", err)
		os.Exit(1)
	}
}

func run(listen string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	n, err := node.New(node.Config{Name: "responder"})
	if err != nil {
		return err
	}
	defer shutdown(n)
	tcp := tcptransport.New()
	defer tcp.Close()
	b, err := transports.Attach(n, tcp, transports.Options{})
	if err != nil {
		return err
	}
	defer b.Close()

	if _, err := n.StartWorker("echoer", Echoer{}); err != nil {
		return err
	}
	l, err := b.Listen(ctx, listen, "echoer")
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", l.Address)
	<-ctx.Done()
	return nil
}

func shutdown(n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}
