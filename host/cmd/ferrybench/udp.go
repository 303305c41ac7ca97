package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/plugins/udp/udptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// The udp section measures node to node over the UDP transport, in-process
// and as a subprocess plugin (one plugin process per node), against raw UDP
// sockets in this process. UDP does not wait for the receiver, so every
// sender here stays at most a window of messages ahead of what arrived
// (and writes off what a stall says was lost): the figures are delivered
// messages per second, with the loss beside them.
var udpSection = section{
	name: "udp",
	desc: "node to node over the UDP transport (in-process and plugin) vs raw UDP sockets",
	run:  runUDP,
}

// udpWindow is how far a sender may run ahead of the receiver, in messages.
const udpWindow = 1024

type udpRun struct {
	rate float64 // delivered messages/s
	loss float64 // fraction of sent messages that did not arrive
}

func runUDP(ctx context.Context, cfg config) (*table, error) {
	count := 200_000
	if cfg.quick {
		count = 2_000
	}
	sizes := []int{64, 1200}
	raw := map[int]udpRun{}
	for _, n := range sizes {
		r, err := measureRawUDP(ctx, count, n)
		if err != nil {
			return nil, fmt.Errorf("raw UDP baseline: %w", err)
		}
		raw[n] = r
	}
	inproc, err := measureUDPNodes(ctx, count, sizes, inProcess(ctx, udptransport.New, nil))
	if err != nil {
		return nil, fmt.Errorf("in-process: %w", err)
	}
	bin, cleanup, err := buildPluginTemp(ctx, "udp")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	sub, err := measureUDPNodes(ctx, count, sizes, pluginProcess(ctx, bin, nil))
	if err != nil {
		return nil, fmt.Errorf("subprocess plugin: %w", err)
	}

	t := newTable("measurement", "raw UDP", "in-process", "÷ raw", "plugin", "÷ raw", "target")
	for _, n := range sizes {
		r, i, s := raw[n], inproc[n], sub[n]
		t.add(fmt.Sprintf("%d B one-way, msg/s", n), fmtRate(r.rate), fmtRate(i.rate), fmtRatio(i.rate, r.rate),
			fmtRate(s.rate), fmtRatio(s.rate, r.rate), "plugin ≥ 0.50x raw")
		t.add(fmt.Sprintf("%d B one-way, payload MB/s", n), fmtMBps(r.rate*float64(n)), fmtMBps(i.rate*float64(n)), "",
			fmtMBps(s.rate*float64(n)), "", "")
		t.add(fmt.Sprintf("%d B one-way, loss", n), fmtPct(r.loss), fmtPct(i.loss), "", fmtPct(s.loss), "", "")
	}
	t.note("raw UDP: two sockets in this process, one datagram per read/write call, the payload alone")
	t.note("ferry: node A's app sends to a counting worker on node B over a connected link (/worker/<conn>/service/sink); default settings (datagram_size %d, batch_size 32)",
		udptransport.DefaultDatagramSize)
	t.note("every sender stays at most %d messages ahead of its receiver; %d messages per row", udpWindow, count)
	return t, nil
}

func fmtPct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// pacedRun sends count messages with send, staying at most udpWindow ahead
// of got(), and returns the delivered rate once everything arrived or
// nothing arrived for a while.
func pacedRun(ctx context.Context, count int, got func() int64, send func() error) (udpRun, error) {
	start := time.Now()
	var lost int64
	for i := 0; i < count; i++ {
		stalled := time.Now()
		last := got()
		for int64(i)-got()-lost > udpWindow {
			if n := got(); n != last {
				last, stalled = n, time.Now()
			} else if time.Since(stalled) > 20*time.Millisecond {
				lost = int64(i) - n // a stall: count what is missing as lost
				break
			}
			time.Sleep(20 * time.Microsecond)
		}
		if err := send(); err != nil {
			return udpRun{}, err
		}
		if ctx.Err() != nil {
			return udpRun{}, ctx.Err()
		}
	}
	// Wait for stragglers until all arrived or arrivals stop.
	lastN, lastAt := got(), time.Now()
	for lastN < int64(count) && time.Since(lastAt) < 200*time.Millisecond {
		time.Sleep(100 * time.Microsecond)
		if n := got(); n != lastN {
			lastN, lastAt = n, time.Now()
		}
	}
	el := lastAt.Sub(start)
	if lastN == 0 || el <= 0 {
		return udpRun{}, errors.New("nothing arrived")
	}
	return udpRun{rate: float64(lastN) / el.Seconds(), loss: 1 - float64(lastN)/float64(count)}, nil
}

func measureRawUDP(ctx context.Context, count, size int) (udpRun, error) {
	rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return udpRun{}, err
	}
	defer rc.Close()
	_ = rc.SetReadBuffer(4 << 20)
	c, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		return udpRun{}, err
	}
	defer c.Close()
	_ = c.SetWriteBuffer(4 << 20)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			if _, _, err := rc.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	payload := make([]byte, size)
	send := func() error { _, err := c.Write(payload); return err }
	// Warm up, then measure.
	if _, err := pacedRun(ctx, min(count/4, 20_000), got.Load, send); err != nil {
		return udpRun{}, err
	}
	got.Store(0)
	r, err := pacedRun(ctx, count, got.Load, send)
	rc.Close()
	<-done
	return r, err
}

// udpSink counts what arrives.
type udpSink struct{ got atomic.Int64 }

func (s *udpSink) HandleMessage(*node.Context, *routing.Message) error {
	s.got.Add(1)
	return nil
}

func measureUDPNodes(ctx context.Context, count int, sizes []int, newT newTransportFunc) (map[int]udpRun, error) {
	p, stop, err := newBenchPair(ctx, newT, "sink")
	if err != nil {
		return nil, err
	}
	defer stop()
	a := p.a
	sink := &udpSink{}
	if _, err := p.b.StartWorker("sink", sink); err != nil {
		return nil, err
	}
	r := p.route("sink")
	res := map[int]udpRun{}
	for _, n := range sizes {
		payload := make([]byte, n)
		send := func() error { return a.Send(ctx, r, payload) }
		sink.got.Store(0)
		if _, err := pacedRun(ctx, min(count/4, 20_000), sink.got.Load, send); err != nil {
			return nil, fmt.Errorf("warm-up, %d B: %w", n, err)
		}
		sink.got.Store(0)
		run, err := pacedRun(ctx, count, sink.got.Load, send)
		if err != nil {
			return nil, fmt.Errorf("%d B: %w", n, err)
		}
		res[n] = run
	}
	return res, nil
}
