// Command 04-routing-over-transport-responder starts a node with an echoer
// worker at "echoer" behind a TCP listener. Messages that arrive over TCP
// may reach only the echoer (network input is denied by default).
//
//	go run ./examples/04-routing-over-transport-responder -listen 127.0.0.1:4000
//
// It prints "listening on ADDR" once the listener is bound (use port 0 to
// pick a free port) and runs until interrupted. Pair it with
// 04-routing-over-transport-initiator.
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

// Echoer prints what it receives and replies with the same payload along
// the message's return route, which leads back over the TCP connection.
type Echoer struct{}

// HandleMessage replies to m.
func (Echoer) HandleMessage(c *node.Context, m *routing.Message) error {
	fmt.Printf("Echoer: Received: %s\n", m.Payload)
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
