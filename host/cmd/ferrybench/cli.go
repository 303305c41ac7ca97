package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/ferryhq/ferry/host/plugins"
)

// The cli section measures the ferry command as users run it: the time
// from `ferry node create` to a node that answers on its control socket
// (with its TCP plugin running as a subprocess and listening), and
// `ferry up configs/bridge.hcl` for three nodes, a node with no listener,
// and message send to a remote service that exists and to one that does
// not (the far node's error comes back). The baseline is the bare
// process start of `ferry --version`, measured in the same run.
var cliSection = section{
	name: "cli",
	desc: "ferry node create (with and without a listener) / ferry up to UP, message send (also to a missing remote service) vs ferry --version",
	run:  runCLI,
}

func runCLI(ctx context.Context, cfg config) (*table, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ferrybench-cli")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ferry, pluginDir := filepath.Join(dir, "ferry"), filepath.Join(dir, "plugins")
	for _, b := range [][2]string{{ferry, "./host/cmd/ferry"}, {filepath.Join(pluginDir, "tcp"), "./plugins/tcp"}} {
		bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		cmd := exec.CommandContext(bctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	home := filepath.Join(dir, "home")
	env := append(os.Environ(), "FERRY_HOME="+home, "FERRY_PLUGIN_DIR="+pluginDir)
	// runExpect runs ferry and times it; the command must succeed, or with
	// fail set must fail (an error answered, not a timeout).
	runExpect := func(fail bool, args ...string) (time.Duration, error) {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(rctx, ferry, args...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		d := time.Since(start)
		if (err != nil) != fail {
			return 0, fmt.Errorf("ferry %v: error %v (want failure: %v)\n%s", args, err, fail, out.String())
		}
		return d, nil
	}
	run := func(args ...string) (time.Duration, error) { return runExpect(false, args...) }
	// Whatever happens, no node outlives the benchmark.
	defer run("node", "delete", "--all")

	runs := 10
	if cfg.quick {
		runs = 3
	}
	median := func(f func(i int) (time.Duration, error)) (time.Duration, error) {
		var ds []time.Duration
		for i := 0; i < runs; i++ {
			d, err := f(i)
			if err != nil {
				return 0, err
			}
			ds = append(ds, d)
		}
		slices.Sort(ds)
		return ds[len(ds)/2], nil
	}
	if _, err := run("--version"); err != nil { // warm the page cache
		return nil, err
	}
	base, err := median(func(int) (time.Duration, error) { return run("--version") })
	if err != nil {
		return nil, err
	}
	create, err := median(func(i int) (time.Duration, error) {
		return run("node", "create", fmt.Sprintf("bench%d", i))
	})
	if err != nil {
		return nil, err
	}
	noListener, err := median(func(i int) (time.Duration, error) {
		return run("node", "create", fmt.Sprintf("quiet%d", i), "--no-listener")
	})
	if err != nil {
		return nil, err
	}
	if _, err := run("node", "delete", "--all"); err != nil {
		return nil, err
	}

	// message send to a remote node: a service that exists, and one that
	// does not (answered by the far node's error message; it used to
	// wait for the 5 s timeout).
	for _, n := range []string{"m1", "m2"} {
		if _, err := run("node", "create", n); err != nil {
			return nil, err
		}
	}
	if _, err := run("message", "send", "warm", "--from", "m1", "--to", "/node/m2/service/echo"); err != nil {
		return nil, err
	}
	sendOK, err := median(func(int) (time.Duration, error) {
		return run("message", "send", "x", "--from", "m1", "--to", "/node/m2/service/echo")
	})
	if err != nil {
		return nil, err
	}
	sendMissing, err := median(func(int) (time.Duration, error) {
		return runExpect(true, "message", "send", "x", "--from", "m1", "--to", "/node/m2/service/missing")
	})
	if err != nil {
		return nil, err
	}
	if _, err := run("node", "delete", "--all"); err != nil {
		return nil, err
	}

	// What the plugin alone costs, to attribute node create's time.
	launch, err := median(func(int) (time.Duration, error) {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		c, err := plugins.Launch(lctx, plugins.LaunchConfig{Path: filepath.Join(pluginDir, "tcp")})
		if err != nil {
			return 0, err
		}
		d := time.Since(start)
		c.Kill()
		return d, nil
	})
	if err != nil {
		return nil, err
	}

	t := newTable("operation", fmt.Sprintf("median of %d", runs), "per node", "ratio")
	t.add("ferry --version (baseline)", fmtDur(base), fmtDur(base), "1.00x")
	t.add("tcp plugin launch alone (plugins.Launch)", fmtDur(launch), fmtDur(launch), fmtRatio(float64(launch), float64(base)))
	t.add("ferry node create (to UP)", fmtDur(create), fmtDur(create), fmtRatio(float64(create), float64(base)))
	t.add("ferry node create --no-listener (to UP, no plugin)", fmtDur(noListener), fmtDur(noListener), fmtRatio(float64(noListener), float64(base)))
	t.add("message send to a remote echo", fmtDur(sendOK), "", fmtRatio(float64(sendOK), float64(base)))
	t.add("message send to a missing remote service (error back)", fmtDur(sendMissing), "", fmtRatio(float64(sendMissing), float64(base)))

	bridge := filepath.Join(root, "configs", "bridge.hcl")
	if _, err := os.Stat(bridge); err == nil {
		up, err := median(func(int) (time.Duration, error) {
			d, err := run("up", bridge, "--var", "n2_port=0", "--var", "n3_port=0")
			if err != nil {
				return 0, err
			}
			_, err = run("down", bridge)
			return d, err
		})
		if err != nil {
			return nil, err
		}
		t.add("ferry up bridge.hcl (3 nodes)", fmtDur(up), fmtDur(up/3), fmtRatio(float64(up), float64(base)))
	}
	t.note("target: <= 150ms per node including plugin start; each node runs its tcp plugin as a subprocess")
	return t, nil
}
