package main

import (
	"context"
	"fmt"
	"time"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
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
	desc: "secure channel (Noise XX, ChaCha20-Poly1305) vs plaintext over the same in-process TCP route",
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

	t := newTable("measurement", "plaintext", "secure channel", "secure ÷ plaintext", "target")
	t.add("handshake p50 / p99", "", fmtDur(hsP50)+" / "+fmtDur(hsP99), "", "")
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
	t.add("64 B round trip p50", fmtDur(pp50), fmtDur(sp50), fmtRatio(float64(sp50), float64(pp50)), "")
	t.add("64 B round trip p99", fmtDur(pp99), fmtDur(sp99), fmtRatio(float64(sp99), float64(pp99)), "")
	st := ch.Stats()
	if st.Dropped() != 0 {
		return nil, fmt.Errorf("the channel dropped frames on a clean path: %v", st)
	}
	t.note("two nodes in this process linked by the in-process TCP transport over loopback; plaintext: /worker/<conn>/service/sink, secure: /worker/<channel>/service/sink through a channel over that same connection")
	t.note("handshake: Noise XX + Ed25519 identity proofs + the responder's ready, %d sequential channels; %d × 64 B, %d × each large size (÷4 for 256 KiB), %d round trips",
		sz.handshakes, sz.small, sz.large, sz.rtt)
	return t, nil
}
