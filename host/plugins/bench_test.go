package plugins

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkEcho measures the host side of one gRPC crossing (host → plugin
// → host over an echo link); ferrybench's grpc section prints the table.
func BenchmarkEcho(b *testing.B) {
	c, err := Launch(context.Background(), LaunchConfig{Path: pluginBin})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Kill()
	for _, size := range []int{64, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			ctx := context.Background()
			link, err := c.Transport().Dial(ctx, "echo")
			if err != nil {
				b.Fatal(err)
			}
			defer link.Close()
			batch := max(1, min(64, (256<<10)/size))
			packets := make([][]byte, batch)
			for i := range packets {
				packets[i] = make([]byte, size)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			done := make(chan error, 1)
			go func() {
				for sent := 0; sent < b.N; sent += batch {
					if err := link.Send(ctx, packets[:min(batch, b.N-sent)]); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for got := 0; got < b.N; {
				ps, err := link.Recv(ctx)
				if err != nil {
					b.Fatal(err)
				}
				got += len(ps)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
