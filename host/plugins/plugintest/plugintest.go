// Package plugintest runs a transport plugin as a real subprocess for
// transporttest, the way a node uses it: build the plugin's main package,
// launch it through the host's plugin launcher (go-plugin handshake, gRPC),
// and hand the host-side client to the conformance suite.
//
//	func TestConformanceAsPlugin(t *testing.T) {
//		p := plugintest.Build(t, "github.com/you/yourtransport/cmd/yourplugin")
//		transporttest.Run(t, transporttest.Config{
//			New:           p.New,
//			Kill:          p.Kill,
//			ListenAddress: "127.0.0.1:0",
//		})
//	}
package plugintest

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Plugin is a built plugin binary that tests can launch.
type Plugin struct {
	// Path is the executable.
	Path string
	// Settings are passed to Configure on every transport New launches.
	Settings map[string]string
	// StartTimeout bounds launching and configuring; 0 means 20 seconds.
	StartTimeout time.Duration
	// DisableDataChannel keeps link data on gRPC streams (the fallback
	// for plugins without the data channel capability). Otherwise New
	// checks that the data channel is in use.
	DisableDataChannel bool

	mu      sync.Mutex
	clients map[transport.Transport]*plugins.Client
}

// Build compiles the main package pkg (an import path, or a directory
// relative to the test's working directory such as "."), into a temporary
// directory of t, named after the last element of pkg, and returns it.
func Build(t testing.TB, pkg string) *Plugin {
	t.Helper()
	name := path.Base(filepath.ToSlash(pkg))
	if name == "." || name == "/" || name == "" {
		wd, _ := os.Getwd()
		name = filepath.Base(wd)
	}
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building plugin %s: %v\n%s", pkg, err, strings.TrimSpace(string(out)))
	}
	return &Plugin{Path: bin}
}

// New launches a fresh plugin process, configures it with p.Settings and
// returns its host-side transport. The process is stopped when t ends; if
// t failed, the plugin's last stderr lines are logged.
func (p *Plugin) New(t *testing.T) transport.Transport {
	t.Helper()
	timeout := p.StartTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: p.Path, Kind: plugins.KindTransport, DisableDataChannel: p.DisableDataChannel})
	if err != nil {
		t.Fatalf("launching plugin: %v", err)
	}
	if got := c.Remote().DataChannel(); got == p.DisableDataChannel {
		c.Kill()
		t.Fatalf("plugin %s: data channel in use = %v, want %v", p.Path, got, !p.DisableDataChannel)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, line := range c.Stderr() {
				t.Logf("plugin %s stderr: %s", filepath.Base(p.Path), line)
			}
		}
		c.Kill()
	})
	tr := c.Transport()
	if p.Settings != nil {
		if err := tr.Configure(ctx, p.Settings); err != nil {
			t.Fatalf("configuring plugin %s: %v", p.Path, err)
		}
	}
	p.mu.Lock()
	if p.clients == nil {
		p.clients = map[transport.Transport]*plugins.Client{}
	}
	p.clients[tr] = c
	p.mu.Unlock()
	return tr
}

// Kill ends the process behind a transport returned by New with SIGKILL, as
// a crash would, and waits until it is gone. For transporttest.Config.Kill.
func (p *Plugin) Kill(t *testing.T, tr transport.Transport) {
	t.Helper()
	p.mu.Lock()
	c := p.clients[tr]
	p.mu.Unlock()
	if c == nil {
		t.Fatal("plugintest: Kill of a transport not returned by New")
	}
	proc, err := os.FindProcess(c.Pid())
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	defer proc.Release() // FindProcess holds a pidfd until released
	if err := proc.Kill(); err != nil {
		t.Fatalf("plugintest: kill plugin pid %d: %v", c.Pid(), err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("plugintest: plugin pid %d still running 10s after SIGKILL", c.Pid())
	}
}
