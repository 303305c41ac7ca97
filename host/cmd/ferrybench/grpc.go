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
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/sdk/transport"
)

// The grpc section measures one gRPC crossing: packets go host → plugin
// process → host over one link of the test plugin's in-memory "echo"
// transport (the data path of every subprocess transport), against the same
// echo done by the same binary over a plain Unix socket with the same
// length-prefixed batches (the cost of the process boundary alone).
var grpcSection = section{
	name: "grpc",
	desc: "one gRPC crossing host → plugin → host (echo link) vs the same echo over a Unix socket",
	run:  runGRPC,
}

type grpcCase struct {
	size, count int
}

func runGRPC(ctx context.Context, cfg config) (*table, error) {
	cases := []grpcCase{{64, 2_000_000}, {1 << 10, 400_000}, {16 << 10, 50_000}, {64 << 10, 16_000}}
	if cfg.quick {
		for i := range cases {
			cases[i].count /= 100
		}
	}
	dir, err := os.MkdirTemp("", "ferrybench-grpc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "loopbench")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ferryhq/ferry/host/plugins/testdata/testplugin")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the test plugin (run from the repository): %v\n%s", err, out)
	}
	c, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: bin})
	if err != nil {
		return nil, err
	}
	defer c.Kill()
	// The same plugin with link data on gRPC streams (AutoMTLS), as for a
	// plugin without the data channel capability: what the channel gains.
	plain, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: bin, DisableDataChannel: true})
	if err != nil {
		return nil, err
	}
	defer plain.Kill()
	// The same plugin with the data channel on its socketpair alone (no
	// shared-memory rings): what the rings gain.
	sp, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: bin, DataRingSize: -1})
	if err != nil {
		return nil, err
	}
	defer sp.Kill()
	echo, err := startUnixEcho(ctx, bin, filepath.Join(dir, "echo.sock"))
	if err != nil {
		return nil, fmt.Errorf("unix echo baseline: %w", err)
	}
	defer echo.stop()

	if !c.Remote().DataChannel() || plain.Remote().DataChannel() || !sp.Remote().DataChannel() || sp.DataRing() {
		return nil, errors.New("the data channel is not negotiated as configured")
	}
	t := newTable("payload", "batch", "plugin msg/s", "plugin MB/s", "CPU/msg", "sockpair msg/s", "sockpair MB/s", "CPU/msg", "gRPC msg/s", "gRPC MB/s", "CPU/msg", "unix msg/s", "unix MB/s", "CPU/msg", "plugin/unix", "sockpair/unix", "gRPC/unix")
	for _, tc := range cases {
		batch := max(1, min(64, (256<<10)/tc.size))
		var pr, sr, nr, ur float64
		pcpu, err := cpuPerMsg(tc.count, c.Pid(), func() (err error) {
			pr, err = grpcEcho(ctx, c.Transport(), tc, batch)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("plugin echo %d B: %w", tc.size, err)
		}
		scpu, err := cpuPerMsg(tc.count, sp.Pid(), func() (err error) {
			sr, err = grpcEcho(ctx, sp.Transport(), tc, batch)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("plugin echo over the socketpair %d B: %w", tc.size, err)
		}
		ncpu, err := cpuPerMsg(tc.count, plain.Pid(), func() (err error) {
			nr, err = grpcEcho(ctx, plain.Transport(), tc, batch)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("plugin echo over gRPC streams %d B: %w", tc.size, err)
		}
		ucpu, err := cpuPerMsg(tc.count, echo.cmd.Process.Pid, func() (err error) {
			ur, err = echo.run(ctx, tc, batch)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("unix echo %d B: %w", tc.size, err)
		}
		sz := float64(tc.size)
		t.add(fmtSize(tc.size), fmt.Sprint(batch), fmtRate(pr), fmtMBps(pr*sz), fmtDur(pcpu), fmtRate(sr), fmtMBps(sr*sz), fmtDur(scpu), fmtRate(nr), fmtMBps(nr*sz), fmtDur(ncpu),
			fmtRate(ur), fmtMBps(ur*sz), fmtDur(ucpu), fmtRatio(pr, ur), fmtRatio(sr, ur), fmtRatio(nr, ur))
	}
	// Latency: one 64 B packet at a time, host → plugin → host. Every
	// portal path's round trip pays this crossing at each plugin boundary.
	rounds := 20_000
	if cfg.quick {
		rounds = 500
	}
	var pl, sl, nl, ul latencies
	pcpu, err := cpuPerMsg(rounds, c.Pid(), func() (err error) {
		pl, err = grpcPingPong(ctx, c.Transport(), rounds)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("plugin 64 B round trips: %w", err)
	}
	scpu, err := cpuPerMsg(rounds, sp.Pid(), func() (err error) {
		sl, err = grpcPingPong(ctx, sp.Transport(), rounds)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("plugin 64 B round trips over the socketpair: %w", err)
	}
	ncpu, err := cpuPerMsg(rounds, plain.Pid(), func() (err error) {
		nl, err = grpcPingPong(ctx, plain.Transport(), rounds)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("plugin 64 B round trips over gRPC streams: %w", err)
	}
	ucpu, err := cpuPerMsg(rounds, echo.cmd.Process.Pid, func() (err error) {
		ul, err = echo.pingPong(ctx, rounds)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("unix 64 B round trips: %w", err)
	}
	for _, q := range []struct {
		name string
		p    float64
	}{{"RTT p50", 0.50}, {"RTT p99", 0.99}} {
		pv, sv, nv, uv := pl.at(q.p), sl.at(q.p), nl.at(q.p), ul.at(q.p)
		t.add("64 B "+q.name, "1", fmtDur(pv), "-", fmtDur(pcpu), fmtDur(sv), "-", fmtDur(scpu), fmtDur(nv), "-", fmtDur(ncpu), fmtDur(uv), "-", fmtDur(ucpu),
			fmtRatio(float64(pv), float64(uv)), fmtRatio(float64(sv), float64(uv)), fmtRatio(float64(nv), float64(uv)))
	}
	t.note("messages/s = payloads echoed per second (each crosses the boundary twice); MB/s counts one direction")
	t.note("RTT rows: one 64 B packet echoed at a time (%d round trips), latency percentiles in the msg/s columns, CPU per round trip; their ratio columns are latency × unix (lower is better)", rounds)
	t.note("CPU/msg = CPU time of both processes (host + plugin or echo process) per message, from /proc; less sensitive to a busy machine than the rates")
	t.note("plugin = the production setup (link data on the private data channel through its shared-memory rings where both sides offer them, control on go-plugin gRPC with AutoMTLS); sockpair = same plugin with the data channel on its socketpair alone (DataRingSize -1); gRPC = same plugin with DisableDataChannel (data on gRPC streams with TLS, the fallback); unix = plain Unix socket echo process")
	t.note("targets: ≥ 1M msg/s at 64 B and ≥ 1 GB/s at 64 KiB through the plugin")
	return t, nil
}

func fmtSize(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// grpcEcho sends tc.count payloads over an echo link in batches while a
// second goroutine receives them, and returns payloads per second.
func grpcEcho(ctx context.Context, tr transport.Transport, tc grpcCase, batch int) (float64, error) {
	link, err := tr.Dial(ctx, "echo")
	if err != nil {
		return 0, err
	}
	defer link.Close()
	payload := make([]byte, tc.size)
	packets := make([][]byte, batch)
	for i := range packets {
		packets[i] = payload
	}
	// Warm up the stream and the pools.
	if err := link.Send(ctx, packets); err != nil {
		return 0, err
	}
	for got := 0; got < batch; {
		ps, err := link.Recv(ctx)
		if err != nil {
			return 0, err
		}
		got += len(ps)
	}
	sendErr := make(chan error, 1)
	start := time.Now()
	go func() {
		for sent := 0; sent < tc.count; sent += batch {
			n := min(batch, tc.count-sent)
			if err := link.Send(ctx, packets[:n]); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for got := 0; got < tc.count; {
		ps, err := link.Recv(ctx)
		if err != nil {
			return 0, err
		}
		for _, p := range ps {
			if len(p) != tc.size {
				return 0, fmt.Errorf("echo returned %d bytes, sent %d", len(p), tc.size)
			}
		}
		got += len(ps)
	}
	el := time.Since(start)
	if err := <-sendErr; err != nil {
		return 0, err
	}
	return float64(tc.count) / el.Seconds(), nil
}

// latencies are round-trip times, sorted.
type latencies []time.Duration

func (l latencies) at(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, int(p*float64(len(l))))]
}

// grpcPingPong echoes one 64 B packet at a time over an echo link, rounds
// times, and returns the sorted round-trip times.
func grpcPingPong(ctx context.Context, tr transport.Transport, rounds int) (latencies, error) {
	link, err := tr.Dial(ctx, "echo")
	if err != nil {
		return nil, err
	}
	defer link.Close()
	packets := [][]byte{make([]byte, 64)}
	out := make(latencies, 0, rounds)
	for i := -rounds / 10; i < rounds; i++ { // the first tenth warms up
		start := time.Now()
		if err := link.Send(ctx, packets); err != nil {
			return nil, err
		}
		for got := 0; got < 1; {
			ps, err := link.Recv(ctx)
			if err != nil {
				return nil, err
			}
			got += len(ps)
		}
		if i >= 0 {
			out = append(out, time.Since(start))
		}
	}
	slices.Sort(out)
	return out, nil
}

// unixEcho is the baseline's echo process (the test plugin binary in its
// Unix echo mode).
type unixEcho struct {
	cmd  *exec.Cmd
	path string
}

func startUnixEcho(ctx context.Context, bin, path string) (*unixEcho, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "FERRY_UNIX_ECHO="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e := &unixEcho{cmd: cmd, path: path}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("echo process said %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = errors.New("echo process did not start within 10s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

func (e *unixEcho) stop() {
	e.cmd.Process.Kill()
	e.cmd.Wait()
}

func (e *unixEcho) run(ctx context.Context, tc grpcCase, batch int) (float64, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", e.path)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	payload := make([]byte, tc.size)
	sendErr := make(chan error, 1)
	start := time.Now()
	go func() {
		w := bufio.NewWriterSize(conn, 256<<10)
		var hdr [binary.MaxVarintLen64]byte
		h := hdr[:binary.PutUvarint(hdr[:], uint64(tc.size))]
		for sent := 0; sent < tc.count; {
			for i := 0; i < batch && sent < tc.count; i++ {
				w.Write(h)
				w.Write(payload)
				sent++
			}
			if err := w.Flush(); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	r := bufio.NewReaderSize(conn, 256<<10)
	buf := make([]byte, tc.size)
	for got := 0; got < tc.count; got++ {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, err
		}
		if n != uint64(tc.size) {
			return 0, fmt.Errorf("echo returned a %d-byte packet, sent %d", n, tc.size)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, err
		}
	}
	el := time.Since(start)
	if err := <-sendErr; err != nil {
		return 0, err
	}
	return float64(tc.count) / el.Seconds(), nil
}

// pingPong is grpcPingPong over the Unix socket echo.
func (e *unixEcho) pingPong(ctx context.Context, rounds int) (latencies, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", e.path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	msg := binary.AppendUvarint(nil, 64)
	msg = append(msg, make([]byte, 64)...)
	in := make([]byte, len(msg))
	out := make(latencies, 0, rounds)
	for i := -rounds / 10; i < rounds; i++ {
		start := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(conn, in); err != nil {
			return nil, err
		}
		if in[0] != 64 {
			return nil, fmt.Errorf("echo returned a %d-byte packet, sent 64", in[0])
		}
		if i >= 0 {
			out = append(out, time.Since(start))
		}
	}
	slices.Sort(out)
	return out, nil
}

// cpuPerMsg runs f and returns the CPU time this process and process pid
// used per message (0 where /proc is missing).
func cpuPerMsg(count, pid int, f func() error) (time.Duration, error) {
	self, other := procCPU(os.Getpid()), procCPU(pid)
	if err := f(); err != nil {
		return 0, err
	}
	used := procCPU(os.Getpid()) - self + procCPU(pid) - other
	return used / time.Duration(count), nil
}

// procCPU is the user+system CPU time of process pid, from /proc/PID/stat
// (in clock ticks, 100 per second on Linux).
func procCPU(pid int) time.Duration {
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
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
