// Command 04-routing-over-transport-initiator connects to the node started
// by 04-routing-over-transport-responder, sends "Hello Ferry!" to its
// echoer over TCP and prints the reply:
//
//	go run ./examples/04-routing-over-transport-initiator -connect 127.0.0.1:4000
//	App Received: Hello Ferry!
//
// The route is the connection's worker followed by the worker on the other
// side, /worker/<connection>/service/echoer; /tcp/127.0.0.1:4000/service/echoer
// works as well and reuses or dials a connection.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

func main() {
	connect := flag.String("connect", "127.0.0.1:4000", "TCP address of the responder")
	message := flag.String("message", "Hello Ferry!", "message to send")
	timeout := flag.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	flag.Parse()
	if err := run(*connect, *message, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "initiator:", err)
		os.Exit(1)
	}
}

func run(connect, message string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	n, err := node.New(node.Config{Name: "initiator"})
	if err != nil {
		return err
	}
	defer n.Shutdown(context.Background())
	tcp := tcptransport.New()
	defer tcp.Close()
	b, err := transports.Attach(n, tcp, transports.Options{})
	if err != nil {
		return err
	}
	defer b.Close()

	// Nothing on this node is opened to the responder: the reply reaches
	// the app because the app sent through this connection.
	conn, err := b.Connect(ctx, connect)
	if err != nil {
		return err
	}
	r := routing.Route{conn.Worker, routing.Local("echoer")}
	if err := node.SendAs(ctx, n, r, message); err != nil {
		return err
	}
	reply, _, err := node.ReceiveAs[string](ctx, n)
	if err != nil {
		return err
	}
	fmt.Printf("App Received: %s\n", reply)
	return nil
}
