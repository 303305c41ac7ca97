package portals

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferryhq/ferry/sdk/portal"
)

// PluginConfig describes one portal plugin process to start (for example
// bin/plugins/portal-tcp).
type PluginConfig struct {
	// Path is the plugin executable.
	Path string
	// Name is the plugin's name in logs; default: the file name.
	Name string
	// Logger receives the plugin's log output; default: none.
	Logger hclog.Logger
	// SHA256, if set, is the hex SHA-256 the executable must have.
	SHA256 string
	// StartTimeout bounds the handshake; default 10s.
	StartTimeout time.Duration
	// MaxProcs is the plugin process's GOMAXPROCS. 0 means
	// DefaultPluginMaxProcs; a negative value leaves it to the Go runtime.
	// GOMAXPROCS in the host's environment takes precedence.
	MaxProcs int
}

// DefaultPluginMaxProcs is the GOMAXPROCS a portal plugin gets unless told
// otherwise. A portal plugin moves bytes between its sockets and the host's
// gRPC connection; with one P a hand-off between its goroutines (socket
// reader, gRPC's writer and reader) is a run-queue switch instead of waking
// a parked thread. Measured on the 2-core machine (plugin benchmarks in this
// package, old and new alternated): 64 B round trip through inlet and
// outlet ~25% lower, connections a little faster, bulk throughput and CPU
// unchanged within noise.
const DefaultPluginMaxProcs = 1

// PluginClient is one running portal plugin process.
type PluginClient struct {
	name   string
	pc     *plugin.Client
	remote *portal.Remote
	stderr *tailLines
}

// LaunchPlugin starts a portal plugin, checks it (executable, checksum,
// handshake, protocol version) and returns it serving. The plugin dies with
// this process.
func LaunchPlugin(ctx context.Context, cfg PluginConfig) (*PluginClient, error) {
	if cfg.Name == "" {
		cfg.Name = filepath.Base(cfg.Path)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		cfg.StartTimeout = min(cfg.StartTimeout, time.Until(dl))
	}
	if err := checkPluginBinary(cfg.Name, cfg.Path, cfg.SHA256); err != nil {
		return nil, err
	}
	var secure *plugin.SecureConfig
	if cfg.SHA256 != "" {
		want, _ := hex.DecodeString(cfg.SHA256)
		secure = &plugin.SecureConfig{Checksum: want, Hash: sha256.New()}
	}
	tail := &tailLines{max: 20}
	cmd := exec.Command(cfg.Path)
	cmd.SysProcAttr = sysProcAttr()
	if n := cfg.MaxProcs; n >= 0 {
		if n == 0 {
			n = DefaultPluginMaxProcs
		}
		// go-plugin appends the host's environment after this, so a
		// GOMAXPROCS set there wins.
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(n))
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  portal.HandshakeConfig(),
		Plugins:          portal.PluginSet(),
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  portal.DialOptions(),
		StartTimeout:     cfg.StartTimeout,
		Logger:           cfg.Logger,
		Stderr:           tail,
	})
	type result struct {
		r   *portal.Remote
		err error
	}
	res := make(chan result, 1)
	go func() {
		rpc, err := pc.Client()
		if err != nil {
			res <- result{err: err}
			return
		}
		raw, err := rpc.Dispense(portal.PluginName)
		if err != nil {
			res <- result{err: err}
			return
		}
		r, ok := raw.(*portal.Remote)
		if !ok {
			res <- result{err: fmt.Errorf("dispensed %T, want a portal (is %s a transport plugin?)", raw, cfg.Path)}
			return
		}
		res <- result{r: r}
	}()
	var out result
	select {
	case out = <-res:
	case <-ctx.Done():
		pc.Kill()
		<-res
		return nil, fmt.Errorf("portal plugin %s (%s): start cancelled: %w", cfg.Name, cfg.Path, ctx.Err())
	}
	if out.err != nil {
		pc.Kill()
		msg, _, _ := strings.Cut(out.err.Error(), "\n")
		if lines := tail.lines(); len(lines) > 0 {
			msg += "; its stderr ended with: " + lines[len(lines)-1]
		}
		return nil, fmt.Errorf("portal plugin %s (%s): start failed: %s", cfg.Name, cfg.Path, msg)
	}
	return &PluginClient{name: cfg.Name, pc: pc, remote: out.r, stderr: tail}, nil
}

// Portal is the plugin's Portal, driven over gRPC.
func (c *PluginClient) Portal() portal.Portal { return c.remote }

// Pid is the plugin's process id.
func (c *PluginClient) Pid() int { return c.remote.Pid() }

// Exited reports whether the plugin process has ended.
func (c *PluginClient) Exited() bool { return c.pc.Exited() }

// Stderr returns the plugin's last stderr lines.
func (c *PluginClient) Stderr() []string { return c.stderr.lines() }

// Kill ends the plugin's streams and the process, and returns once it is
// gone.
func (c *PluginClient) Kill() {
	c.remote.Close()
	c.pc.Kill()
}

func checkPluginBinary(name, path, want string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("portal plugin %s: %s does not exist; build it (make build)", name, path)
	}
	if err != nil {
		return fmt.Errorf("portal plugin %s: %w", name, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("portal plugin %s: %s is not an executable file", name, path)
	}
	if want == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("portal plugin %s: %w", name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("portal plugin %s: checksum %s: %w", name, path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return fmt.Errorf("portal plugin %s: %s has SHA-256 %s but %s is pinned; reinstall the pinned build or update the pin", name, path, got, strings.ToLower(want))
	}
	return nil
}

// tailLines keeps the last lines written to it.
type tailLines struct {
	mu   sync.Mutex
	max  int
	buf  []string
	part string
}

func (t *tailLines) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	if len(t.part) > 4096 {
		t.part = t.part[:4096]
	}
	for _, l := range parts[:len(parts)-1] {
		if l = strings.TrimSpace(l); l != "" {
			t.buf = append(t.buf, l)
		}
	}
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailLines) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}

// SupervisedPlugin is a portal plugin process that is started again when it
// dies: the next Listen or Dial launches a fresh process (waiting out a
// capped exponential backoff between launches, so a plugin that crashes at
// start is not relaunched in a tight loop). Streams of the dead process fail
// with errors and their sessions end; inlets re-listen on their address.
type SupervisedPlugin struct {
	cfg PluginConfig
	log hclog.Logger

	mu       sync.Mutex
	cur      *PluginClient
	closed   bool
	launched time.Time
	backoff  time.Duration
	restarts int
}

// Backoff bounds between launches of a crashing plugin.
const (
	minRestartBackoff = 100 * time.Millisecond
	maxRestartBackoff = 5 * time.Second
)

// StartPlugin launches the plugin and supervises it.
func StartPlugin(ctx context.Context, cfg PluginConfig) (*SupervisedPlugin, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &SupervisedPlugin{cfg: cfg, log: cfg.Logger, backoff: minRestartBackoff}
	c, err := LaunchPlugin(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.cur, s.launched = c, time.Now()
	return s, nil
}

// current returns a live plugin client, relaunching a dead one.
func (s *SupervisedPlugin) current(ctx context.Context) (*PluginClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, portal.ErrClosed
	}
	if !s.cur.Exited() {
		return s.cur, nil
	}
	if time.Since(s.launched) > 30*time.Second {
		s.backoff = minRestartBackoff // it ran fine for a while
	}
	if wait := s.backoff - time.Since(s.launched); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("portal plugin %s: waiting to restart: %w", s.cur.name, ctx.Err())
		}
	}
	s.log.Warn("portal plugin exited; starting it again", "plugin", s.cur.name, "stderr", strings.Join(s.cur.Stderr(), " | "))
	s.cur.Kill()
	c, err := LaunchPlugin(ctx, s.cfg)
	s.launched = time.Now()
	s.backoff = min(2*s.backoff, maxRestartBackoff)
	if err != nil {
		return nil, err
	}
	s.cur = c
	s.restarts++
	return c, nil
}

// Info describes the plugin.
func (s *SupervisedPlugin) Info() portal.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Portal().Info()
}

// Listen listens through the live plugin process.
func (s *SupervisedPlugin) Listen(ctx context.Context, address string) (portal.Listener, error) {
	c, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return c.Portal().Listen(ctx, address)
}

// Dial dials through the live plugin process.
func (s *SupervisedPlugin) Dial(ctx context.Context, address string) (portal.Stream, error) {
	c, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	return c.Portal().Dial(ctx, address)
}

// Pid is the current plugin process id.
func (s *SupervisedPlugin) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Pid()
}

// Restarts counts how often the plugin was started again.
func (s *SupervisedPlugin) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Kill kills the current process without closing the supervisor (for
// tests of crash handling).
func (s *SupervisedPlugin) Kill() {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	c.Kill()
}

// Close stops the plugin for good.
func (s *SupervisedPlugin) Close() error {
	s.mu.Lock()
	s.closed = true
	c := s.cur
	s.mu.Unlock()
	c.Kill()
	return nil
}

var _ portal.Portal = (*SupervisedPlugin)(nil)
