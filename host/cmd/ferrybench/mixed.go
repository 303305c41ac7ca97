package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/plugins/udp/udptransport"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// The mixed section measures a portal over the issue-13 path, UDP → TCP →
// Kafka, one node per hop end, against direct TCP to the same target. Each
// hop's share shows in the rows with that hop removed, and the UDP hop's
// tolerance of loss in the rows with a lossy proxy in front of it. Everything
// is in this process: nodes, transports, portals, the kfake broker.
var mixedSection = section{
	name: "mixed",
	desc: "portal over a mixed UDP → TCP → Kafka path (in-process), each hop's share, UDP loss vs direct TCP",
	run:  runMixed,
}

// hop is one link of a path: its transport and, for UDP, the fraction of
// datagrams a proxy in front of the listener drops in each direction.
type hop struct {
	kind string // "udp", "tcp" or "kafka"
	loss float64
}

type mixedSizes struct {
	bytes    int64         // single-stream upload on loss-free rows
	lossTime time.Duration // how long a lossy row's single stream writes
	rtt      int           // 64 B round trips (lossy rows: a fifth)
	runs     int           // best of this many uploads
}

type mixedResult struct {
	rate float64 // bytes/s, one stream
	p50  time.Duration
	lost int // datagrams the proxy dropped, lossy rows only
}

func runMixed(ctx context.Context, cfg config) (*table, error) {
	sz := mixedSizes{bytes: 64 << 20, lossTime: 4 * time.Second, rtt: 1000, runs: 2}
	if cfg.quick {
		sz = mixedSizes{bytes: 1 << 20, lossTime: 500 * time.Millisecond, rtt: 50, runs: 1}
	}
	target, stopTarget, err := startBenchTarget()
	if err != nil {
		return nil, err
	}
	defer stopTarget()
	counting, stopCounting, err := startCountingTarget()
	if err != nil {
		return nil, err
	}
	defer stopCounting()
	brokers, stopKfake, err := startKfake()
	if err != nil {
		return nil, err
	}
	defer stopKfake()

	direct, err := measureMixed(ctx, target, sz.bytes, sz)
	if err != nil {
		return nil, fmt.Errorf("direct TCP: %w", err)
	}
	paths := []struct {
		name  string
		hops  []hop
		lossy bool
		chunk int // portal chunk size; 0: the default
	}{
		{"udp → tcp → kafka (full path)", []hop{{kind: "udp"}, {kind: "tcp"}, {kind: "kafka"}}, false, 0},
		{"tcp → kafka (udp removed)", []hop{{kind: "tcp"}, {kind: "kafka"}}, false, 0},
		{"udp → tcp (kafka removed)", []hop{{kind: "udp"}, {kind: "tcp"}}, false, 0},
		{"udp alone", []hop{{kind: "udp"}}, false, 0},
		{"udp alone, via 0% proxy", []hop{{kind: "udp", loss: 0}}, true, 0},
		{"udp alone, 1% loss", []hop{{kind: "udp", loss: 0.01}}, true, 0},
		{"udp alone, 5% loss", []hop{{kind: "udp", loss: 0.05}}, true, 0},
		// Losing one datagram loses its whole message, so smaller chunks
		// lose less per drop: the same rows with 8 KiB chunks.
		{"udp, 0% proxy, chunk 8 KiB", []hop{{kind: "udp", loss: 0}}, true, 8 << 10},
		{"udp, 1% loss, chunk 8 KiB", []hop{{kind: "udp", loss: 0.01}}, true, 8 << 10},
	}
	res := make([]mixedResult, len(paths))
	for i, p := range paths {
		measure := func(addr string) (mixedResult, error) { return measureMixed(ctx, addr, sz.bytes, sz) }
		tgt := target
		if p.lossy {
			tgt = counting.addr()
			measure = func(addr string) (mixedResult, error) { return measureLossy(ctx, addr, counting, sz) }
		}
		start := time.Now()
		r, err := benchMixedPath(ctx, p.hops, p.lossy, p.chunk, brokers, tgt, measure)
		if os.Getenv("FERRYBENCH_DEBUG") != "" {
			fmt.Fprintf(os.Stderr, "mixed: %s took %s\n", p.name, time.Since(start).Round(time.Millisecond))
		}
		if err != nil {
			fmt.Println("DEBUG", p.name, err)
			continue
		}
		res[i] = r
	}

	t := newTable("path (inlet → … → outlet)", "MB/s 1 stream", "÷ direct", "64 B RTT p50", "× direct", "÷ loss-free", "dropped", "target")
	t.add("direct TCP (baseline)", fmtMBps(direct.rate), "1.00x", fmtDur(direct.p50), "1.00x", "", "", "")
	lossFree := 0.0
	for i, p := range paths {
		r := res[i]
		rel, dropped, goal := "", "", ""
		if p.lossy {
			if p.hops[0].loss == 0 { // the loss-free row precedes its lossy ones
				lossFree = r.rate
			} else {
				rel = fmtRatio(r.rate, lossFree)
			}
			dropped = fmt.Sprint(r.lost)
			if p.hops[0].loss == 0.01 {
				goal = "≥ 0.50x loss-free"
			}
		}
		t.add(p.name, fmtMixedMBps(r.rate), fmtRatio(r.rate, direct.rate), fmtDur(r.p50), fmtRatio(float64(r.p50), float64(direct.p50)), rel, dropped, goal)
	}
	t.note("all in this process: one node per hop end, in-process transports (udptransport, tcptransport, kafkatransport on one kfake broker), in-process tcpportal; inlet on the first node, outlet on the last to a local TCP sink/echo")
	t.note("the route names each hop's connection worker: /worker/<udp conn>/service/hop/worker/<tcp conn>/service/hop/worker/<kafka conn>/service/outlet, as in configs/udp-tcp-kafka.hcl; each listener allows only hop (outlet on the last node)")
	t.note("a hop's share: compare the full path with the row where it is removed; throughput: best of %d upload(s) of %d MiB, counted until the target acknowledged EOF; RTT p50 of %d round trips",
		sz.runs, sz.bytes>>20, sz.rtt)
	t.note("lossy rows: a UDP proxy in front of the listener drops that fraction of datagrams each way (at random, both directions); throughput is the bytes the target received while the client wrote for %s (bounded time: loss makes byte counts slow); RTT p50 of %d round trips",
		sz.lossTime, max(sz.rtt/5, 20))
	t.note("÷ loss-free is against the 0%% proxy row above it, measured the same way; portal sessions retransmit end to end (chunk %d KiB unless the row says, window %d KiB, UDP datagram %d B)",
		portals.DefaultChunkSize>>10, portals.DefaultWindow>>10, udptransport.DefaultDatagramSize)
	return t, nil
}

// fmtMixedMBps keeps two digits for the slow lossy rows, where fmtMBps
// would print 0.
func fmtMixedMBps(bytesPerSec float64) string {
	if bytesPerSec < 10e6 {
		return fmt.Sprintf("%.2f MB/s", bytesPerSec/1e6)
	}
	return fmtMBps(bytesPerSec)
}

// measureMixed runs the single-stream upload and the round trips at addr.
func measureMixed(ctx context.Context, addr string, size int64, sz mixedSizes) (mixedResult, error) {
	var res mixedResult
	// Warm up links, sessions and buffers.
	if _, err := uploadRate(ctx, addr, 1, min(size, 1<<20)); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	for range sz.runs {
		r, err := uploadRate(ctx, addr, 1, size)
		if err != nil {
			return res, err
		}
		res.rate = max(res.rate, r)
	}
	p50, _, err := roundTrips(addr, sz.rtt)
	if err != nil {
		return res, fmt.Errorf("round trips: %w", err)
	}
	res.p50 = p50
	return res, nil
}

// measureLossy measures a lossy path in bounded time: the round trips
// first (they also open the path), then one stream written for
// sz.lossTime, its rate what the counting target received meanwhile.
func measureLossy(ctx context.Context, addr string, ct *countingTarget, sz mixedSizes) (mixedResult, error) {
	var res mixedResult
	p50, _, err := roundTrips(addr, max(sz.rtt/5, 20))
	if err != nil {
		return res, fmt.Errorf("round trips: %w", err)
	}
	res.p50 = p50
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{targetCount}); err != nil {
		return res, err
	}
	// Wait until the target has the connection so the clock starts with data.
	base := ct.received.Load()
	deadline := time.Now().Add(30 * time.Second)
	for ct.received.Load() == base {
		if time.Now().After(deadline) {
			return res, errors.New("the counting target saw no connection within 30s")
		}
		time.Sleep(time.Millisecond)
	}
	base = ct.received.Load()
	start := time.Now()
	end := start.Add(sz.lossTime)
	_ = c.SetWriteDeadline(end)
	buf := make([]byte, 64<<10)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return res, fmt.Errorf("upload: %w", err)
		}
	}
	res.rate = float64(ct.received.Load()-base) / time.Since(start).Seconds()
	return res, nil
}

// targetCount: count what arrives, never answer (beside targetSink and
// targetEcho of the portal section's target).
const targetCount = 'C'

// countingTarget counts every byte that arrives after a connection's mode
// byte, which counts as one.
type countingTarget struct {
	l        net.Listener
	received atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startCountingTarget() (*countingTarget, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	ct := &countingTarget{l: l, conns: map[net.Conn]struct{}{}}
	ct.wg.Add(1)
	go func() {
		defer ct.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ct.mu.Lock()
			ct.conns[c] = struct{}{}
			ct.mu.Unlock()
			ct.wg.Add(1)
			go func() {
				defer ct.wg.Done()
				defer func() {
					ct.mu.Lock()
					delete(ct.conns, c)
					ct.mu.Unlock()
					c.Close()
				}()
				buf := make([]byte, 64<<10)
				n, err := c.Read(buf[:1])
				if err != nil || n == 0 {
					return
				}
				if buf[0] == targetEcho {
					for {
						n, err := c.Read(buf)
						if n > 0 {
							if _, werr := c.Write(buf[:n]); werr != nil {
								return
							}
						}
						if err != nil {
							return
						}
					}
				}
				ct.received.Add(1)
				for {
					n, err := c.Read(buf)
					ct.received.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	stop := func() {
		l.Close()
		ct.mu.Lock()
		for c := range ct.conns {
			c.Close()
		}
		ct.mu.Unlock()
		ct.wg.Wait()
	}
	return ct, stop, nil
}

func (ct *countingTarget) addr() string { return ct.l.Addr().String() }

var mixedTopicSeq atomic.Int64

// benchMixedPath builds len(hops)+1 nodes, node i dialling node i+1 over
// hops[i], puts an inlet on the first and an outlet on the last, and
// measures through it. withProxy puts a lossy proxy in front of the first
// hop's listener (UDP only).
func benchMixedPath(ctx context.Context, hops []hop, withProxy bool, chunk int, brokers, target string, measure func(addr string) (mixedResult, error)) (mixedResult, error) {
	var res mixedResult
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	newT := func(kind string) (transport.Transport, error) {
		switch kind {
		case "udp":
			return udptransport.New(), nil
		case "tcp":
			return tcptransport.New(), nil
		case "kafka":
			t := kafkatransport.New()
			if err := t.Configure(ctx, map[string]string{kafkatransport.SettingBrokers: brokers}); err != nil {
				t.Close()
				return nil, err
			}
			return t, nil
		}
		return nil, fmt.Errorf("unknown transport %q", kind)
	}
	attach := func(n *node.Node, kind string) (*transports.Binding, error) {
		t, err := newT(kind)
		if err != nil {
			return nil, err
		}
		b, err := transports.Attach(n, t, transports.Options{})
		if err != nil {
			t.Close()
			return nil, err
		}
		stops = append(stops, func() { b.Close(); t.Close() })
		return b, nil
	}
	pt := tcpportal.New()
	stops = append(stops, func() { pt.Close() })

	nodes := make([]*node.Node, len(hops)+1)
	for i := range nodes {
		n, err := node.New(node.Config{Name: fmt.Sprintf("m%d", i+1)})
		if err != nil {
			return res, err
		}
		stops = append(stops, func() { n.Shutdown(context.WithoutCancel(ctx)) })
		nodes[i] = n
	}
	last := nodes[len(nodes)-1]
	so := portals.SessionOptions{ChunkSize: chunk}
	o, err := portals.NewOutlet(last, portals.OutletOptions{Target: target, Portal: pt, Session: so})
	if err != nil {
		return res, err
	}
	stops = append(stops, func() { o.Close() })

	// Build from the outlet backwards: node i+1 listens for hops[i] and
	// lets it reach only its hop service (the outlet on the last node),
	// which steps messages onto that node's own next connection, as the
	// hop service does in configs/udp-tcp-kafka.hcl; node i connects to it.
	route := routing.Route{o.Address()}
	var proxy *lossyUDPProxy
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		allow := o.Address().Value
		if i+1 < len(nodes)-1 {
			ha, err := services.Start(nodes[i+1], "hop", "")
			if err != nil {
				return res, err
			}
			allow = ha.Value
			route = append(routing.Route{ha}, route...)
		}
		lb, err := attach(nodes[i+1], h.kind)
		if err != nil {
			return res, fmt.Errorf("hop %d (%s): %w", i+1, h.kind, err)
		}
		addr := "127.0.0.1:0"
		if h.kind == "kafka" {
			addr = fmt.Sprintf("ferrybench-mixed-%d-%d", os.Getpid(), mixedTopicSeq.Add(1))
		}
		lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		li, err := lb.Listen(lctx, addr, allow)
		cancel()
		if err != nil {
			return res, fmt.Errorf("hop %d (%s): %w", i+1, h.kind, err)
		}
		dialAddr := li.Address
		if withProxy && i == 0 {
			if h.kind != "udp" {
				return res, errors.New("a lossy proxy needs a UDP first hop")
			}
			proxy, err = newLossyUDPProxy(li.Address, h.loss)
			if err != nil {
				return res, err
			}
			stops = append(stops, proxy.close)
			dialAddr = proxy.addr()
		}
		db, err := attach(nodes[i], h.kind)
		if err != nil {
			return res, fmt.Errorf("hop %d (%s): %w", i+1, h.kind, err)
		}
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		ci, err := db.Connect(cctx, dialAddr)
		cancel()
		if err != nil {
			return res, fmt.Errorf("hop %d (%s): %w", i+1, h.kind, err)
		}
		route = append(routing.Route{ci.Worker}, route...)
	}
	in, err := portals.NewInlet(ctx, nodes[0], portals.InletOptions{ListenAddress: "127.0.0.1:0", Route: route, Portal: pt, Session: so})
	if err != nil {
		return res, err
	}
	stops = append(stops, func() { in.Close() })
	res, err = measure(in.Addr())
	if proxy != nil {
		res.lost = proxy.dropped()
	}
	return res, err
}

// lossyUDPProxy forwards datagrams between one client and a server,
// dropping a fraction of them in each direction at random.
type lossyUDPProxy struct {
	front, back *net.UDPConn
	loss        float64
	wg          sync.WaitGroup

	mu     sync.Mutex
	rng    *rand.Rand
	drops  int
	client net.Addr
}

func newLossyUDPProxy(server string, loss float64) (*lossyUDPProxy, error) {
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		front.Close()
		return nil, fmt.Errorf("lossy proxy: %w", err)
	}
	back, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		front.Close()
		return nil, fmt.Errorf("lossy proxy: dial %s: %w", server, err)
	}
	_ = front.SetReadBuffer(4 << 20)
	_ = back.SetReadBuffer(4 << 20)
	p := &lossyUDPProxy{front: front, back: back, loss: loss, rng: rand.New(rand.NewPCG(13, 1))}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			p.mu.Lock()
			p.client = from
			p.mu.Unlock()
			if !p.drop() {
				_, _ = back.Write(buf[:n])
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ICMP unreachable reported on a connected socket
			}
			p.mu.Lock()
			to := p.client
			p.mu.Unlock()
			if to != nil && !p.drop() {
				_, _ = front.WriteTo(buf[:n], to)
			}
		}
	}()
	return p, nil
}

func (p *lossyUDPProxy) addr() string { return p.front.LocalAddr().String() }

func (p *lossyUDPProxy) drop() bool {
	if p.loss <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rng.Float64() < p.loss {
		p.drops++
		return true
	}
	return false
}

func (p *lossyUDPProxy) dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drops
}

func (p *lossyUDPProxy) close() {
	p.front.Close()
	p.back.Close()
	p.wg.Wait()
}
