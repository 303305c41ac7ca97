package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// newTransportFunc makes one transport for a measurement and says how to
// release it; the sections measure the same code in-process and as a
// plugin process through it.
type newTransportFunc func() (transport.Transport, func(), error)

// inProcess returns a newTransportFunc for a transport in this process,
// configured with settings (nil: the defaults).
func inProcess(ctx context.Context, newT func() transport.Transport, settings map[string]string) newTransportFunc {
	return func() (transport.Transport, func(), error) {
		t := newT()
		if settings != nil {
			if err := t.Configure(ctx, settings); err != nil {
				t.Close()
				return nil, nil, err
			}
		}
		return t, func() { t.Close() }, nil
	}
}

// pluginProcess returns a newTransportFunc that launches the plugin binary
// bin as its own process (host/plugins.Launch) and configures it with
// settings (nil: the defaults); releasing it closes the transport and
// kills the process.
func pluginProcess(ctx context.Context, bin string, settings map[string]string) newTransportFunc {
	return func() (transport.Transport, func(), error) {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := plugins.Launch(lctx, plugins.LaunchConfig{Path: bin})
		if err != nil {
			return nil, nil, err
		}
		t := c.Transport()
		if settings != nil {
			if err := t.Configure(lctx, settings); err != nil {
				c.Kill()
				return nil, nil, err
			}
		}
		return t, func() { t.Close(); c.Kill() }, nil
	}
}

// buildPluginTemp builds plugins/NAME (buildPlugin) into a new temporary
// directory, which cleanup removes.
func buildPluginTemp(ctx context.Context, name string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "ferrybench-"+name)
	if err != nil {
		return "", nil, err
	}
	bin, err = buildPlugin(ctx, dir, name)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// startKfake starts an in-process Kafka-protocol broker (kfake) that
// creates topics on first use, and returns its address.
func startKfake() (brokers string, stop func(), err error) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		return "", nil, fmt.Errorf("start kfake: %w", err)
	}
	return cluster.ListenAddrs()[0], cluster.Close, nil
}

// benchPair is two nodes, bench-a and bench-b, each driving its own
// transport: b listens on 127.0.0.1:0 and a is connected to it.
type benchPair struct {
	a, b *node.Node
	conn routing.Address // a's connection worker, the first hop to b
}

// route is the route from a to worker on b, over the connection.
func (p *benchPair) route(worker string) routing.Route {
	return routing.Route{p.conn, routing.Local(worker)}
}

// newBenchPair starts a benchPair whose transports newT makes; b's listener
// lets peers reach the workers named in allow. stop releases everything in
// the reverse order.
func newBenchPair(ctx context.Context, newT newTransportFunc, allow ...string) (p *benchPair, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	// Both nodes, then both transports, then both bindings, so that stop
	// unbinds both before it closes either transport.
	nodes := make([]*node.Node, 2)
	for i, name := range []string{"bench-a", "bench-b"} {
		n, err := node.New(node.Config{Name: name})
		if err != nil {
			return nil, nil, err
		}
		stops = append(stops, func() { n.Shutdown(context.WithoutCancel(ctx)) })
		nodes[i] = n
	}
	ts := make([]transport.Transport, 2)
	for i := range ts {
		t, closeT, err := newT()
		if err != nil {
			return nil, nil, err
		}
		stops = append(stops, closeT)
		ts[i] = t
	}
	bs := make([]*transports.Binding, 2)
	for i, n := range nodes {
		b, err := transports.Attach(n, ts[i], transports.Options{})
		if err != nil {
			return nil, nil, err
		}
		stops = append(stops, func() { b.Close() })
		bs[i] = b
	}
	l, err := bs[1].Listen(ctx, "127.0.0.1:0", allow...)
	if err != nil {
		return nil, nil, err
	}
	c, err := bs[0].Connect(ctx, l.Address)
	if err != nil {
		return nil, nil, err
	}
	return &benchPair{a: nodes[0], b: nodes[1], conn: c.Worker}, stop, nil
}

// startHelper runs this executable again as a section's helper process,
// with env (NAME=VALUE) telling it which (the section's init runs the
// helper instead of the benchmarks). The helper prints its address on its
// first line and exits when its stdin closes: stop closes it and waits,
// killing the helper after 5 s.
func startHelper(ctx context.Context, env string) (addr string, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addrc <- strings.TrimSpace(line)
	}()
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		stop()
		return "", nil, errors.New("helper process did not report its address")
	}
	if addr == "" {
		stop()
		return "", nil, errors.New("helper process exited without an address")
	}
	return addr, stop, nil
}
