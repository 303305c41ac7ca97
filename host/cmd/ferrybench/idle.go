package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The idle section measures what an idle node costs the way a user would
// see it in top: `ferry node create n1` as a background process with its
// default tcp listener (the tcp plugin as a subprocess), left alone for a
// few seconds, then the resident memory of both processes from /proc.
// The baseline is issue 8's goal, 30 MB for the two together.
var idleSection = section{
	name: "idle",
	desc: "idle background node + its tcp plugin: VmRSS (anon / file-backed) of both processes vs the 30 MB goal",
	run:  runIdle,
}

// idleGoal is issue 8's budget for an idle node and its tcp plugin.
const idleGoal = 30e6

// releaseEnv and releaseFlags are how `make build` builds bin/ferry and
// bin/plugins/* (the Makefile's RELEASE_ENV and RELEASE_FLAGS, which say
// why; TestReleaseBuildMatchesMakefile keeps the two in step), so the idle
// section measures the binaries that ship.
var (
	releaseEnv   = []string{"CGO_ENABLED=0"}
	releaseFlags = []string{"-tags", "grpcnotrace"}
)

func runIdle(ctx context.Context, cfg config) (*table, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ferrybench-idle")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ferry, pluginDir := filepath.Join(dir, "ferry"), filepath.Join(dir, "plugins")
	tcpPlugin := filepath.Join(pluginDir, "tcp")
	for _, b := range [][2]string{{ferry, "./host/cmd/ferry"}, {tcpPlugin, "./plugins/tcp"}} {
		bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		cmd := exec.CommandContext(bctx, "go", append(append([]string{"build"}, releaseFlags...), "-o", b[0], b[1])...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), releaseEnv...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	env := append(os.Environ(), "FERRY_HOME="+filepath.Join(dir, "home"), "FERRY_PLUGIN_DIR="+pluginDir)
	run := func(args ...string) ([]byte, error) {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(rctx, ferry, args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("ferry %v: %v\n%s%s", args, err, out.String(), errb.String())
		}
		return out.Bytes(), nil
	}
	// Whatever happens, no node outlives the benchmark.
	defer run("node", "delete", "--all")

	out, err := run("node", "create", "n1", "--output", "json")
	if err != nil {
		return nil, err
	}
	var st struct {
		PID     int `json:"pid"`
		Plugins []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("ferry node create --output json: %w\n%s", err, out)
	}
	pluginPID := 0
	for _, p := range st.Plugins {
		if p.Name == "tcp" {
			pluginPID = p.PID
		}
	}
	if st.PID == 0 || pluginPID == 0 {
		return nil, fmt.Errorf("ferry node create: no node or tcp plugin pid in %s", out)
	}

	idle := 5 * time.Second
	if cfg.quick {
		idle = 2 * time.Second
	}
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	node, err := readProcMem(strconv.Itoa(st.PID))
	if err != nil {
		return nil, err
	}
	plugin, err := readProcMem(strconv.Itoa(pluginPID))
	if err != nil {
		return nil, err
	}
	size := func(path string) string {
		fi, err := os.Stat(path)
		if err != nil {
			return "-"
		}
		return fmtMB1(fi.Size())
	}

	t := newTable("process", "VmRSS", "RssAnon", "RssFile", "threads", "binary", "÷ goal")
	t.add("goal (baseline)", fmtMB1(idleGoal), "", "", "", "", "1.00x")
	t.add("node (ferry node run)", fmtMB1(node.rss), fmtMB1(node.anon), fmtMB1(node.file), strconv.Itoa(node.threads), size(ferry), fmtRatio(float64(node.rss), idleGoal))
	t.add("tcp plugin", fmtMB1(plugin.rss), fmtMB1(plugin.anon), fmtMB1(plugin.file), strconv.Itoa(plugin.threads), size(tcpPlugin), fmtRatio(float64(plugin.rss), idleGoal))
	t.add("node + tcp plugin", fmtMB1(node.rss+plugin.rss), fmtMB1(node.anon+plugin.anon), fmtMB1(node.file+plugin.file), strconv.Itoa(node.threads+plugin.threads), "", fmtRatio(float64(node.rss+plugin.rss), idleGoal))
	t.note("read from /proc/PID/status %s after `ferry node create n1` returned (node UP, tcp listener on 127.0.0.1); MB = 10^6 bytes", idle)
	t.note("binaries built as make build builds them: %s go build %s", strings.Join(releaseEnv, " "), strings.Join(releaseFlags, " "))
	t.note("RssFile is the binaries' text and read-only data mapped from the page cache (shared, reclaimable); RssAnon is heap, stacks and runtime metadata")
	return t, nil
}

// procMem is a process's resident memory from /proc/PID/status, in bytes.
type procMem struct {
	rss, anon, file int64
	threads         int
}

func readProcMem(pid string) (procMem, error) {
	var m procMem
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return m, fmt.Errorf("read /proc/%s/status: %w", pid, err)
	}
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if f[0] == "Threads:" {
			m.threads, _ = strconv.Atoi(f[1])
			continue
		}
		if p, ok := fields[f[0]]; ok {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return m, fmt.Errorf("%s of %s: %w", f[0], pid, err)
			}
			*p = kb << 10
			found++
		}
	}
	if found != len(fields) {
		return m, fmt.Errorf("/proc/%s/status lacks VmRSS, RssAnon or RssFile", pid)
	}
	return m, nil
}

// fmtMB1 prints bytes as decimal megabytes with one decimal, the unit of
// issue 8's goal.
func fmtMB1(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
