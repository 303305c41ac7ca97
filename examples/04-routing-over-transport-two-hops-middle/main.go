// Command 04-routing-over-transport-two-hops-middle is the middle node of
// the two-hop example. It connects to the responder, starts a Relay worker
// at "forward_to_responder" that sends every message on to the responder's
// echoer over that connection, and listens for the initiator. Only the relay
// is reachable from its listener.
//
//	go run ./examples/04-routing-over-transport-two-hops-middle -listen 127.0.0.1:3000 -responder 127.0.0.1:4000
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

// Relay forwards every message that ends at it along a fixed route, and
// passes a reply (a message with hops after the relay) on along its onward
// route. Either way it steps off the onward route and puts its own address
// at the front of the return route, so replies come back through it: the
// reply from the responder arrives on the connection the relay sent
// through, which is the one flow it may receive from besides its listener.
type Relay struct{ To routing.Route }

// HandleMessage forwards m.
func (r Relay) HandleMessage(c *node.Context, m *routing.Message) error {
	onward := m.Onward[1:]
	if len(onward) == 0 {
		onward = r.To
	}
	ret, err := m.Return.Prepend(c.Address())
	if err != nil {
		return err
	}
	return c.SendMessage(c, &routing.Message{Onward: onward, Return: ret, Payload: m.Payload})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:3000", "TCP address to listen on for the initiator (port 0 picks one)")
	responder := flag.String("responder", "127.0.0.1:4000", "TCP address of the responder")
	flag.Parse()
	if err := run(*listen, *responder); err != nil {
		fmt.Fprintln(os.Stderr, "middle:", err)
		os.Exit(1)
	}
}

func run(listen, responder string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	n, err := node.New(node.Config{Name: "middle"})
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

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	toResponder, err := b.Connect(dctx, responder)
	if err != nil {
		return err
	}
	relay := Relay{To: routing.Route{toResponder.Worker, routing.Local("echoer")}}
	if _, err := n.StartWorker("forward_to_responder", relay, node.WithKind("relay")); err != nil {
		return err
	}
	l, err := b.Listen(ctx, listen, "forward_to_responder")
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
