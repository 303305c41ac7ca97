// Command 04-routing-over-transport-two-hops-initiator sends "Hello Ferry!"
// over TCP to the middle node's relay, which forwards it over a second TCP
// connection to the responder's echoer; the reply comes back the same way:
//
//	go run ./examples/04-routing-over-transport-two-hops-initiator -connect 127.0.0.1:3000
//	App Received: Hello Ferry!
//
// The route is /tcp/127.0.0.1:3000/service/forward_to_responder: the
// transport resolves the /tcp hop into a connection worker.
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
	connect := flag.String("connect", "127.0.0.1:3000", "TCP address of the middle node")
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

	r := routing.Route{{Type: "tcp", Value: connect}, routing.Local("forward_to_responder")}
	reply, err := node.Request(ctx, n, r, message)
	if err != nil {
		return err
	}
	fmt.Printf("App Received: %s\n", reply)
	return nil
}
