package node_test

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

type nop struct{}

func (nop) HandleMessage(*node.Context, *routing.Message) error { return nil }

func BenchmarkStartWorker(b *testing.B) {
	n := newNode(b, nil, node.Config{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.StartWorker("", nop{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSendOneWay(b *testing.B) {
	n := newNode(b, nil, node.Config{})
	a, _ := n.StartWorker("", nop{})
	r := routing.Route{a}
	ctx := context.Background()
	payload := []byte("0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		if err := n.Send(ctx, r, payload); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRoundTrip(b *testing.B, route string) {
	n := newNode(b, nil, node.Config{})
	services.Start(n, "echo", "")
	for _, h := range []string{"h1", "h2", "h3"} {
		services.Start(n, "hop", h)
	}
	r := routing.MustParseRoute(route)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := n.Send(ctx, r, []byte("ping")); err != nil {
			b.Fatal(err)
		}
		if _, err := n.Receive(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRoundTripEcho(b *testing.B) { benchRoundTrip(b, "/service/echo") }
func BenchmarkRoundTripHops(b *testing.B) {
	benchRoundTrip(b, "/service/h1/service/h2/service/h3/service/echo")
}
