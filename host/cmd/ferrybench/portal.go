package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/routing"
)

// The portal section measures TCP through portals against direct TCP to the
// same target, all in one run: bulk throughput (one and four streams),
// 64-byte request/response latency and connections per second. Portals and
// transports run as plugin subprocesses, as `ferry` runs them.
var portalSection = section{
	name: "portal",
	desc: "TCP through portals (plugins as subprocesses) vs direct TCP: throughput, latency, connections/s",
	run:  runPortal,
}

type portalSizes struct {
	single  int64 // bytes in the single-stream run
	multi   int64 // bytes per stream in the 4-stream run
	rtt     int   // round trips
	conns   int   // connections in the connection-rate run
	sweep   int64 // bytes per chunk-size sweep run
	workers int   // concurrent clients in the connection-rate run
}

type portalResult struct {
	single, multi float64 // bytes/s
	p50, p99      time.Duration
	connRate      float64
}

func runPortal(ctx context.Context, cfg config) (*table, error) {
	sz := portalSizes{single: 128 << 20, multi: 32 << 20, rtt: 3000, conns: 1500, sweep: 128 << 20, workers: 4}
	if cfg.quick {
		sz = portalSizes{single: 8 << 20, multi: 2 << 20, rtt: 200, conns: 50, sweep: 4 << 20, workers: 4}
	}
	target, stopTarget, err := startBenchTarget()
	if err != nil {
		return nil, err
	}
	defer stopTarget()

	dir, err := os.MkdirTemp("", "ferrybench-portal")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	portalBin, err := buildPlugin(ctx, dir, "portal-tcp")
	if err != nil {
		return nil, err
	}
	tcpBin, err := buildPlugin(ctx, dir, "tcp")
	if err != nil {
		return nil, err
	}

	direct, err := measurePortalPath(ctx, sz, target)
	if err != nil {
		return nil, fmt.Errorf("direct TCP: %w", err)
	}
	one, err := profiled("one", func() (portalResult, error) { return benchOneNode(ctx, sz, portalBin, target) })
	if err != nil {
		return nil, fmt.Errorf("inlet → outlet on one node: %w", err)
	}
	two, err := profiled("two", func() (portalResult, error) { return benchTwoNodes(ctx, sz, portalBin, tcpBin, target) })
	if err != nil {
		return nil, fmt.Errorf("inlet on n1 → TCP → outlet on n2: %w", err)
	}
	relay, err := profiled("relay", func() (portalResult, error) { return benchRelay(ctx, sz, portalBin, tcpBin, target) })
	if err != nil {
		return nil, fmt.Errorf("relay path n1 → n2 → n3: %w", err)
	}
	inproc, sweep, err := benchInProcess(ctx, sz, target)
	if err != nil {
		return nil, fmt.Errorf("in-process portal: %w", err)
	}

	t := newTable("path", "1 stream", "÷ direct", "4 streams", "÷ direct", "64 B RTT p50", "× direct", "p99", "× direct", "conn/s", "÷ direct")
	row := func(name string, r portalResult) {
		t.add(name,
			fmtMBps(r.single), fmtRatio(r.single, direct.single),
			fmtMBps(r.multi), fmtRatio(r.multi, direct.multi),
			fmtDur(r.p50), fmtRatio(float64(r.p50), float64(direct.p50)),
			fmtDur(r.p99), fmtRatio(float64(r.p99), float64(direct.p99)),
			fmtRate(r.connRate), fmtRatio(r.connRate, direct.connRate))
	}
	row("direct TCP (baseline)", direct)
	row("inlet → outlet, one node", one)
	row("inlet n1 → tcp → outlet n2", two)
	row("relay: n1 → tcp → n2 → tcp → n3", relay)
	row("one node, portal in-process", inproc)
	for _, s := range sweep {
		t.add(fmt.Sprintf("in-process, chunk %d KiB", s.chunk>>10), fmtMBps(s.rate), fmtRatio(s.rate, direct.single), "", "", "", "", "", "", "", "")
	}
	t.note("client and target are in this process; portal-tcp and tcp run as plugin subprocesses (one portal-tcp per node, one tcp per node), gRPC with AutoMTLS")
	t.note("throughput: client writes then half-closes, the target acknowledges after EOF; best of 2 runs of 1 stream × %d MiB and 4 streams × %d MiB; default chunk %d KiB, window %d KiB",
		sz.single>>20, sz.multi>>20, portals.DefaultChunkSize>>10, portals.DefaultWindow>>10)
	t.note("RTT: %d round trips of 64 B on one connection; conn/s: %d × (connect, 64 B round trip, close) from %d concurrent clients", sz.rtt, sz.conns, sz.workers)
	t.note("chunk rows: single stream of %d MiB on the in-process one-node path with that chunk size (window max(%d KiB, 4 chunks))", sz.sweep>>20, portals.DefaultWindow>>10)
	t.note("relay: n3 dials n2 and registers forward_to_n3 at n2's relay service; n1's inlet routes /worker/<n1→n2>/service/forward_to_n3/service/outlet")
	t.note("in-process row: the same one-node path with tcpportal in this process (no plugin boundary), for what the gRPC crossings cost")
	return t, nil
}

// profiled runs one path's measurements; with FERRYBENCH_PROFILE set to a
// directory it writes this process's CPU, block and allocation profiles
// of that path there (NAME.cpu.pprof, NAME.block.pprof, NAME.alloc.pprof).
// The plugins are other processes and are not in them. Block and
// allocation profiles are cumulative over the run: read a later path's
// with -base set to the earlier one's.
func profiled(name string, run func() (portalResult, error)) (portalResult, error) {
	dir := os.Getenv("FERRYBENCH_PROFILE")
	if dir == "" {
		return run()
	}
	cpu, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		return portalResult{}, err
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return portalResult{}, err
	}
	runtime.SetBlockProfileRate(10000) // one sample per 10 µs blocked
	res, err := run()
	pprof.StopCPUProfile()
	runtime.SetBlockProfileRate(0)
	for _, p := range []struct{ profile, file string }{{"block", "block"}, {"allocs", "alloc"}} {
		f, ferr := os.Create(filepath.Join(dir, name+"."+p.file+".pprof"))
		if ferr != nil {
			return res, ferr
		}
		werr := pprof.Lookup(p.profile).WriteTo(f, 0)
		f.Close()
		if werr != nil {
			return res, werr
		}
	}
	return res, err
}

type sweepResult struct {
	chunk int
	rate  float64
}

// benchOneNode measures inlet and outlet on one node sharing one portal
// plugin process.
func benchOneNode(ctx context.Context, sz portalSizes, portalBin, target string) (portalResult, error) {
	pc, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: portalBin})
	if err != nil {
		return portalResult{}, err
	}
	defer pc.Kill()
	return onePair(ctx, sz, pc.Portal(), target)
}

// onePair measures an inlet and an outlet on one node using pt.
func onePair(ctx context.Context, sz portalSizes, pt portal.Portal, target string) (portalResult, error) {
	var res portalResult
	n, err := node.New(node.Config{Name: "bench"})
	if err != nil {
		return res, err
	}
	defer n.Shutdown(context.WithoutCancel(ctx))
	o, err := portals.NewOutlet(n, portals.OutletOptions{Target: target, Portal: pt})
	if err != nil {
		return res, err
	}
	defer o.Close()
	in, err := portals.NewInlet(ctx, n, portals.InletOptions{ListenAddress: "127.0.0.1:0", Route: routing.Route{o.Address()}, Portal: pt})
	if err != nil {
		return res, err
	}
	defer in.Close()
	return measurePortalPath(ctx, sz, in.Addr())
}

// benchTwoNodes measures an inlet on n1 and an outlet on n2, each node with
// its own portal-tcp and tcp plugin processes, n1 reaching n2's listener by
// the route /tcp/ADDR/service/outlet.
func benchTwoNodes(ctx context.Context, sz portalSizes, portalBin, tcpBin, target string) (portalResult, error) {
	var res portalResult
	var ns [2]*node.Node
	var bs [2]*transports.Binding
	var ps [2]portal.Portal
	for i := range ns {
		n, err := node.New(node.Config{Name: fmt.Sprintf("n%d", i+1)})
		if err != nil {
			return res, err
		}
		defer n.Shutdown(context.WithoutCancel(ctx))
		tc, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: tcpBin})
		if err != nil {
			return res, err
		}
		defer tc.Kill()
		b, err := transports.Attach(n, tc.Transport(), transports.Options{})
		if err != nil {
			return res, err
		}
		defer b.Close()
		pc, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: portalBin})
		if err != nil {
			return res, err
		}
		defer pc.Kill()
		ns[i], bs[i], ps[i] = n, b, pc.Portal()
	}
	o, err := portals.NewOutlet(ns[1], portals.OutletOptions{Target: target, Portal: ps[1]})
	if err != nil {
		return res, err
	}
	defer o.Close()
	li, err := bs[1].Listen(ctx, "127.0.0.1:0", o.Address().Value)
	if err != nil {
		return res, err
	}
	route := routing.Route{{Type: "tcp", Value: li.Address}, o.Address()}
	in, err := portals.NewInlet(ctx, ns[0], portals.InletOptions{ListenAddress: "127.0.0.1:0", Route: route, Portal: ps[0]})
	if err != nil {
		return res, err
	}
	defer in.Close()
	return measurePortalPath(ctx, sz, in.Addr())
}

// measurePortalPath runs every measurement against addr, which leads to
// the bench target directly or through a portal.
func measurePortalPath(ctx context.Context, sz portalSizes, addr string) (portalResult, error) {
	var res portalResult
	var err error
	// Warm up: connections, buffers, the plugins' first streams.
	if _, err = uploadRate(ctx, addr, 2, 4<<20); err != nil {
		return res, err
	}
	// Best of two: this machine is shared, and the best run is the one
	// least disturbed by everything else.
	if res.single, err = bestRate(ctx, addr, 1, sz.single); err != nil {
		return res, err
	}
	if res.multi, err = bestRate(ctx, addr, 4, sz.multi); err != nil {
		return res, err
	}
	if res.p50, res.p99, err = roundTrips(addr, sz.rtt); err != nil {
		return res, err
	}
	if res.connRate, err = connRate(addr, sz.conns, sz.workers); err != nil {
		return res, err
	}
	return res, nil
}

// Bench target modes, chosen by a connection's first byte.
const (
	targetSink = 'S' // read until EOF, then answer one byte
	targetEcho = 'E' // echo until EOF
)

func startBenchTarget() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				var mode [1]byte
				if _, err := io.ReadFull(c, mode[:]); err != nil {
					return
				}
				switch mode[0] {
				case targetSink:
					buf := make([]byte, 256<<10)
					for {
						if _, err := c.Read(buf); err != nil {
							break
						}
					}
					c.Write([]byte{1})
				case targetEcho:
					buf := make([]byte, 64<<10)
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
			}()
		}
	}()
	stop := func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
	return l.Addr().String(), stop, nil
}

func bestRate(ctx context.Context, addr string, streams int, size int64) (float64, error) {
	best := 0.0
	for range 2 {
		r, err := uploadRate(ctx, addr, streams, size)
		if err != nil {
			return 0, err
		}
		best = max(best, r)
	}
	return best, nil
}

// uploadRate sends size bytes on each of streams connections at once and
// returns the total bytes per second, counted until every target
// acknowledged the end of its stream.
func uploadRate(ctx context.Context, addr string, streams int, size int64) (float64, error) {
	errs := make(chan error, streams)
	start := time.Now()
	for range streams {
		go func() { errs <- uploadOne(ctx, addr, size) }()
	}
	var first error
	for range streams {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return 0, first
	}
	return float64(size) * float64(streams) / time.Since(start).Seconds(), nil
}

func uploadOne(ctx context.Context, addr string, size int64) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.Write([]byte{targetSink}); err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:n]); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		left -= n
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("wait for the target's acknowledgement: %w", err)
	}
	return nil
}

func roundTrips(addr string, count int) (p50, p99 time.Duration, err error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.Write([]byte{targetEcho}); err != nil {
		return 0, 0, err
	}
	msg := make([]byte, 64)
	got := make([]byte, 64)
	lat := make([]time.Duration, 0, count)
	for i := 0; i < count+count/10; i++ {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return 0, 0, err
		}
		if i >= count/10 { // the first tenth warms up
			lat = append(lat, time.Since(start))
		}
	}
	p50, p99 = percentiles(lat)
	return p50, p99, nil
}

// connRate opens count connections from workers concurrent clients, each:
// connect, one 64-byte round trip, close.
func connRate(addr string, count, workers int) (float64, error) {
	var next sync.Mutex
	left := count
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		go func() {
			msg := make([]byte, 65)
			msg[0] = targetEcho
			got := make([]byte, 64)
			for {
				next.Lock()
				if left == 0 {
					next.Unlock()
					errs <- nil
					return
				}
				left--
				next.Unlock()
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				_, err = c.Write(msg)
				if err == nil {
					_, err = io.ReadFull(c, got)
				}
				c.Close()
				if err != nil {
					errs <- fmt.Errorf("round trip on a new connection: %w", err)
					return
				}
			}
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return 0, first
	}
	return float64(count) / time.Since(start).Seconds(), nil
}

// buildPlugin builds plugins/NAME into dir so the benchmark measures the
// current source.
func buildPlugin(ctx context.Context, dir, name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", bin, "./plugins/"+name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build plugins/%s: %v\n%s", name, err, out)
	}
	if _, err := os.Stat(bin); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("build plugins/%s: no binary at %s", name, bin)
	}
	return bin, nil
}

// tcpNode is a node with its own tcp plugin process bound to it.
func tcpNode(ctx context.Context, name, tcpBin string) (*node.Node, *transports.Binding, func(), error) {
	n, err := node.New(node.Config{Name: name})
	if err != nil {
		return nil, nil, nil, err
	}
	tc, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: tcpBin})
	if err != nil {
		n.Shutdown(context.WithoutCancel(ctx))
		return nil, nil, nil, err
	}
	b, err := transports.Attach(n, tc.Transport(), transports.Options{})
	if err != nil {
		tc.Kill()
		n.Shutdown(context.WithoutCancel(ctx))
		return nil, nil, nil, err
	}
	return n, b, func() { b.Close(); tc.Kill(); n.Shutdown(context.WithoutCancel(ctx)) }, nil
}

// relayPath is the relay path without inlets: n2 listens and runs
// the relay service, n3 only dials out, registers forward_to_n3 at n2 and
// runs an outlet to target, and n1 is connected to n2 (toN2).
type relayPath struct {
	n1, n3 *node.Node
	toN2   transports.ConnectionInfo
	outlet *portals.Outlet
	stops  []func()
}

// close stops everything startRelayPath started, last first.
func (r *relayPath) close() {
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
}

// forwardTo is the route from n1 through n2's relay to addr on n3.
func (r *relayPath) forwardTo(addr routing.Address) routing.Route {
	return routing.Route{r.toN2.Worker, routing.Local("forward_to_n3"), addr}
}

func startRelayPath(ctx context.Context, portalBin, tcpBin, target string) (_ *relayPath, err error) {
	r := &relayPath{}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	n1, b1, stop1, err := tcpNode(ctx, "n1", tcpBin)
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, stop1)
	n2, b2, stop2, err := tcpNode(ctx, "n2", tcpBin)
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, stop2)
	n3, b3, stop3, err := tcpNode(ctx, "n3", tcpBin)
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, stop3)
	r.n1, r.n3 = n1, n3
	svc, err := relays.StartService(n2, relays.ServiceConfig{Flows: relays.ListenerFlows("", b2), Bindings: relayBindings(b2)})
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, func() { svc.Close(context.WithoutCancel(ctx)) })
	l, err := b2.Listen(ctx, "127.0.0.1:0", relays.ServiceAddress)
	if err != nil {
		return nil, err
	}
	c3, err := b3.Connect(ctx, l.Address)
	if err != nil {
		return nil, err
	}
	reg, err := relays.Register(ctx, n3, routing.Route{c3.Worker, routing.Local(relays.ServiceAddress)}, "n3", relays.Options{})
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, func() { reg.Close(context.WithoutCancel(ctx)) })
	p3, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: portalBin})
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, func() { p3.Kill() })
	r.outlet, err = portals.NewOutlet(n3, portals.OutletOptions{Target: target, Portal: p3.Portal()})
	if err != nil {
		return nil, err
	}
	r.stops = append(r.stops, func() { r.outlet.Close() })
	r.toN2, err = b1.Connect(ctx, l.Address)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// relayBindings lets the relay's forwarders hand their forwarding to b's
// plugin (forwarding rules), unless FERRYBENCH_NO_RULES is set (to compare).
func relayBindings(b *transports.Binding) func() []*transports.Binding {
	if os.Getenv("FERRYBENCH_NO_RULES") != "" {
		return nil
	}
	return func() []*transports.Binding { return []*transports.Binding{b} }
}

// benchRelay measures the relay path: n2 listens, n3 only dials out
// and registers a relay at n2, n1 reaches n3's outlet through it.
func benchRelay(ctx context.Context, sz portalSizes, portalBin, tcpBin, target string) (portalResult, error) {
	var res portalResult
	rp, err := startRelayPath(ctx, portalBin, tcpBin, target)
	if err != nil {
		return res, err
	}
	defer rp.close()
	p1, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: portalBin})
	if err != nil {
		return res, err
	}
	defer p1.Kill()
	in, err := portals.NewInlet(ctx, rp.n1, portals.InletOptions{ListenAddress: "127.0.0.1:0", Route: rp.forwardTo(rp.outlet.Address()), Portal: p1.Portal()})
	if err != nil {
		return res, err
	}
	defer in.Close()
	return measurePortalPath(ctx, sz, in.Addr())
}

// benchInProcess is the one-node path with the TCP portal in this process,
// then the same single stream at several chunk sizes.
func benchInProcess(ctx context.Context, sz portalSizes, target string) (portalResult, []sweepResult, error) {
	pt := tcpportal.New()
	defer pt.Close()
	res, err := onePair(ctx, sz, pt, target)
	if err != nil {
		return res, nil, err
	}
	var sweep []sweepResult
	for _, chunk := range []int{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10} {
		n, err := node.New(node.Config{Name: "sweep"})
		if err != nil {
			return res, nil, err
		}
		so := portals.SessionOptions{ChunkSize: chunk, Window: max(portals.DefaultWindow, 4*chunk)}
		o, err := portals.NewOutlet(n, portals.OutletOptions{Target: target, Portal: pt, Session: so})
		if err == nil {
			var in *portals.Inlet
			in, err = portals.NewInlet(ctx, n, portals.InletOptions{ListenAddress: "127.0.0.1:0", Route: routing.Route{o.Address()}, Portal: pt, Session: so})
			if err == nil {
				var r float64
				r, err = uploadRate(ctx, in.Addr(), 1, sz.sweep)
				sweep = append(sweep, sweepResult{chunk: chunk, rate: r})
				in.Close()
			}
			o.Close()
		}
		n.Shutdown(context.WithoutCancel(ctx))
		if err != nil {
			return res, nil, fmt.Errorf("chunk %d KiB: %w", chunk>>10, err)
		}
	}
	return res, sweep, nil
}
