package tcptransport

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkLink measures one-way throughput over a loopback link in
// batches of 64 packets.
func BenchmarkLink(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			c, s, _ := pair(b, nil)
			defer c.Close()
			defer s.Close()
			const batch = 64
			pkts := make([][]byte, batch)
			for i := range pkts {
				pkts[i] = make([]byte, size)
			}
			ctx := context.Background()
			done := make(chan error, 1)
			go func() {
				for got := 0; got < b.N; {
					p, err := s.Recv(ctx)
					if err != nil {
						done <- err
						return
					}
					got += len(p)
				}
				done <- nil
			}()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += batch {
				n := min(batch, b.N-sent)
				if err := c.Send(ctx, pkts[:n]); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
