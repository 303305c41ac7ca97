package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// The tcp section measures node to node over the TCP transport, with the
// transport in-process and as a subprocess plugin (one plugin process per
// node), against raw TCP between this process and a helper process (this
// binary re-executed) using the same kind of framing.
var tcpSection = section{
	name: "tcp",
	desc: "node to node over the TCP transport (in-process and plugin) vs raw TCP between two processes",
	run:  runTCP,
}

// tcpHelperEnv makes this binary run the raw TCP baseline's peer instead of
// the benchmarks; it is set only on the helper process the section starts.
const tcpHelperEnv = "FERRYBENCH_TCP_HELPER"

func init() {
	if os.Getenv(tcpHelperEnv) == "1" {
		if err := rawHelper(); err != nil {
			fmt.Fprintln(os.Stderr, "ferrybench tcp helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

type tcpSizes struct {
	small, large int // messages in the one-way runs
	rtt          int // round trips
	largeSize    int
}

type tcpResult struct {
	smallRate, largeRate float64 // messages/s
	p50, p99             time.Duration
}

func runTCP(ctx context.Context, cfg config) (*table, error) {
	sz := tcpSizes{small: 400_000, large: 8_000, rtt: 10_000, largeSize: 64 << 10}
	if cfg.quick {
		sz = tcpSizes{small: 5_000, large: 200, rtt: 300, largeSize: 64 << 10}
	}
	raw, err := measureRaw(ctx, sz)
	if err != nil {
		return nil, fmt.Errorf("raw TCP baseline: %w", err)
	}
	inproc, err := measureNodes(ctx, sz, inProcess(ctx, tcptransport.New, nil))
	if err != nil {
		return nil, fmt.Errorf("in-process: %w", err)
	}
	bin, cleanup, err := buildPluginTemp(ctx, "tcp")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	sub, err := measureNodes(ctx, sz, pluginProcess(ctx, bin, nil))
	if err != nil {
		return nil, fmt.Errorf("subprocess plugin: %w", err)
	}

	t := newTable("measurement", "raw TCP", "in-process", "÷ raw", "plugin", "÷ raw", "plugin ÷ in-process", "target")
	rate := func(name string, payload int, r, i, s float64) {
		t.add(name+", msg/s", fmtRate(r), fmtRate(i), fmtRatio(i, r), fmtRate(s), fmtRatio(s, r), fmtRatio(s, i), "plugin ≥ 0.50x in-process")
		t.add(name+", payload MB/s", fmtMBps(r*float64(payload)), fmtMBps(i*float64(payload)), "", fmtMBps(s*float64(payload)), "", "", "")
	}
	rate("64 B one-way", 64, raw.smallRate, inproc.smallRate, sub.smallRate)
	rate(fmt.Sprintf("%d KiB one-way", sz.largeSize>>10), sz.largeSize, raw.largeRate, inproc.largeRate, sub.largeRate)
	t.add("64 B round trip p50", fmtDur(raw.p50), fmtDur(inproc.p50), fmtRatio(float64(inproc.p50), float64(raw.p50)),
		fmtDur(sub.p50), fmtRatio(float64(sub.p50), float64(raw.p50)), fmtRatio(float64(sub.p50), float64(inproc.p50)), "plugin ≤ 4x raw")
	t.add("64 B round trip p99", fmtDur(raw.p99), fmtDur(inproc.p99), fmtRatio(float64(inproc.p99), float64(raw.p99)),
		fmtDur(sub.p99), fmtRatio(float64(sub.p99), float64(raw.p99)), fmtRatio(float64(sub.p99), float64(inproc.p99)), "")
	t.note("raw TCP: this process and a helper process, frames of version+type+4-byte length, buffered writes, TCP_NODELAY; one-way waits for the peer's ack of the last frame")
	t.note("ferry: node A's app sends to a counting worker on node B over a connected link (/worker/<conn>/service/sink); round trip is node.Request to an echo service on B")
	t.note("plugin: each node drives its own tcp plugin process over gRPC (host/plugins.Launch); %d × 64 B, %d × %d KiB, %d round trips",
		sz.small, sz.large, sz.largeSize>>10, sz.rtt)
	return t, nil
}

// --- ferry node to node ---

type countSink struct {
	got  atomic.Int64
	want int64
	done chan struct{}
}

func (s *countSink) HandleMessage(*node.Context, *routing.Message) error {
	if s.got.Add(1) == s.want {
		close(s.done)
	}
	return nil
}

// measureNodes runs the one-way and round-trip measurements between two
// nodes, each with its own transport from newT.
func measureNodes(ctx context.Context, sz tcpSizes, newT newTransportFunc) (tcpResult, error) {
	var res tcpResult
	p, stop, err := newBenchPair(ctx, newT, "echo", "sink")
	if err != nil {
		return res, err
	}
	defer stop()
	a, b := p.a, p.b
	if _, err := services.Start(b, "echo", ""); err != nil {
		return res, err
	}
	sink := &countSink{}
	if _, err := b.StartWorker("sink", sink); err != nil {
		return res, err
	}

	oneWay := func(count, size int) (float64, error) {
		sink.got.Store(0)
		sink.want = int64(count)
		sink.done = make(chan struct{})
		r := p.route("sink")
		payload := make([]byte, size)
		start := time.Now()
		for i := 0; i < count; i++ {
			if err := a.Send(ctx, r, payload); err != nil {
				return 0, err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		select {
		case <-sink.done:
		case <-wctx.Done():
			return 0, fmt.Errorf("only %d of %d messages arrived", sink.got.Load(), count)
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	// Warm up the link and the allocator before measuring.
	if _, err := oneWay(min(sz.small, 20_000), 64); err != nil {
		return res, err
	}
	if res.smallRate, err = oneWay(sz.small, 64); err != nil {
		return res, err
	}
	if res.largeRate, err = oneWay(sz.large, sz.largeSize); err != nil {
		return res, err
	}

	echo := p.route("echo")
	tmp, err := a.NewContext("")
	if err != nil {
		return res, err
	}
	defer tmp.Close()
	payload := make([]byte, 64)
	lat := make([]time.Duration, 0, sz.rtt)
	for i := 0; i < sz.rtt+sz.rtt/10; i++ {
		start := time.Now()
		if err := tmp.Send(ctx, echo, payload); err != nil {
			return res, err
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := tmp.Receive(rctx)
		cancel()
		if err != nil {
			return res, err
		}
		if i >= sz.rtt/10 { // the first tenth warms up
			lat = append(lat, time.Since(start))
		}
	}
	res.p50, res.p99 = percentiles(lat)
	return res, nil
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/ferryhq/ferry") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run ferrybench inside the ferry repository (it builds plugins/tcp)")
		}
		dir = parent
	}
}

// --- raw TCP baseline ---

// Raw frames: version byte, type byte, 4-byte big-endian length, payload;
// the same header size as the TCP transport's frames.
const (
	rawVersion = 1
	rawData    = 0
	rawEnd     = 1 // last frame of a one-way run; the helper answers with one byte
	rawEcho    = 2 // the helper sends the frame back
)

func writeRaw(w *bufio.Writer, typ byte, payload []byte) error {
	var h [6]byte
	h[0], h[1] = rawVersion, typ
	binary.BigEndian.PutUint32(h[2:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

func readRaw(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var h [6]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0] != rawVersion {
		return 0, nil, fmt.Errorf("frame version %d", h[0])
	}
	n := binary.BigEndian.Uint32(h[2:])
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	if int(n) > cap(buf) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return h[1], buf, err
}

// rawHelper is the helper process: it prints its address, then serves one
// connection at a time until stdin closes.
func rawHelper() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	go func() {
		io.Copy(io.Discard, os.Stdin) // the parent went away: stop
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		go serveRaw(c)
	}
}

func serveRaw(c net.Conn) {
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	r, w := bufio.NewReaderSize(c, 256<<10), bufio.NewWriterSize(c, 256<<10)
	buf := make([]byte, 64<<10)
	for {
		typ, p, err := readRaw(r, buf)
		if err != nil {
			return
		}
		switch typ {
		case rawEnd:
			if w.WriteByte(1) != nil || w.Flush() != nil {
				return
			}
		case rawEcho:
			if writeRaw(w, rawEcho, p) != nil {
				return
			}
			// Flush only when nothing more is buffered, as a transport
			// writer that batches would.
			if r.Buffered() == 0 && w.Flush() != nil {
				return
			}
		}
	}
}

func measureRaw(ctx context.Context, sz tcpSizes) (tcpResult, error) {
	var res tcpResult
	addr, stopHelper, err := startHelper(ctx, tcpHelperEnv+"=1")
	if err != nil {
		return res, err
	}
	defer stopHelper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	r, w := bufio.NewReaderSize(c, 256<<10), bufio.NewWriterSize(c, 256<<10)

	oneWay := func(count, size int) (float64, error) {
		payload := make([]byte, size)
		start := time.Now()
		for i := 0; i < count; i++ {
			if err := writeRaw(w, rawData, payload); err != nil {
				return 0, err
			}
		}
		if err := writeRaw(w, rawEnd, nil); err != nil {
			return 0, err
		}
		if err := w.Flush(); err != nil {
			return 0, err
		}
		if _, err := r.ReadByte(); err != nil {
			return 0, err
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	if _, err := oneWay(min(sz.small, 20_000), 64); err != nil {
		return res, err
	}
	if res.smallRate, err = oneWay(sz.small, 64); err != nil {
		return res, err
	}
	if res.largeRate, err = oneWay(sz.large, sz.largeSize); err != nil {
		return res, err
	}
	payload := make([]byte, 64)
	buf := make([]byte, 64)
	lat := make([]time.Duration, 0, sz.rtt)
	for i := 0; i < sz.rtt+sz.rtt/10; i++ {
		start := time.Now()
		if err := writeRaw(w, rawEcho, payload); err != nil {
			return res, err
		}
		if err := w.Flush(); err != nil {
			return res, err
		}
		if _, _, err := readRaw(r, buf); err != nil {
			return res, err
		}
		if i >= sz.rtt/10 {
			lat = append(lat, time.Since(start))
		}
	}
	res.p50, res.p99 = percentiles(lat)
	return res, nil
}
