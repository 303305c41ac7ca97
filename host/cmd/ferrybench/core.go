package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

// The core section measures the node on its own: local delivery, request/
// reply through built-in services, and the cost of idle workers. Baselines
// are plain Go doing the same job (a channel hand-off, a channel ping-pong,
// a goroutine blocked on a channel per worker).
var coreSection = section{
	name: "core",
	desc: "node runtime: local delivery, request/reply, idle workers",
	run:  runCore,
}

type coreSizes struct {
	oneWay    int // messages per sender in the delivery runs
	pairs     int
	roundTrip int
	idle      int // idle workers
	baseIdle  int // goroutine-per-worker baseline (costly, so smaller)
}

func runCore(ctx context.Context, cfg config) (*table, error) {
	sz := coreSizes{oneWay: 2_000_000, pairs: 64, roundTrip: 200_000, idle: 1_000_000, baseIdle: 100_000}
	if cfg.quick {
		sz = coreSizes{oneWay: 20_000, pairs: 8, roundTrip: 2_000, idle: 10_000, baseIdle: 10_000}
	}
	t := newTable("measurement", "ferry", "CPU/op", "baseline", "CPU/op", "ratio", "target")
	t.note("load average at start: %s (GOMAXPROCS=%d); wall-clock rates suffer on a shared machine, CPU/op much less", loadAverage(), runtime.GOMAXPROCS(0))

	// Idle workers first, while the heap is small and RSS still meaningful.
	idle, err := measureIdle(sz.idle)
	if err != nil {
		return nil, err
	}
	base := measureIdleGoroutines(sz.baseIdle)
	scale := float64(sz.idle) / float64(sz.baseIdle)
	t.add(fmt.Sprintf("idle worker, Go heap+stacks (%s workers)", fmtCount(sz.idle)),
		fmtBytes(idle.heapPerWorker), "", fmtBytes(base.heapPerWorker), "", fmtRatio(idle.heapPerWorker, base.heapPerWorker), "≤ 1 KiB")
	t.add("idle worker, process RSS growth", fmtBytes(idle.rssPerWorker), "", fmtBytes(base.rssPerWorker), "", fmtRatio(idle.rssPerWorker, base.rssPerWorker), "")
	baseStart := time.Duration(float64(base.start) * scale)
	t.add(fmt.Sprintf("start %s workers (wall)", fmtCount(sz.idle)), fmtDur(idle.start), fmtCPU(idle.cpu/time.Duration(sz.idle)),
		fmtDur(baseStart), fmtCPU(base.cpu/time.Duration(sz.baseIdle)), fmtRatio(float64(idle.start), float64(baseStart)), "≤ 3s")
	t.add(fmt.Sprintf("start %s workers (process CPU)", fmtCount(sz.idle)), fmtDur(idle.cpu), "",
		fmtDur(time.Duration(float64(base.cpu)*scale)), "", fmtRatio(float64(idle.cpu), float64(base.cpu)*scale), "")
	t.note("idle baseline: one goroutine blocked on its own channel per worker (%s of them, scaled to %s)", fmtCount(sz.baseIdle), fmtCount(sz.idle))
	t.note("%s idle workers: Go heap+stacks %s, RSS grew %s, goroutines added %d", fmtCount(sz.idle),
		fmtBytes(idle.heapPerWorker*float64(sz.idle)), fmtBytes(idle.rssPerWorker*float64(sz.idle)), idle.goroutines)

	// One-way delivery.
	r1, err := measureDelivery(ctx, 1, sz.oneWay)
	if err != nil {
		return nil, err
	}
	b1 := channelDelivery(1, sz.oneWay)
	t.add("one-way delivery, 1 sender → 1 worker (msg/s)", fmtRate(r1.rate), fmtCPU(r1.cpu), fmtRate(b1.rate), fmtCPU(b1.cpu), fmtRatio(r1.rate, b1.rate), "")
	per := sz.oneWay / sz.pairs * 2
	rN, err := measureDelivery(ctx, sz.pairs, per)
	if err != nil {
		return nil, err
	}
	bN := channelDelivery(sz.pairs, per)
	t.add(fmt.Sprintf("one-way delivery, %d sender/worker pairs (msg/s)", sz.pairs), fmtRate(rN.rate), fmtCPU(rN.cpu), fmtRate(bN.rate), fmtCPU(bN.cpu), fmtRatio(rN.rate, bN.rate), "≥ 3.00M")
	t.note("delivery baseline: a buffered Go channel (1024) per pair carrying routing.Message values")

	// Request/reply.
	rrEcho, err := measureRoundTrips(ctx, "/service/echo", sz.roundTrip)
	if err != nil {
		return nil, err
	}
	bPing := channelPingPong(sz.roundTrip)
	t.add("request/reply via echo (round trips/s)", fmtRate(rrEcho.rate), fmtCPU(rrEcho.cpu), fmtRate(bPing.rate), fmtCPU(bPing.cpu), fmtRatio(rrEcho.rate, bPing.rate), "")
	rrHops, err := measureRoundTrips(ctx, "/service/h1/service/h2/service/h3/service/echo", sz.roundTrip/2)
	if err != nil {
		return nil, err
	}
	t.add("request/reply via 3 hops + echo (round trips/s)", fmtRate(rrHops.rate), fmtCPU(rrHops.cpu), fmtRate(bPing.rate), fmtCPU(bPing.cpu), fmtRatio(rrHops.rate, bPing.rate), "")
	t.note("round-trip baseline: two goroutines ping-ponging over a pair of unbuffered channels")
	t.note("load average at end: %s", loadAverage())
	return t, nil
}

// rate is a throughput and the process CPU time spent per operation.
type rate struct {
	rate float64
	cpu  time.Duration
}

func newRate(ops int, wall, cpu time.Duration) rate {
	return rate{rate: float64(ops) / wall.Seconds(), cpu: cpu / time.Duration(ops)}
}

// --- idle workers ---

type idleResult struct {
	heapPerWorker float64
	rssPerWorker  float64
	start         time.Duration
	cpu           time.Duration
	goroutines    int
}

type idleWorker struct{ handled int }

func (w *idleWorker) HandleMessage(*node.Context, *routing.Message) error { w.handled++; return nil }

func measureIdle(count int) (idleResult, error) {
	var res idleResult
	heap0, rss0 := heapAndRSS()
	g0 := runtime.NumGoroutine()
	n, err := node.New(node.Config{Name: "bench-idle"})
	if err != nil {
		return res, err
	}
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < count; i++ {
		if _, err := n.StartWorker("", &idleWorker{}); err != nil {
			return res, fmt.Errorf("start idle worker %d: %w", i, err)
		}
	}
	res.start, res.cpu = time.Since(start), cpuTime()-cpu0
	heap1, rss1 := heapAndRSS()
	res.goroutines = runtime.NumGoroutine() - g0
	res.heapPerWorker = float64(int64(heap1)-int64(heap0)) / float64(count)
	res.rssPerWorker = float64(int64(rss1)-int64(rss0)) / float64(count)
	if n.WorkerCount() < count {
		return res, fmt.Errorf("only %d of %d workers running", n.WorkerCount(), count)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		return res, err
	}
	runtime.GC()
	debug.FreeOSMemory()
	return res, nil
}

func measureIdleGoroutines(count int) idleResult {
	var res idleResult
	heap0, rss0 := heapAndRSS()
	chans := make([]chan routing.Message, count)
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cpuTime()
	for i := range chans {
		ch := make(chan routing.Message, 16)
		chans[i] = ch
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ch {
			}
		}()
	}
	res.start, res.cpu = time.Since(start), cpuTime()-cpu0
	heap1, rss1 := heapAndRSS()
	res.heapPerWorker = float64(int64(heap1)-int64(heap0)) / float64(count)
	res.rssPerWorker = float64(int64(rss1)-int64(rss0)) / float64(count)
	for _, ch := range chans {
		close(ch)
	}
	wg.Wait()
	runtime.GC()
	debug.FreeOSMemory()
	return res
}

// heapAndRSS returns HeapAlloc plus goroutine stack memory after a GC, and
// the process's resident set size.
func heapAndRSS() (uint64, uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse, readRSS()
}

func readRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) >= 1 {
				kb, _ := strconv.ParseUint(fields[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// --- delivery ---

// counter counts messages and signals when it has seen want of them.
type counter struct {
	want, got int
	done      chan struct{}
}

func (c *counter) HandleMessage(*node.Context, *routing.Message) error {
	c.got++
	if c.got == c.want {
		close(c.done)
	}
	return nil
}

func measureDelivery(ctx context.Context, pairs, perSender int) (rate, error) {
	n, err := node.New(node.Config{Name: "bench-delivery"})
	if err != nil {
		return rate{}, err
	}
	defer n.Shutdown(ctx)
	counters := make([]*counter, pairs)
	senders := make([]*node.Context, pairs)
	routes := make([]routing.Route, pairs)
	for i := range counters {
		counters[i] = &counter{want: perSender, done: make(chan struct{})}
		a, err := n.StartWorker("", counters[i])
		if err != nil {
			return rate{}, err
		}
		routes[i] = routing.Route{a}
		if senders[i], err = n.NewContext(""); err != nil {
			return rate{}, err
		}
	}
	payload := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	errs := make(chan error, pairs)
	start, cpu0 := time.Now(), cpuTime()
	for i := range senders {
		go func() {
			for j := 0; j < perSender; j++ {
				if err := senders[i].Send(ctx, routes[i], payload); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range senders {
		if err := <-errs; err != nil {
			return rate{}, err
		}
	}
	for _, c := range counters {
		select {
		case <-c.done:
		case <-ctx.Done():
			return rate{}, ctx.Err()
		}
	}
	return newRate(pairs*perSender, time.Since(start), cpuTime()-cpu0), nil
}

func channelDelivery(pairs, perSender int) rate {
	payload := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < pairs; i++ {
		ch := make(chan routing.Message, 1024)
		wg.Add(2)
		go func() {
			defer wg.Done()
			got := 0
			for range ch {
				got++
			}
		}()
		go func() {
			defer wg.Done()
			r := routing.Route{routing.Local("x")}
			for j := 0; j < perSender; j++ {
				ch <- routing.Message{Onward: r, Return: r, Payload: payload}
			}
			close(ch)
		}()
	}
	wg.Wait()
	return newRate(pairs*perSender, time.Since(start), cpuTime()-cpu0)
}

// --- request/reply ---

func measureRoundTrips(ctx context.Context, route string, count int) (rate, error) {
	n, err := node.New(node.Config{Name: "bench-rr"})
	if err != nil {
		return rate{}, err
	}
	defer n.Shutdown(ctx)
	if _, err := services.Start(n, "echo", ""); err != nil {
		return rate{}, err
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		if _, err := services.Start(n, "hop", h); err != nil {
			return rate{}, err
		}
	}
	r, err := routing.ParseRoute(route)
	if err != nil {
		return rate{}, err
	}
	c, err := n.NewContext("")
	if err != nil {
		return rate{}, err
	}
	defer c.Close()
	payload := []byte("ping")
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < count; i++ {
		if err := c.Send(ctx, r, payload); err != nil {
			return rate{}, err
		}
		m, err := c.Receive(ctx)
		if err != nil {
			return rate{}, err
		}
		if len(m.Payload) != len(payload) {
			return rate{}, fmt.Errorf("reply %q from %s", m.Payload, route)
		}
	}
	return newRate(count, time.Since(start), cpuTime()-cpu0), nil
}

func channelPingPong(count int) rate {
	ping, pong := make(chan routing.Message), make(chan routing.Message)
	go func() {
		for m := range ping {
			pong <- m
		}
	}()
	r := routing.Route{routing.Local("x")}
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < count; i++ {
		ping <- routing.Message{Onward: r, Payload: []byte("ping")}
		<-pong
	}
	res := newRate(count, time.Since(start), cpuTime()-cpu0)
	close(ping)
	return res
}

// cpuTime returns the process's user+system CPU time. The machine may be
// shared, so next to wall-clock rates the table shows CPU cost per
// operation, which other processes disturb much less.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// fmtCPU prints a per-operation CPU time with nanosecond resolution.
func fmtCPU(d time.Duration) string {
	if d < time.Microsecond {
		return fmt.Sprintf("%dns", d.Nanoseconds())
	}
	return fmtDur(d)
}

func fmtBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	}
	return fmt.Sprintf("%.0f B", b)
}

func fmtCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}
