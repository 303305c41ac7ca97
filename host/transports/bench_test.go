package transports_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ferryhq/ferry/host/node"
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

func benchOneWay(b *testing.B, size int) {
	a, err := node.New(node.Config{Name: "a"})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	n2, err := node.New(node.Config{Name: "b"})
	if err != nil {
		b.Fatal(err)
	}
	defer n2.Shutdown(context.Background())
	ba, err := attachB(a)
	if err != nil {
		b.Fatal(err)
	}
	defer ba.Close()
	bb, err := attachB(n2)
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
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
	a, err := node.New(node.Config{Name: "a"})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	n2, err := node.New(node.Config{Name: "b"})
	if err != nil {
		b.Fatal(err)
	}
	defer n2.Shutdown(context.Background())
	ba, err := attachB(a)
	if err != nil {
		b.Fatal(err)
	}
	defer ba.Close()
	bb, err := attachB(n2)
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
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
