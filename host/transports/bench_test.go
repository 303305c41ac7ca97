package transports_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
)

type benchSink struct {
	got  atomic.Int64
	want int64
	done chan struct{}
}

func (s *benchSink) HandleMessage(*node.Context, *routing.Message) error {
	if s.got.Add(1) == s.want {
		close(s.done)
	}
	return nil
}

// BenchmarkOneWayTCP64 sends 64-byte messages from one node to a worker on
// another over the in-process TCP transport (make bench has the table).
func BenchmarkOneWayTCP64(b *testing.B) { benchOneWay(b, 64) }

// BenchmarkOneWayTCP64K is the same with 64 KiB payloads.
func BenchmarkOneWayTCP64K(b *testing.B) { benchOneWay(b, 64<<10) }

// benchPair starts nodes a and b, each with the in-process TCP transport
// attached, stopped when the benchmark ends.
func benchPair(b *testing.B) (a, n2 *node.Node, ba, bb *transports.Binding) {
	b.Helper()
	a, ba = benchNode(b, "a")
	n2, bb = benchNode(b, "b")
	return a, n2, ba, bb
}

func benchNode(b *testing.B, name string) (*node.Node, *transports.Binding) {
	b.Helper()
	n, err := node.New(node.Config{Name: name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Shutdown(context.Background()) })
	bd, err := attachB(n)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bd.Close() })
	return n, bd
}

func benchOneWay(b *testing.B, size int) {
	a, n2, ba, bb := benchPair(b)
	sink := &benchSink{want: int64(b.N), done: make(chan struct{})}
	if _, err := n2.StartWorker("sink", sink); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	l, err := bb.Listen(ctx, "127.0.0.1:0", "sink")
	if err != nil {
		b.Fatal(err)
	}
	c, err := ba.Connect(ctx, l.Address)
	if err != nil {
		b.Fatal(err)
	}
	r := routing.Route{c.Worker, routing.Local("sink")}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := a.Send(ctx, r, payload); err != nil {
			b.Fatal(err)
		}
	}
	<-sink.done
}

type benchEcho struct{}

func (benchEcho) HandleMessage(c *node.Context, m *routing.Message) error {
	return c.Reply(context.Background(), m, m.Payload)
}

// BenchmarkRoundTripTCP64 is one 64-byte request and its reply at a time
// between two nodes over the in-process TCP transport: the latency of a
// link hop each way.
func BenchmarkRoundTripTCP64(b *testing.B) {
	a, n2, ba, bb := benchPair(b)
	if _, err := n2.StartWorker("echo", benchEcho{}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	l, err := bb.Listen(ctx, "127.0.0.1:0", "echo")
	if err != nil {
		b.Fatal(err)
	}
	c, err := ba.Connect(ctx, l.Address)
	if err != nil {
		b.Fatal(err)
	}
	tmp, err := a.NewContext("")
	if err != nil {
		b.Fatal(err)
	}
	defer tmp.Close()
	r := routing.Route{c.Worker, routing.Local("echo")}
	payload := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := tmp.Send(ctx, r, payload); err != nil {
			b.Fatal(err)
		}
		if _, err := tmp.Receive(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
