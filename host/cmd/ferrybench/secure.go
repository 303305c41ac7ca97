package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// The secure section measures secure channels (host/securechannel) between
// two nodes linked by the in-process TCP transport, against plaintext
// messages over the very same link in the same run: handshake time, one-way
// throughput and 64 B round trips.
var secureSection = section{
	name: "secure",
	desc: "secure channel (Noise XX, ChaCha20-Poly1305) vs plaintext: a portal over the relay path (plugins as subprocesses), and channels over an in-process TCP route",
	run:  runSecure,
}

type secureSizes struct {
	handshakes int
	small      int // 64 B one-way messages
	large      int // one-way messages of each large size
	rtt        int
}

func runSecure(ctx context.Context, cfg config) (*table, error) {
	sz := secureSizes{handshakes: 200, small: 200_000, large: 6_000, rtt: 10_000}
	if cfg.quick {
		sz = secureSizes{handshakes: 10, small: 3_000, large: 100, rtt: 300}
	}
	a, err := node.New(node.Config{Name: "bench-a"})
	if err != nil {
		return nil, err
	}
	defer a.Shutdown(context.WithoutCancel(ctx))
	b, err := node.New(node.Config{Name: "bench-b"})
	if err != nil {
		return nil, err
	}
	defer b.Shutdown(context.WithoutCancel(ctx))
	ta, tb := tcptransport.New(), tcptransport.New()
	defer ta.Close()
	defer tb.Close()
	ba, err := transports.Attach(a, ta, transports.Options{})
	if err != nil {
		return nil, err
	}
	defer ba.Close()
	bb, err := transports.Attach(b, tb, transports.Options{})
	if err != nil {
		return nil, err
	}
	defer bb.Close()
	if _, err := services.Start(b, "echo", ""); err != nil {
		return nil, err
	}
	sink := &countSink{}
	if _, err := b.StartWorker("sink", sink); err != nil {
		return nil, err
	}
	idA, err := identity.New("a")
	if err != nil {
		return nil, err
	}
	idB, err := identity.New("b")
	if err != nil {
		return nil, err
	}
	if _, err := securechannel.Listen(b, "", securechannel.ListenerConfig{
		Config: securechannel.Config{Identity: idB}, Allow: []string{"echo", "sink"}, MaxPending: 1024}); err != nil {
		return nil, err
	}
	l, err := bb.Listen(ctx, "127.0.0.1:0", "echo", "sink", securechannel.DefaultListenerAddress)
	if err != nil {
		return nil, err
	}
	c, err := ba.Connect(ctx, l.Address)
	if err != nil {
		return nil, err
	}
	toAPI := routing.Route{c.Worker, routing.Local(securechannel.DefaultListenerAddress)}
	ccfg := securechannel.Config{Identity: idA, Authorized: []string{idB.Identifier}}

	// Handshakes, one after another, each channel closed before the next.
	hs := make([]time.Duration, 0, sz.handshakes)
	for i := 0; i < sz.handshakes+sz.handshakes/10; i++ {
		start := time.Now()
		ch, err := securechannel.Create(ctx, a, toAPI, ccfg)
		if err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		if i >= sz.handshakes/10 {
			hs = append(hs, time.Since(start))
		}
		if err := ch.Close(ctx); err != nil {
			return nil, err
		}
	}
	hsP50, hsP99 := percentiles(hs)

	ch, err := securechannel.Create(ctx, a, toAPI, ccfg)
	if err != nil {
		return nil, err
	}
	plain := routing.Route{c.Worker}
	secure := routing.Route{ch.Address()}

	oneWay := func(via routing.Route, count, size int) (float64, error) {
		sink.got.Store(0)
		sink.want = int64(count)
		sink.done = make(chan struct{})
		r := append(via.Clone(), routing.Local("sink"))
		payload := make([]byte, size)
		start := time.Now()
		for i := 0; i < count; i++ {
			if err := a.Send(ctx, r, payload); err != nil {
				return 0, err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		select {
		case <-sink.done:
		case <-wctx.Done():
			return 0, fmt.Errorf("only %d of %d messages arrived", sink.got.Load(), count)
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	rtt := func(via routing.Route) (time.Duration, time.Duration, error) {
		echo := append(via.Clone(), routing.Local("echo"))
		tmp, err := a.NewContext("")
		if err != nil {
			return 0, 0, err
		}
		defer tmp.Close()
		payload := make([]byte, 64)
		lat := make([]time.Duration, 0, sz.rtt)
		for i := 0; i < sz.rtt+sz.rtt/10; i++ {
			start := time.Now()
			if err := tmp.Send(ctx, echo, payload); err != nil {
				return 0, 0, err
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := tmp.Receive(rctx)
			cancel()
			if err != nil {
				return 0, 0, err
			}
			if i >= sz.rtt/10 {
				lat = append(lat, time.Since(start))
			}
		}
		p50, p99 := percentiles(lat)
		return p50, p99, nil
	}

	// The portal over the relay path first, the in-process rows after.
	rel, err := benchSecureRelay(ctx, cfg.quick)
	if err != nil {
		return nil, fmt.Errorf("relay path: %w", err)
	}
	if d := rel.channelStats.Dropped(); d != 0 {
		return nil, fmt.Errorf("the relay path's channel dropped %d frames on a clean path: %v", d, rel.channelStats)
	}
	relHS50, relHS99 := percentiles(rel.handshakes)

	t := newTable("measurement", "plaintext", "secure channel", "secure ÷ plaintext", "target")
	t.add("relay path: handshake p50 / p99", "", fmtDur(relHS50)+" / "+fmtDur(relHS99), "", "")
	t.add("relay path: portal 1 stream, MB/s", fmtMBps(rel.plainRate), fmtMBps(rel.secureRate), fmtRatio(rel.secureRate, rel.plainRate), "≥ 0.70x")
	t.add("relay path: portal 64 B RTT p50", fmtDur(rel.plainP50), fmtDur(rel.securePeer50), fmtRatio(float64(rel.securePeer50), float64(rel.plainP50)), "")
	t.add("relay path: portal 64 B RTT p99", fmtDur(rel.plainP99), fmtDur(rel.securePeer99), fmtRatio(float64(rel.securePeer99), float64(rel.plainP99)), "")
	t.add("in-process: handshake p50 / p99", "", fmtDur(hsP50)+" / "+fmtDur(hsP99), "", "")
	for _, via := range []routing.Route{plain, secure} { // warm up both paths
		if _, err := oneWay(via, min(sz.small, 20_000), 64); err != nil {
			return nil, err
		}
	}
	type run struct {
		name  string
		size  int
		count int
	}
	for _, r := range []run{{"64 B one-way", 64, sz.small}, {"16 KiB one-way", 16 << 10, sz.large}, {"60 KiB one-way (one frame)", 60 << 10, sz.large}, {"256 KiB one-way (5 frames)", 256 << 10, sz.large / 4}} {
		p, err := oneWay(plain, r.count, r.size)
		if err != nil {
			return nil, fmt.Errorf("plaintext %s: %w", r.name, err)
		}
		s, err := oneWay(secure, r.count, r.size)
		if err != nil {
			return nil, fmt.Errorf("secure %s: %w", r.name, err)
		}
		target := ""
		if r.size >= 16<<10 {
			target = "≥ 0.70x"
		}
		r.name = "in-process: " + r.name
		if r.size == 64 {
			t.add(r.name+", msg/s", fmtRate(p), fmtRate(s), fmtRatio(s, p), target)
		} else {
			t.add(r.name+", MB/s", fmtMBps(p*float64(r.size)), fmtMBps(s*float64(r.size)), fmtRatio(s, p), target)
		}
	}
	pp50, pp99, err := rtt(plain)
	if err != nil {
		return nil, err
	}
	sp50, sp99, err := rtt(secure)
	if err != nil {
		return nil, err
	}
	t.add("in-process: 64 B round trip p50", fmtDur(pp50), fmtDur(sp50), fmtRatio(float64(sp50), float64(pp50)), "")
	t.add("in-process: 64 B round trip p99", fmtDur(pp99), fmtDur(sp99), fmtRatio(float64(sp99), float64(pp99)), "")
	st := ch.Stats()
	if st.Dropped() != 0 {
		return nil, fmt.Errorf("the channel dropped frames on a clean path: %v", st)
	}
	t.note("relay path: the portal section's n1 → tcp → n2 relay → tcp → n3 (tcp and portal-tcp as plugin subprocesses, n3's registration plaintext); two inlets on n1 to one outlet on n3, plain (/worker/<n1→n2>/service/forward_to_n3/service/outlet) and secure (/worker/<channel>/service/outlet, the channel from n1 to n3's /service/api through the relay, as tcp-inlet create --secure builds it); 1 stream × %d MiB, alternately, best of 2 each; %d round trips of 64 B; %d handshakes over the path", rel.single>>20, rel.rtt, len(rel.handshakes))
	t.note("in-process: two nodes in this process linked by the in-process TCP transport over loopback; plaintext: /worker/<conn>/service/sink, secure: /worker/<channel>/service/sink through a channel over that same connection")
	t.note("handshake: Noise XX + Ed25519 identity proofs + the responder's ready, %d sequential channels; %d × 64 B, %d × each large size (÷4 for 256 KiB), %d round trips",
		sz.handshakes, sz.small, sz.large, sz.rtt)
	return t, nil
}

// secureRelayResult is the relay path measured with and without a secure
// channel around the portal's sessions.
type secureRelayResult struct {
	handshakes             []time.Duration
	plainRate, secureRate  float64 // bytes/s, 1 stream
	plainP50, securePeer50 time.Duration
	plainP99, securePeer99 time.Duration
	single                 int64
	rtt                    int
	channelStats           securechannel.Stats
}

// benchSecureRelay is the portal section's relay path (n1 → tcp → n2's
// relay → tcp → n3, tcp and portal-tcp as plugin subprocesses) with two
// inlets on n1 to the same outlet on n3: one plain, one whose sessions go
// through a secure channel from n1 to n3's listener (what tcp-inlet create
// --secure builds). The two are measured alternately, best of each.
func benchSecureRelay(ctx context.Context, quick bool) (secureRelayResult, error) {
	res := secureRelayResult{single: 128 << 20, rtt: 3000}
	handshakes := 50
	if quick {
		res.single, res.rtt, handshakes = 8<<20, 200, 5
	}
	target, stopTarget, err := startBenchTarget()
	if err != nil {
		return res, err
	}
	defer stopTarget()
	dir, err := os.MkdirTemp("", "ferrybench-secure")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	// One go build for both plugins: half the linking time of two.
	root, err := moduleRoot()
	if err != nil {
		return res, err
	}
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	build := exec.CommandContext(bctx, "go", "build", "-o", dir+string(os.PathSeparator), "./plugins/portal-tcp", "./plugins/tcp")
	build.Dir = root
	out, err := build.CombinedOutput()
	cancel()
	if err != nil {
		return res, fmt.Errorf("build plugins/portal-tcp and plugins/tcp: %v\n%s", err, out)
	}
	portalBin, tcpBin := filepath.Join(dir, "portal-tcp"), filepath.Join(dir, "tcp")
	rp, err := startRelayPath(ctx, portalBin, tcpBin, target)
	if err != nil {
		return res, err
	}
	defer rp.close()
	n1, n3, o := rp.n1, rp.n3, rp.outlet
	id1, err := identity.New("n1")
	if err != nil {
		return res, err
	}
	id3, err := identity.New("n3")
	if err != nil {
		return res, err
	}
	lis, err := securechannel.Listen(n3, "", securechannel.ListenerConfig{Config: securechannel.Config{Identity: id3}, Allow: []string{o.Address().Value}})
	if err != nil {
		return res, err
	}
	defer lis.Close(context.WithoutCancel(ctx))
	toAPI := rp.forwardTo(routing.Local(securechannel.DefaultListenerAddress))
	ccfg := securechannel.Config{Identity: id1, Authorized: []string{id3.Identifier}}
	for i := 0; i < handshakes+1; i++ { // the first one warms up
		start := time.Now()
		ch, err := securechannel.Create(ctx, n1, toAPI, ccfg)
		if err != nil {
			return res, fmt.Errorf("handshake over the relay path: %w", err)
		}
		if i > 0 {
			res.handshakes = append(res.handshakes, time.Since(start))
		}
		if err := ch.Close(ctx); err != nil {
			return res, err
		}
	}
	ch, err := securechannel.Create(ctx, n1, toAPI, ccfg)
	if err != nil {
		return res, err
	}
	defer ch.Close(context.WithoutCancel(ctx))
	p1, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: portalBin})
	if err != nil {
		return res, err
	}
	defer p1.Kill()
	plainIn, err := portals.NewInlet(ctx, n1, portals.InletOptions{ListenAddress: "127.0.0.1:0", Portal: p1.Portal(),
		Route: rp.forwardTo(o.Address())})
	if err != nil {
		return res, err
	}
	defer plainIn.Close()
	secIn, err := portals.NewInlet(ctx, n1, portals.InletOptions{ListenAddress: "127.0.0.1:0", Portal: p1.Portal(),
		Route: routing.Route{ch.Address(), o.Address()}})
	if err != nil {
		return res, err
	}
	defer secIn.Close()

	for _, addr := range []string{plainIn.Addr(), secIn.Addr()} { // warm up both
		if _, err := uploadRate(ctx, addr, 1, 4<<20); err != nil {
			return res, err
		}
	}
	// Alternate, best of two each: the machine is shared.
	for range 2 {
		r, err := uploadRate(ctx, plainIn.Addr(), 1, res.single)
		if err != nil {
			return res, fmt.Errorf("plain inlet: %w", err)
		}
		res.plainRate = max(res.plainRate, r)
		r, err = uploadRate(ctx, secIn.Addr(), 1, res.single)
		if err != nil {
			return res, fmt.Errorf("secure inlet: %w", err)
		}
		res.secureRate = max(res.secureRate, r)
	}
	if os.Getenv("FERRYBENCH_PROFILE") != "" {
		// One more upload through each inlet, profiled apart from the
		// measurement (secure-relay-plain.*, secure-relay-secure.*; the
		// allocation profiles are cumulative: read the secure one with
		// -base set to the plain one).
		for _, p := range []struct{ name, addr string }{{"secure-relay-plain", plainIn.Addr()}, {"secure-relay-secure", secIn.Addr()}} {
			if _, err := profiled(p.name, func() (portalResult, error) {
				_, err := uploadRate(ctx, p.addr, 1, res.single)
				return portalResult{}, err
			}); err != nil {
				return res, fmt.Errorf("profiled upload: %w", err)
			}
		}
	}
	if res.plainP50, res.plainP99, err = roundTrips(plainIn.Addr(), res.rtt); err != nil {
		return res, fmt.Errorf("plain inlet: %w", err)
	}
	if res.securePeer50, res.securePeer99, err = roundTrips(secIn.Addr(), res.rtt); err != nil {
		return res, fmt.Errorf("secure inlet: %w", err)
	}
	res.channelStats = ch.Stats()
	return res, nil
}
