package transports_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
)

// FuzzInboundPacket sends arbitrary bytes as a packet to a node's listener,
// followed by a valid request. Whatever the bytes are, the node must not
// panic, the link must stay up, and the valid request must be answered.
func FuzzInboundPacket(f *testing.F) {
	codec := routing.Codec{}
	enc := func(onward, ret string, payload string) []byte {
		m := routing.Message{Onward: routing.MustParseRoute(onward), Return: routing.MustParseRoute(ret), Payload: []byte(payload)}
		b, err := codec.Encode(&m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{0xff, 0, 0})
	f.Add(enc("/service/echoer", "/service/x", "hello"))
	f.Add(enc("/service/secret", "/service/x", "denied"))
	f.Add(enc("/tcp/127.0.0.1:1/service/echoer", "/service/x", "remote first hop"))
	f.Add(enc("/service/echoer", "/", "no return route"))
	f.Add(enc("/service/nobody", "/service/x", "no such worker"))

	n, err := node.New(node.Config{Name: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if _, err := services.Start(n, "echo", "echoer"); err != nil {
		f.Fatal(err)
	}
	secret, err := n.NewContext("secret")
	if err != nil {
		f.Fatal(err)
	}
	net := newMemNet()
	b, err := transports.Attach(n, net.transport(), transports.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer b.Close()
	l, err := b.Listen(context.Background(), "fuzz:0", "echoer")
	if err != nil {
		f.Fatal(err)
	}
	link, err := net.transport().Dial(context.Background(), l.Address)
	if err != nil {
		f.Fatal(err)
	}
	defer link.Close()
	seq := 0

	f.Fuzz(func(t *testing.T, data []byte) {
		seq++
		nonce := fmt.Sprintf("sync-%d", seq)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := link.Send(ctx, [][]byte{data, enc("/service/echoer", "/service/x", nonce)}); err != nil {
			t.Fatalf("send: %v", err)
		}
		for {
			pkts, err := link.Recv(ctx)
			if err != nil {
				t.Fatalf("link broke or no answer to the valid request: %v", err)
			}
			for _, p := range pkts {
				m, err := codec.Decode(p)
				if err != nil {
					t.Fatalf("node sent an undecodable packet: %v", err)
				}
				if bytes.Equal(m.Payload, []byte(nonce)) {
					if msg := tryReceive(secret); msg != nil {
						t.Fatalf("network input reached a worker that was not allowed: %q", msg.Payload)
					}
					return
				}
			}
		}
	})
}
