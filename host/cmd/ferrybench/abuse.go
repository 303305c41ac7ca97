package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// The abuse section replays issue 10's attacks from raw sockets against a
// node in this process whose tcp transport runs as a plugin subprocess, and
// prints the node's and the plugin's memory and descriptors at the end of
// each attack beside their idle figures from the same run.
var abuseSection = section{
	name: "abuse",
	desc: "issue 10's attacks from raw sockets: node and tcp plugin RSS and fds after each, vs idle",
	run:  runAbuse,
}

type abuseSizes struct {
	slowConns   int // slowloris connections
	slowSent    int // bytes each sends of its declared 16 MiB frame before trickling
	echoSize    int // payload of each echo request on the connection that never reads
	echoCount   int // echo requests it tries to send
	malformed   int // 7-byte malformed frames
	regs        int // relay registrations
	dials       int // messages naming /tcp/127.0.0.1:PORT
	frameTO     time.Duration
	minRate     int
	stall       time.Duration
	maxRegs     int
	trickleGap  time.Duration
	attackLimit time.Duration // deadline for any one attack to end
}

func runAbuse(ctx context.Context, cfg config) (*table, error) {
	sz := abuseSizes{slowConns: 60, slowSent: 8 << 20, echoSize: 15 << 20, echoCount: 120, malformed: 1_000_000,
		regs: 45_000, dials: 2000, frameTO: 2 * time.Second, minRate: 8 << 20, stall: 5 * time.Second,
		maxRegs: relays.DefaultMaxRegistrations, trickleGap: time.Second, attackLimit: 2 * time.Minute}
	if cfg.quick {
		sz = abuseSizes{slowConns: 20, slowSent: 1 << 20, echoSize: 1 << 20, echoCount: 60, malformed: 100_000,
			regs: 2000, dials: 200, frameTO: 500 * time.Millisecond, minRate: 16 << 20, stall: time.Second,
			maxRegs: relays.DefaultMaxRegistrations, trickleGap: 100 * time.Millisecond, attackLimit: 30 * time.Second}
	}
	dir, err := os.MkdirTemp("", "ferrybench-abuse")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tcpBin, err := buildPlugin(ctx, dir, "tcp")
	if err != nil {
		return nil, err
	}

	logBytes := &countingWriter{}
	n, err := node.New(node.Config{Name: "victim", Logger: hclog.New(&hclog.LoggerOptions{Output: logBytes, Level: hclog.Info})})
	if err != nil {
		return nil, err
	}
	defer n.Shutdown(context.WithoutCancel(ctx))
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	tc, err := plugins.Launch(lctx, plugins.LaunchConfig{Path: tcpBin})
	cancel()
	if err != nil {
		return nil, err
	}
	defer tc.Kill()
	settings := map[string]string{
		tcptransport.SettingFrameTimeout: sz.frameTO.String(),
		tcptransport.SettingMinDataRate:  strconv.Itoa(sz.minRate),
	}
	if err := tc.Transport().Configure(ctx, settings); err != nil {
		return nil, fmt.Errorf("configure the tcp plugin: %w", err)
	}
	b, err := transports.Attach(n, tc.Transport(), transports.Options{StallTimeout: sz.stall})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if _, err := services.Start(n, "echo", ""); err != nil {
		return nil, err
	}
	if _, err := n.StartWorker("hop", services.Hop{}); err != nil {
		return nil, err
	}
	svc, err := relays.StartService(n, relays.ServiceConfig{MaxRegistrations: sz.maxRegs, Flows: relays.ListenerFlows("", b)})
	if err != nil {
		return nil, err
	}
	defer svc.Close(context.WithoutCancel(ctx))
	l, err := b.Listen(ctx, "127.0.0.1:0", "echo", "relay", "hop")
	if err != nil {
		return nil, err
	}
	pid := strconv.Itoa(tc.Pid())

	// Let start-up settle before the idle figures.
	time.Sleep(500 * time.Millisecond)
	idleNode, err := procStat("self")
	if err != nil {
		return nil, err
	}
	idlePlugin, err := procStat(pid)
	if err != nil {
		return nil, err
	}

	t := newTable("attack", "node RSS", "× idle", "peak", "plugin RSS", "× idle", "peak", "node fds", "plugin fds", "log bytes", "outcome")
	t.add("idle (baseline)", fmtMiB(idleNode.rss), "1.00x", "", fmtMiB(idlePlugin.rss), "1.00x", "", strconv.Itoa(idleNode.fds), strconv.Itoa(idlePlugin.fds), "0", "listener admits echo, relay, hop")

	type attack struct {
		name string
		run  func(ctx context.Context) (string, error)
	}
	attacks := []attack{
		{fmt.Sprintf("%d conns declare 16 MiB, send %d MiB, trickle", sz.slowConns, sz.slowSent>>20),
			func(ctx context.Context) (string, error) { return slowloris(ctx, l.Address, sz) }},
		{fmt.Sprintf("%d echo requests of %d MiB, never read", sz.echoCount, sz.echoSize>>20),
			func(ctx context.Context) (string, error) { return neverReads(ctx, b, l.Address, sz) }},
		{fmt.Sprintf("%d malformed 7-byte frames", sz.malformed),
			func(ctx context.Context) (string, error) { return malformedFlood(ctx, l.Address, sz) }},
		{fmt.Sprintf("%d relay registrations", sz.regs),
			func(ctx context.Context) (string, error) { return registrationFlood(ctx, svc, l.Address, sz) }},
		{fmt.Sprintf("%d routes naming /tcp/127.0.0.1:PORT", sz.dials),
			func(ctx context.Context) (string, error) { return dialRequests(ctx, n, l.Address, sz) }},
	}
	settle := time.Second
	if cfg.quick {
		settle = 300 * time.Millisecond
	}
	for _, a := range attacks {
		// Start each attack from this process's live heap, not the
		// previous attack's garbage, so its peak is its own.
		debug.FreeOSMemory()
		actx, cancel := context.WithTimeout(ctx, sz.attackLimit)
		logBefore := logBytes.n.Load()
		sampler := startSampler(pid)
		outcome, err := a.run(actx)
		cancel()
		if err != nil {
			sampler.stop()
			return nil, fmt.Errorf("%s: %w", a.name, err)
		}
		// The attacker's sockets are closed; wait for the node to drop
		// its side of them so the fds counted are what stays.
		waitFor(5*time.Second, func() bool { return len(b.Connections()) == 0 })
		// Work the attack left queued (requests in a mailbox) still runs
		// for a moment; the sampler keeps watching meanwhile.
		time.Sleep(settle)
		peakNode, peakPlugin := sampler.stop()
		endNode, err := procStat("self")
		if err != nil {
			return nil, err
		}
		endPlugin, err := procStat(pid)
		if err != nil {
			return nil, fmt.Errorf("tcp plugin after %s: %w", a.name, err)
		}
		t.add(a.name,
			fmtMiB(endNode.rss), fmtRatio(float64(endNode.rss), float64(idleNode.rss)), fmtMiB(max(peakNode, endNode.rss)),
			fmtMiB(endPlugin.rss), fmtRatio(float64(endPlugin.rss), float64(idlePlugin.rss)), fmtMiB(max(peakPlugin, endPlugin.rss)),
			strconv.Itoa(endNode.fds), strconv.Itoa(endPlugin.fds), strconv.FormatInt(logBytes.n.Load()-logBefore, 10), outcome)
	}
	t.note("node: this process (VmRSS from /proc/self/status, fds in /proc/self/fd), which also holds the attacker's sockets and buffers; plugin: the tcp plugin process (/proc/PID)")
	t.note("RSS and fds are read %s after each attack ends and its sockets are closed; peak is the highest VmRSS sampled every 20 ms from the attack's start to then; attacks run one after another on the same node, this process returning free heap to the OS (debug.FreeOSMemory) before each", settle)
	t.note("tcp plugin: frame_timeout %s, min_data_rate %d B/s, other settings default (max_receive_memory 128 MiB, max_connections 512); host: queue bytes per link 16 MiB, total 256 MiB, stall timeout %s; relay max registrations %d",
		sz.frameTO, sz.minRate, sz.stall, sz.maxRegs)
	t.note("log bytes: what the node's logger (level info) wrote during the attack (the relay service logs each accepted registration at info)")
	return t, nil
}

// --- attacks ---

// slowloris opens conns connections, each declaring a 16 MiB frame, sending
// part of it and then one byte per gap, and reports how many the plugin cut
// off and how long the last one took.
func slowloris(ctx context.Context, addr string, sz abuseSizes) (string, error) {
	var cut atomic.Int64
	var last atomic.Int64 // nanoseconds after start of the latest cut-off
	var wg sync.WaitGroup
	start := time.Now()
	chunk := make([]byte, sz.slowSent)
	hdr := frameHeader(16 << 20)
	var dialErr error
	var mu sync.Mutex
	for i := 0; i < sz.slowConns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			mu.Lock()
			dialErr = err
			mu.Unlock()
			break
		}
		closed := make(chan struct{})
		wg.Add(2)
		go func() { // reader: the connection ends when the plugin cuts it off
			defer wg.Done()
			defer close(closed)
			_ = c.SetReadDeadline(time.Now().Add(sz.attackLimit))
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					var ne net.Error
					if !(errors.As(err, &ne) && ne.Timeout()) {
						cut.Add(1)
						el := int64(time.Since(start))
						for {
							old := last.Load()
							if el <= old || last.CompareAndSwap(old, el) {
								break
							}
						}
					}
					return
				}
			}
		}()
		go func() { // writer: the declared frame, then a trickle
			defer wg.Done()
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(sz.attackLimit))
			if _, err := c.Write(hdr); err != nil {
				return
			}
			if _, err := c.Write(chunk); err != nil {
				return
			}
			for {
				select {
				case <-closed:
					return
				case <-ctx.Done():
					return
				case <-time.After(sz.trickleGap):
				}
				if _, err := c.Write([]byte{0}); err != nil {
					<-closed
					return
				}
			}
		}()
	}
	wg.Wait()
	if dialErr != nil && cut.Load() == 0 {
		return "", dialErr
	}
	return fmt.Sprintf("%d/%d cut off, last after %s", cut.Load(), sz.slowConns, fmtDur(time.Duration(last.Load()))), nil
}

// neverReads sends large echo requests on a connection with a tiny receive
// buffer that never reads the replies, until the node closes the link.
func neverReads(ctx context.Context, b *transports.Binding, addr string, sz abuseSizes) (string, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return "", err
	}
	c, err := net.DialTCP("tcp", nil, ta)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadBuffer(4 << 10)
	req, err := encodeFrame("/service/echo", "/service/attacker", make([]byte, sz.echoSize))
	if err != nil {
		return "", err
	}
	start := time.Now()
	sent := 0
	for ; sent < sz.echoCount && ctx.Err() == nil; sent++ {
		_ = c.SetWriteDeadline(time.Now().Add(sz.stall + 5*time.Second))
		if _, err := c.Write(req); err != nil {
			break // closed, or no longer read
		}
	}
	closed := waitFor(time.Until(deadlineOf(ctx)), func() bool { return len(b.Connections()) == 0 })
	el := time.Since(start)
	if !closed {
		return fmt.Sprintf("%d/%d requests taken; link still open after %s", sent, sz.echoCount, fmtDur(el)), nil
	}
	return fmt.Sprintf("%d/%d requests taken, link closed after %s", sent, sz.echoCount, fmtDur(el)), nil
}

// malformedFlood writes 7-byte frames whose payload is no message, then a
// valid echo request, and waits for its reply: the node has read the flood
// and the link survived it.
func malformedFlood(ctx context.Context, addr string, sz abuseSizes) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(deadlineOf(ctx))
	bad := append(frameHeader(1), 0xff)
	batch := make([]byte, 0, len(bad)*1000)
	for i := 0; i < 1000; i++ {
		batch = append(batch, bad...)
	}
	start := time.Now()
	for sent := 0; sent < sz.malformed; sent += 1000 {
		k := min(1000, sz.malformed-sent)
		if _, err := c.Write(batch[:k*len(bad)]); err != nil {
			return fmt.Sprintf("link closed after %d frames, %s", sent, fmtDur(time.Since(start))), nil
		}
	}
	probe, err := encodeFrame("/service/echo", "/service/attacker", []byte("after the flood"))
	if err != nil {
		return "", err
	}
	if _, err := c.Write(probe); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	for {
		m, err := readMessage(r)
		if err != nil {
			return "", fmt.Errorf("echo after the flood: %w", err)
		}
		if string(m.Payload) == "after the flood" {
			break
		}
	}
	return fmt.Sprintf("all read in %s; link survives (echo answered)", fmtDur(time.Since(start))), nil
}

// registrationFlood registers relay names as fast as one connection can,
// each with its own proof, and counts the answers.
func registrationFlood(ctx context.Context, svc *relays.Service, addr string, sz abuseSizes) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(deadlineOf(ctx))
	var accepted, refused, other atomic.Int64
	readDone := make(chan error, 1)
	go func() {
		r := bufio.NewReader(c)
		for accepted.Load()+refused.Load()+other.Load() < int64(sz.regs) {
			m, err := readMessage(r)
			if err != nil {
				readDone <- err
				return
			}
			// A relay control message: version, kind (2 registered, 7 error).
			switch {
			case len(m.Payload) >= 2 && m.Payload[1] == 2:
				accepted.Add(1)
			case len(m.Payload) >= 2 && m.Payload[1] == 7:
				refused.Add(1)
			default:
				other.Add(1)
			}
		}
		readDone <- nil
	}()
	start := time.Now()
	w := bufio.NewWriterSize(c, 64<<10)
	for i := 0; i < sz.regs; i++ {
		f, err := encodeFrame("/service/relay", "/service/attacker", registerControl(uint64(i+1), fmt.Sprintf("flood%d", i), fmt.Sprintf("proof-of-the-flooder-%012d", i)))
		if err != nil {
			return "", err
		}
		if _, err := w.Write(f); err != nil {
			return "", err
		}
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	err = <-readDone
	el := time.Since(start)
	out := fmt.Sprintf("%d accepted, %d refused in %s; %d held", accepted.Load(), refused.Load(), fmtDur(el), len(svc.List()))
	if o := other.Load(); o > 0 {
		out += fmt.Sprintf(", %d other answers", o)
	}
	if err != nil {
		out += fmt.Sprintf(" (%d unanswered: %v)", int64(sz.regs)-accepted.Load()-refused.Load()-other.Load(), err)
	}
	return out, nil
}

// registerControl encodes a relay register request as the relay control
// format has it (host/relays/control.go): version 1, kind 1, then tagged
// fields nonce (1), name (2) and proof (8), each tag, uvarint length, value.
func registerControl(nonce uint64, name, proof string) []byte {
	b := []byte{1, 1}
	var num [binary.MaxVarintLen64]byte
	field := func(tag byte, v []byte) {
		b = append(b, tag)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	field(1, num[:binary.PutUvarint(num[:], nonce)])
	field(2, []byte(name))
	field(8, []byte(proof))
	return b
}

// dialRequests sends messages whose routes name a transport address (as a
// first hop, and after the hop service) and counts what the node refused;
// a listener on that address counts the connections it got.
func dialRequests(ctx context.Context, n *node.Node, addr string, sz abuseSizes) (string, error) {
	victim, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer victim.Close()
	var dialled atomic.Int64
	go func() {
		for {
			c, err := victim.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(deadlineOf(ctx))
	var errorsBack atomic.Int64
	go func() {
		r := bufio.NewReader(c)
		for {
			m, err := readMessage(r)
			if err != nil {
				return
			}
			if re, ok := node.AsRemoteError(&m); ok && re.Code == node.CodeNoDial {
				errorsBack.Add(1)
			}
		}
	}()
	suppressedBefore := n.ErrorsSuppressed()
	start := time.Now()
	w := bufio.NewWriterSize(c, 64<<10)
	for i := 0; i < sz.dials; i++ {
		onward := "/tcp/" + victim.Addr().String() + "/service/echo"
		if i%2 == 1 {
			onward = "/service/hop" + onward
		}
		f, err := encodeFrame(onward, "/service/attacker", []byte("dial this"))
		if err != nil {
			return "", err
		}
		if _, err := w.Write(f); err != nil {
			return "", err
		}
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	// Every message is answered with an error or counted as suppressed by
	// the per-link error rate limit.
	done := waitFor(time.Until(deadlineOf(ctx)), func() bool {
		return errorsBack.Load()+int64(n.ErrorsSuppressed()-suppressedBefore) >= int64(sz.dials)
	})
	el := time.Since(start)
	refused := errorsBack.Load() + int64(n.ErrorsSuppressed()-suppressedBefore)
	out := fmt.Sprintf("%d/%d refused in %s (%d errors back, rest rate-limited), %d dials to the address", refused, sz.dials, fmtDur(el), errorsBack.Load(), dialled.Load())
	if !done {
		out += " (not all accounted for by the deadline)"
	}
	return out, nil
}

// --- raw frames ---

func frameHeader(n int) []byte {
	h := []byte{tcptransport.FrameVersion, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[2:], uint32(n))
	return h
}

func encodeFrame(onward, ret string, payload []byte) ([]byte, error) {
	o, err := routing.ParseRoute(onward)
	if err != nil {
		return nil, err
	}
	r, err := routing.ParseRoute(ret)
	if err != nil {
		return nil, err
	}
	b, err := routing.Codec{}.Encode(&routing.Message{Onward: o, Return: r, Payload: payload})
	if err != nil {
		return nil, err
	}
	return append(frameHeader(len(b)), b...), nil
}

// readMessage reads the next data frame (skipping heartbeats) and decodes it.
func readMessage(r *bufio.Reader) (routing.Message, error) {
	var h [6]byte
	for {
		if _, err := ioReadFull(r, h[:]); err != nil {
			return routing.Message{}, err
		}
		n := binary.BigEndian.Uint32(h[2:])
		if n > 16<<20 {
			return routing.Message{}, fmt.Errorf("frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := ioReadFull(r, p); err != nil {
			return routing.Message{}, err
		}
		if h[1] == 1 {
			return routing.Codec{}.Decode(p)
		}
	}
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// --- measuring ---

type procStats struct {
	rss int64 // bytes
	fds int
}

// procStat reads VmRSS from /proc/PID/status and counts /proc/PID/fd.
func procStat(pid string) (procStats, error) {
	var s procStats
	rss, err := procRSS(pid)
	if err != nil {
		return s, err
	}
	s.rss = rss
	fds, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return s, fmt.Errorf("count fds of %s: %w", pid, err)
	}
	s.fds = len(fds)
	return s, nil
}

func procRSS(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, fmt.Errorf("read /proc/%s/status: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("VmRSS of %s: %w", pid, err)
				}
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%s/status", pid)
}

// sampler records the peak VmRSS of this process and the plugin.
type sampler struct {
	done             chan struct{}
	finished         chan struct{}
	peakNode, peakPl int64
}

func startSampler(pid string) *sampler {
	s := &sampler{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		for {
			if r, err := procRSS("self"); err == nil {
				s.peakNode = max(s.peakNode, r)
			}
			if r, err := procRSS(pid); err == nil {
				s.peakPl = max(s.peakPl, r)
			}
			select {
			case <-s.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *sampler) stop() (node, plugin int64) {
	close(s.done)
	<-s.finished
	return s.peakNode, s.peakPl
}

type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Minute)
}

func fmtMiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
