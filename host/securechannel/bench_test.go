package securechannel

import (
	"context"
	"fmt"
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

// BenchmarkOneWay sends b.N messages of each size through a channel between
// two workers on one node (no transport), so it measures the channel alone.
func BenchmarkOneWay(b *testing.B) {
	for _, size := range []int{64, 16 << 10, 60 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			n := newNode(b, "one")
			s := &benchSink{want: int64(b.N), done: make(chan struct{})}
			startService(b, n, "sink", s)
			if _, err := Listen(n, "", ListenerConfig{Config: Config{Identity: newIdentity(b, "r")}, Allow: []string{"sink"}}); err != nil {
				b.Fatal(err)
			}
			ch, err := Create(tctx(b), n, routing.Route{routing.Local("api")}, Config{Identity: newIdentity(b, "i")})
			if err != nil {
				b.Fatal(err)
			}
			to := routing.Route{ch.Address(), routing.Local("sink")}
			payload := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				if err := n.Send(ctx, to, payload); err != nil {
					b.Fatal(err)
				}
			}
			<-s.done
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
