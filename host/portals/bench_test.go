package portals

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/ferryhq/ferry/host/plugins"
)

func BenchmarkPortalUpload(b *testing.B) {
	for _, so := range []SessionOptions{
		{ChunkSize: 16 << 10}, {ChunkSize: 32 << 10}, {ChunkSize: 64 << 10}, {ChunkSize: 128 << 10},
		{ChunkSize: 64 << 10, Window: 4 << 20}, {ChunkSize: 256 << 10, Window: 4 << 20},
	} {
		b.Run(fmt.Sprintf("chunk=%dK/window=%dK", so.ChunkSize>>10, max(so.Window, DefaultWindow)>>10), func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(io.Discard, c); c.Close() }()
				}
			}()
			p := newPairTB(b, l.Addr().String(), pairOptions{session: so})
			c, err := net.Dial("tcp", p.inlet.Addr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 256<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPluginPortalUpload(b *testing.B) {
	ctx := context.Background()
	pc, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: pluginBin})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Kill()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	p := newPairTB(b, l.Addr().String(), pairOptions{portal: pc.Portal()})
	c, err := net.Dial("tcp", p.inlet.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// startEchoB serves an echo target for benchmarks.
func startEchoB(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

// BenchmarkPluginPortalRTT: 64-byte round trips through the plugin path.
func BenchmarkPluginPortalRTT(b *testing.B) {
	pc, err := plugins.Launch(context.Background(), plugins.LaunchConfig{Kind: plugins.KindPortal, Path: pluginBin})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Kill()
	p := newPairTB(b, startEchoB(b), pairOptions{portal: pc.Portal()})
	c, err := net.Dial("tcp", p.inlet.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPluginPortalConn: connect, one 64-byte round trip, close.
func BenchmarkPluginPortalConn(b *testing.B) {
	pc, err := plugins.Launch(context.Background(), plugins.LaunchConfig{Kind: plugins.KindPortal, Path: pluginBin})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Kill()
	p := newPairTB(b, startEchoB(b), pairOptions{portal: pc.Portal()})
	buf := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := net.Dial("tcp", p.inlet.Addr())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
