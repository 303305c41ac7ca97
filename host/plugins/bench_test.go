package plugins

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkEcho measures the host side of one gRPC crossing (host → plugin
// → host over an echo link); ferrybench's grpc section prints the table.
func BenchmarkEcho(b *testing.B) {
	var env []string
	if p := os.Getenv("FERRY_TESTPLUGIN_CPUPROFILE"); p != "" {
		env = append(env, "FERRY_TESTPLUGIN_CPUPROFILE="+p)
	}
	c, err := Launch(context.Background(), LaunchConfig{Path: pluginBin, Env: env, DisableMTLS: os.Getenv("FERRY_BENCH_NO_MTLS") != ""})
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
			hostCPU, pluginCPU := cpuTime(os.Getpid()), cpuTime(c.Pid())
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
			b.StopTimer()
			// CPU per message shows the cost even on a busy machine.
			b.ReportMetric(float64(cpuTime(os.Getpid())-hostCPU)/float64(b.N), "host-cpu-ns/op")
			b.ReportMetric(float64(cpuTime(c.Pid())-pluginCPU)/float64(b.N), "plugin-cpu-ns/op")
		})
	}
}

// cpuTime is the user+system CPU time of process pid in nanoseconds, from
// /proc (0 where there is no /proc).
func cpuTime(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	// Fields 14 and 15 of stat (utime, stime), in clock ticks of 10ms.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * 10_000_000
}

// BenchmarkEchoRTT measures one 64-byte packet host → plugin → host and
// back, one at a time: the latency of a crossing pair, with CPU per round
// trip on each side.
func BenchmarkEchoRTT(b *testing.B) {
	var env []string
	if p := os.Getenv("FERRY_TESTPLUGIN_CPUPROFILE"); p != "" {
		env = append(env, "FERRY_TESTPLUGIN_CPUPROFILE="+p)
	}
	c, err := Launch(context.Background(), LaunchConfig{Path: pluginBin, Env: env, DisableMTLS: os.Getenv("FERRY_BENCH_NO_MTLS") != ""})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Kill()
	ctx := context.Background()
	link, err := c.Transport().Dial(ctx, "echo")
	if err != nil {
		b.Fatal(err)
	}
	defer link.Close()
	packets := [][]byte{make([]byte, 64)}
	hostCPU, pluginCPU := cpuTime(os.Getpid()), cpuTime(c.Pid())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := link.Send(ctx, packets); err != nil {
			b.Fatal(err)
		}
		ps, err := link.Recv(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(ps) != 1 || len(ps[0]) != 64 {
			b.Fatalf("got %d packets back, want one of 64 bytes", len(ps))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(os.Getpid())-hostCPU)/float64(b.N), "host-cpu-ns/op")
	b.ReportMetric(float64(cpuTime(c.Pid())-pluginCPU)/float64(b.N), "plugin-cpu-ns/op")
}
