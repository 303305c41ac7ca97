package serialtransport

import (
	"fmt"
	"testing"
)

// BenchmarkLink measures one-way throughput of 64 KiB packets over a pty
// null modem for several frame sizes.
func BenchmarkLink(b *testing.B) {
	for _, frame := range []int{256, 1024, 4096, 16384} {
		b.Run(fmt.Sprintf("frame=%d", frame), func(b *testing.B) {
			nm := newNullModem(b)
			s := withSettings(map[string]string{SettingMaxFrameSize: fmt.Sprint(frame)})
			_, c, sv := pair(b, nm, newConfigured(b, s), newConfigured(b, s))
			ctx := testCtx(b)
			p := make([]byte, 64<<10)
			for i := range p {
				p[i] = byte(i)
			}
			batch := [][]byte{p, p, p, p, p, p, p, p}
			b.SetBytes(int64(len(p)))
			b.ResetTimer()
			errc := make(chan error, 1)
			go func() {
				for sent := 0; sent < b.N; sent += len(batch) {
					if err := c.Send(ctx, batch[:min(len(batch), b.N-sent)]); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			for got := 0; got < b.N; {
				r, err := sv.Recv(ctx)
				if err != nil {
					b.Fatal(err)
				}
				got += len(r)
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		})
	}
}
