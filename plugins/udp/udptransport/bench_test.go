package udptransport

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLink measures one dialled link to its accepted peer in-process:
// delivered messages per second for message and datagram sizes, with and
// without recvmmsg/sendmmsg. UDP does not wait for the receiver, so the
// sender pauses whenever it is more than a window ahead of what arrived
// (the figure is what gets through, not what was sent); loss is reported.
//
//	go test -run '^$' -bench Link -benchtime 2s ./plugins/udp/udptransport
func BenchmarkLink(b *testing.B) {
	for _, c := range []struct{ msg, dgram, batch int }{
		{1200, 1200, 32},
		{64, 1472, 32}, {64, 1472, 1},
		{1200, 1472, 32}, {1200, 1472, 1}, {1200, 1472, 8}, {1200, 1472, 128},
		{8 << 10, 1200, 32}, {8 << 10, 1472, 32}, {8 << 10, 9000, 32}, {8 << 10, 16384, 32},
		{64 << 10, 1200, 32}, {64 << 10, 1472, 32}, {64 << 10, 9000, 32}, {64 << 10, 65507, 32},
	} {
		b.Run(fmt.Sprintf("msg=%d/dgram=%d/batch=%d", c.msg, c.dgram, c.batch), func(b *testing.B) {
			benchLink(b, c.msg, c.dgram, c.batch)
		})
	}
}

func benchLink(b *testing.B, msgSize, dgram, batch int) {
	settings := map[string]string{
		SettingDatagramSize: fmt.Sprint(dgram),
		SettingBatchSize:    fmt.Sprint(batch),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, cli := newConfigured(b, settings), newConfigured(b, settings)
	defer srv.Close()
	defer cli.Close()
	ln, err := srv.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	c, err := cli.Dial(ctx, ln.Addr())
	if err != nil {
		b.Fatal(err)
	}
	sv, err := ln.Accept(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ms, err := sv.Recv(rctx)
			if err != nil {
				return
			}
			got.Add(int64(len(ms)))
		}
	}()
	const perSend = 64
	window := int64(max(perSend, (4<<20)/msgSize))
	batchOf := make([][]byte, perSend)
	for i := range batchOf {
		batchOf[i] = make([]byte, msgSize)
	}
	b.SetBytes(int64(msgSize))
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	sent := 0
	for sent < b.N {
		k := min(perSend, b.N-sent)
		// Stay at most a window ahead; give up waiting after a while
		// (those datagrams were lost).
		for wait := time.Now(); int64(sent)-got.Load() > window && time.Since(wait) < 50*time.Millisecond; {
			time.Sleep(50 * time.Microsecond)
		}
		if err := c.Send(ctx, batchOf[:k]); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	for last, t := got.Load(), time.Now(); got.Load() < int64(sent) && time.Since(t) < 200*time.Millisecond; {
		if n := got.Load(); n != last {
			last, t = n, time.Now()
		}
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	stop()
	<-done
	n := got.Load()
	b.ReportMetric(float64(n)/el.Seconds(), "delivered/s")
	b.ReportMetric(float64(n)*float64(msgSize)/el.Seconds()/1e6, "MB/s")
	b.ReportMetric(100*float64(int64(sent)-n)/float64(sent), "loss%")
	if n > 0 {
		// Process CPU time (sender and receiver) per delivered message:
		// steadier than wall clock on a shared machine.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/msg")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
