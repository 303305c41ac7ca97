package portals

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/sdk/routing"
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

// connRoundTrip connects to addr, sends buf, reads as much back and closes:
// one connection of the conn/s benchmarks.
func connRoundTrip(b *testing.B, addr string, buf []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(buf); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatal(err)
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
		connRoundTrip(b, p.inlet.Addr(), buf)
	}
}

// countingHop forwards like services.Hop and counts the frames it passes
// by kind: how many messages a session needs per operation (each one is a
// crossing of every node and plugin on a real path).
type countingHop struct {
	mu sync.Mutex
	n  map[byte]int
}

func (h *countingHop) HandleMessage(c *node.Context, m *routing.Message) error {
	h.mu.Lock()
	if len(m.Payload) > 0 {
		h.n[m.Payload[0]]++
	}
	h.mu.Unlock()
	return c.Forward(c, m)
}

func (h *countingHop) reset() {
	h.mu.Lock()
	h.n = map[byte]int{}
	h.mu.Unlock()
}

func (h *countingHop) report(b *testing.B) {
	h.mu.Lock()
	defer h.mu.Unlock()
	total := 0
	for k, v := range h.n {
		total += v
		b.ReportMetric(float64(v)/float64(b.N), kindName(k)+"/op")
	}
	b.ReportMetric(float64(total)/float64(b.N), "msgs/op")
}

func countedPair(b *testing.B) (*pair, *countingHop) {
	hop := &countingHop{n: map[byte]int{}}
	p := newPairTB(b, startEchoB(b), pairOptions{route: "/service/count/service/outlet"})
	if _, err := p.n.StartWorker("count", hop); err != nil {
		b.Fatal(err)
	}
	return p, hop
}

// BenchmarkSessionMessagesRTT: frames per 64-byte round trip (in-process
// pair). Data carries acks, so the steady state is 2 (4 before protocol 3).
func BenchmarkSessionMessagesRTT(b *testing.B) {
	p, hop := countedPair(b)
	c, err := net.Dial("tcp", p.inlet.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 50 {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	hop.reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	hop.report(b)
}

// BenchmarkSessionMessagesConn: frames per connection (connect, one
// 64-byte round trip, close), counted once every session has ended.
func BenchmarkSessionMessagesConn(b *testing.B) {
	p, hop := countedPair(b)
	buf := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		connRoundTrip(b, p.inlet.Addr(), buf)
	}
	b.StopTimer()
	deadline := time.Now().Add(30 * time.Second)
	for p.inlet.Status().ActiveSessions != 0 || p.outlet.Status().ActiveSessions != 0 {
		if time.Now().After(deadline) {
			b.Fatal("sessions did not end within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	hop.report(b)
}

// BenchmarkTwoNodeUpload streams 64 KiB chunks from an inlet on one node to
// an outlet on another over the in-process TCP transport (both nodes in
// this process): B/op and allocs/op are the whole path's per 256 KiB.
func BenchmarkTwoNodeUpload(b *testing.B) {
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
	tn := newTwoNodes(b, l.Addr().String(), SessionOptions{ChunkSize: 64 << 10})
	c, err := net.Dial("tcp", tn.inlet.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
