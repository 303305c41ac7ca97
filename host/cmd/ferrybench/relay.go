package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The relay section measures issue 5's transcript as the product runs it:
// three background `ferry node` processes (each with its tcp and portal-tcp
// plugin subprocesses) created with the ferry command, n3 reachable only
// through n2's relay, against direct TCP to the same target in the same run.
var relaySection = section{
	name: "relay",
	desc: "issue 5's transcript through the ferry command (3 node processes + plugins) vs direct TCP",
	run:  runRelay,
}

type ferryCLI struct {
	bin string
	env []string
}

func (f ferryCLI) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, args...)
	cmd.Env = f.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ferry %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func runRelay(ctx context.Context, cfg config) (*table, error) {
	sz := portalSizes{single: 256 << 20, multi: 64 << 20, rtt: 3000, conns: 1500, workers: 4}
	if cfg.quick {
		sz = portalSizes{single: 8 << 20, multi: 2 << 20, rtt: 200, conns: 50, workers: 4}
	}
	target, stopTarget, err := startBenchTarget()
	if err != nil {
		return nil, err
	}
	defer stopTarget()
	dir, err := os.MkdirTemp("", "ferrybench-relay")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pdir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, err
	}
	for _, p := range []string{"tcp", "portal-tcp"} {
		if _, err := buildPlugin(ctx, pdir, p); err != nil {
			return nil, err
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "ferry")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./host/cmd/ferry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build ferry: %v\n%s", err, out)
	}
	home := filepath.Join(dir, "home")
	f := ferryCLI{bin: bin, env: append(os.Environ(), "FERRY_HOME="+home, "FERRY_PLUGIN_DIR="+pdir)}
	defer f.run(context.WithoutCancel(ctx), "node", "delete", "--all")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n2Addr := l.Addr().String()
	l.Close()
	steps := [][]string{
		{"node", "create", "n2", "--tcp-listener-address=" + n2Addr},
		{"node", "create", "n3"},
		{"service", "start", "hop", "--at", "n3"},
		{"relay", "create", "n3", "--at", "/node/n2", "--to", "/node/n3"},
		{"node", "create", "n1"},
		{"tcp-outlet", "create", "--at", "n3", "--from", "/service/outlet", "--to", target},
	}
	for _, s := range steps {
		if _, err := f.run(ctx, s...); err != nil {
			return nil, err
		}
	}
	w, err := f.run(ctx, "tcp-connection", "create", "--from", "n1", "--to", n2Addr)
	if err != nil {
		return nil, err
	}
	route := strings.TrimSpace(w) + "/service/forward_to_n3/service/hop/service/outlet"
	out, err := f.run(ctx, "tcp-inlet", "create", "--at", "n1", "--from", "127.0.0.1:0", "--to", route, "--output", "json")
	if err != nil {
		return nil, err
	}
	var inlet struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &inlet); err != nil {
		return nil, fmt.Errorf("tcp-inlet create: %w", err)
	}

	direct, err := measurePortalPath(ctx, sz, target)
	if err != nil {
		return nil, fmt.Errorf("direct TCP: %w", err)
	}
	relay, err := measurePortalPath(ctx, sz, inlet.ID)
	if err != nil {
		return nil, fmt.Errorf("through the relay: %w", err)
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
	row("ferry CLI: inlet n1 → n2 relay → n3 hop → outlet", relay)
	t.note("nodes are `ferry node` background processes created with the command as in issue 5's transcript; each runs tcp and portal-tcp plugin subprocesses")
	t.note("route %s", "/worker/<n1→n2>/service/forward_to_n3/service/hop/service/outlet")
	t.note("sizes as in the portal section: 1 stream %d MiB, 4 streams %d MiB each, %d round trips, %d connections from %d clients", sz.single>>20, sz.multi>>20, sz.rtt, sz.conns, sz.workers)
	return t, nil
}
