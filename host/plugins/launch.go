// Package plugins is Ferry's one plugin system: it finds, launches, checks
// and supervises plugin processes of every kind (transports, portals)
// over HashiCorp go-plugin and gRPC.
//
// Launch starts one plugin process, shakes hands with the one handshake
// every kind shares, asks the base Hello what the binary is (kind, name,
// version, protocol minor, capabilities, settings schema) and returns a
// Client. A Manager is the catalog: keyed by kind and name, it finds
// plugins in a directory, starts each lazily on first use (one start in
// flight per plugin; other callers wait for it, holding no lock that
// status or list calls need), pins checksums, and restarts a crashed
// plugin with one policy (capped exponential backoff; after a run of
// failures it keeps trying at a long interval and reports the plugin
// degraded), telling subscribers so what the plugin carried is re-opened.
package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferryhq/ferry/host/plugins/portalclient"
	"github.com/ferryhq/ferry/host/plugins/transportclient"
	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Kind is what a plugin provides.
type Kind string

// Plugin kinds.
const (
	KindTransport Kind = "transport"
	KindPortal    Kind = "portal"
)

// ProtocolMajor is the plugin protocol major version every kind shares.
const ProtocolMajor = pluginwire.ProtocolMajor

func kindOf(k pluginv1.Kind) Kind {
	switch k {
	case pluginv1.Kind_KIND_TRANSPORT:
		return KindTransport
	case pluginv1.Kind_KIND_PORTAL:
		return KindPortal
	}
	return Kind(fmt.Sprintf("unknown(%d)", int32(k)))
}

// DefaultStartTimeout bounds how long a plugin may take to complete the
// handshake.
const DefaultStartTimeout = 10 * time.Second

// DefaultPluginMaxProcs is the GOMAXPROCS a plugin process gets unless
// told otherwise. A transport plugin mostly moves bytes between the host's
// gRPC connection and its sockets; with one P each hand-off between its
// goroutines is a run-queue switch instead of waking a parked thread, which
// measured (2 cores, 64-byte echo host → plugin → host) ~13 → ~4.5 system
// calls per round trip in the plugin, 20-35% lower round-trip time and
// lower CPU per message, and faster 64 KiB streams, not slower. A plugin
// that needs more cores for many busy links can be given them with
// LaunchConfig.MaxProcs or GOMAXPROCS.
const DefaultPluginMaxProcs = 1

// stderrLines is how many of a plugin's last stderr lines are kept for
// crash reports.
const stderrLines = 20

// LaunchConfig describes one plugin process to start.
type LaunchConfig struct {
	// Path is the plugin executable.
	Path string
	// Name is the plugin's name in logs and errors; default: the file name.
	Name string
	// Kind, if set, is the kind the plugin must be; a binary of another
	// kind fails to launch with an error saying what it is.
	Kind Kind
	// Logger receives the plugin's log output under Name; default: none.
	Logger hclog.Logger
	// SHA256, if set, is the hex SHA-256 the executable must have.
	SHA256 string
	// StartTimeout bounds the handshake; default DefaultStartTimeout.
	StartTimeout time.Duration
	// Env is added to the plugin's environment.
	Env []string
	// MaxProcs is the plugin process's GOMAXPROCS. 0 means
	// DefaultPluginMaxProcs; a negative value leaves it to the Go runtime.
	// GOMAXPROCS in Env or in the host's environment takes precedence.
	MaxProcs int
	// DisableMTLS turns off go-plugin's automatic mutual TLS on the plugin
	// connection. Only for measuring what TLS costs (ferrybench); hosts
	// keep it on so no other local process can talk to the plugin.
	DisableMTLS bool
	// DisableDataChannel keeps link data on gRPC streams instead of the
	// private data channel (a socketpair the plugin inherits). For tests
	// of the fallback and for measuring; hosts leave it off.
	DisableDataChannel bool
	// DataRingSize is the size of each direction's shared-memory ring on
	// the data channel (a power of two; default
	// pluginwire.DefaultRingSize); the rings are used when the plugin
	// offers them too, else the socketpair carries the data. Negative
	// keeps the data on the socketpair.
	DataRingSize int
	// DataStallTimeout ends the plugin when a write to its data channel
	// stays blocked this long (it stopped reading); default 15s.
	DataStallTimeout time.Duration

	// noDeathSignal leaves out the parent-death signal, so tests can check
	// that Serve's parent check alone ends an orphaned plugin.
	noDeathSignal bool
}

// DataChannelEnv, set to "off" in the host's environment, keeps plugin
// data on gRPC streams for every plugin (to compare, or to work around a
// problem with the data channel); set to "socketpair", it keeps the data
// channel off the shared-memory rings.
const DataChannelEnv = "FERRY_DATA_CHANNEL"

// Client is one running plugin process.
type Client struct {
	name   string
	path   string
	pc     *plugin.Client
	hello  *pluginv1.HelloResponse
	done   <-chan struct{}
	remote *transportclient.Remote // KindTransport
	portal *portalclient.Remote    // KindPortal
	mux    *pluginwire.Mux         // the data channel, when in use
	stderr *lineRing
	// sockDir holds the plugin's gRPC socket; removed by Kill.
	sockDir string

	// sum is the executable's SHA-256: checked at launch when pinned,
	// otherwise computed on first use (hashing a ~20 MB binary is a
	// noticeable part of a node's start, and only listings need it).
	sumOnce sync.Once
	sum     string
}

// Launch starts the plugin at cfg.Path, checks it (executable, checksum,
// handshake, protocol version) and returns it serving. Every failure is a
// one-line error naming the binary and what to do.
func Launch(ctx context.Context, cfg LaunchConfig) (*Client, error) {
	if cfg.Name == "" {
		cfg.Name = filepath.Base(cfg.Path)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("plugin %s (%s): start cancelled: %w", cfg.Name, cfg.Path, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		cfg.StartTimeout = max(min(cfg.StartTimeout, time.Until(dl)), time.Millisecond)
	}
	sum, err := checkBinary(cfg.Name, cfg.Path, cfg.SHA256)
	if err != nil {
		return nil, err
	}
	var secure *plugin.SecureConfig
	if cfg.SHA256 != "" {
		want, _ := hex.DecodeString(cfg.SHA256)
		secure = &plugin.SecureConfig{Checksum: want, Hash: sha256.New()}
	}

	ring := newLineRing(stderrLines)
	logger := cfg.Logger.Named(cfg.Name)
	cmd := exec.Command(cfg.Path)
	if n := cfg.MaxProcs; n >= 0 {
		if n == 0 {
			n = DefaultPluginMaxProcs
		}
		// First, so that Env and the host's environment (which go-plugin
		// appends) override it.
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(n))
	}
	cmd.Env = append(cmd.Env, cfg.Env...)
	// go-plugin puts the plugin's gRPC socket in the system temp directory,
	// and a plugin that is killed leaves it there. A directory of our own
	// per launch is removed once the process is gone (Kill), whatever way
	// it ended.
	sockDir, err := os.MkdirTemp("", "ferry-plugin-")
	if err != nil {
		return nil, fmt.Errorf("plugin %s: socket directory: %w", cfg.Name, err)
	}
	cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+sockDir)
	if !cfg.noDeathSignal {
		cmd.SysProcAttr = sysProcAttr()
	}
	// The data channel exists before exec and has no name: only this host
	// and the plugin hold it, so it needs no TLS.
	var data *pluginwire.DataChannel
	if env := os.Getenv(DataChannelEnv); !cfg.DisableDataChannel && env != "off" {
		ring := cfg.DataRingSize
		if ring == 0 {
			ring = pluginwire.DefaultRingSize
		}
		if env == "socketpair" {
			ring = -1
		}
		data, err = pluginwire.NewDataChannel(ring)
		if err != nil {
			logger.Debug("no data channel; link data stays on gRPC", "error", err)
			data = nil
		} else {
			cmd.ExtraFiles = data.ExtraFiles()
			cmd.Env = append(cmd.Env, data.Env()...)
			// Once started the child holds its own copies.
			defer data.CloseChildFiles()
		}
	}
	dialOpts := pluginwire.DialOptions()
	if data != nil {
		dialOpts = pluginwire.ControlDialOptions()
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginwire.Handshake(),
		Plugins:          plugin.PluginSet{pluginwire.PluginName: pluginwire.ClientPlugin{}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         !cfg.DisableMTLS,
		GRPCDialOptions:  dialOpts,
		StartTimeout:     cfg.StartTimeout,
		// go-plugin forwards the plugin's log lines to this logger named
		// after the executable, which is the plugin's name.
		Logger:     cfg.Logger,
		Stderr:     ring,
		SyncStdout: &lineLogger{log: logger, what: "stdout"},
		SyncStderr: io.MultiWriter(ring, &lineLogger{log: logger, what: "stderr"}),
	})

	res := make(chan launched, 1)
	go func() { res <- dispense(ctx, pc, cfg, data, logger) }()
	var out launched
	select {
	case out = <-res:
	case <-ctx.Done():
		pc.Kill()
		<-res
		os.RemoveAll(sockDir)
		if data != nil {
			data.Close()
		}
		return nil, fmt.Errorf("plugin %s (%s): start cancelled: %w", cfg.Name, cfg.Path, ctx.Err())
	}
	if out.err != nil {
		pc.Kill()
		os.RemoveAll(sockDir)
		if data != nil {
			data.Close()
		}
		if out.wrongKind {
			return nil, out.err
		}
		return nil, startError(cfg.Name, cfg.Path, cfg.StartTimeout, out.err, ring.Lines())
	}
	out.c.name, out.c.path, out.c.pc, out.c.stderr, out.c.sum = cfg.Name, cfg.Path, pc, ring, sum
	out.c.sockDir = sockDir
	return out.c, nil
}

type launched struct {
	c         *Client
	err       error
	wrongKind bool
}

// dispense completes go-plugin's handshake, says hello and builds the
// client for the kind the plugin says it is.
func dispense(ctx context.Context, pc *plugin.Client, cfg LaunchConfig, data *pluginwire.DataChannel, logger hclog.Logger) launched {
	rpc, err := pc.Client()
	if err != nil {
		return launched{err: err}
	}
	raw, err := rpc.Dispense(pluginwire.PluginName)
	if err != nil {
		return launched{err: err}
	}
	conn, ok := raw.(*pluginwire.Conn)
	if !ok {
		return launched{err: fmt.Errorf("dispensed %T, want a plugin connection", raw)}
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	offer := pluginwire.HostCapabilities
	if data != nil {
		offer = append(slices.Clip(offer), data.Offer()...)
	}
	hello, err := pluginwire.CallHello(hctx, conn.Conn, offer)
	if err != nil {
		return launched{err: fmt.Errorf("hello: %w", err)}
	}
	kind := kindOf(hello.Kind)
	if cfg.Kind != "" && kind != cfg.Kind {
		return launched{wrongKind: true, err: fmt.Errorf("plugin %s (%s) is a %s plugin, not a %s plugin; check the name", cfg.Name, cfg.Path, kind, cfg.Kind)}
	}
	c := &Client{hello: hello, done: conn.Done}
	switch kind {
	case KindTransport:
		var mux *pluginwire.Mux
		if data != nil && pluginwire.Has(hello.Capabilities, pluginv1.Capability_CAPABILITY_DATA_CHANNEL) {
			mux = pluginwire.NewMux(data.Use(hello.Capabilities), pluginwire.MuxConfig{
				MaxFrame:     pluginwire.GRPCLimit(int(hello.GetTransport().GetMaxMessageSize())),
				StallTimeout: cfg.DataStallTimeout,
				Keepalive:    true,
				Logger:       logger,
			})
			c.mux = mux
			go watchData(mux, pc, conn.Done, logger)
		} else if data != nil {
			data.Close()
		}
		c.remote, err = transportclient.NewWithData(conn.Conn, conn.Done, hello, mux)
	case KindPortal:
		var mux *pluginwire.Mux
		if data != nil && pluginwire.Has(hello.Capabilities, pluginv1.Capability_CAPABILITY_DATA_CHANNEL) {
			mcfg := pluginwire.PortalMuxConfig()
			mcfg.StallTimeout, mcfg.Keepalive, mcfg.Logger = cfg.DataStallTimeout, true, logger
			mux = pluginwire.NewMux(data.Use(hello.Capabilities), mcfg)
			c.mux = mux
			go watchData(mux, pc, conn.Done, logger)
		} else if data != nil {
			data.Close()
		}
		c.portal, err = portalclient.NewWithData(conn.Conn, hello, mux)
	default:
		err = fmt.Errorf("plugin %s is of a kind this host does not know (%s); upgrade Ferry", cfg.Name, kind)
	}
	if err != nil {
		return launched{err: err}
	}
	return launched{c: c}
}

// watchData ends the plugin when its data channel fails while it runs: a
// plugin that breaks the protocol (a bad length, an unknown id, data
// beyond its credit) or stops reading is restarted by its supervisor,
// never trusted further.
func watchData(mux *pluginwire.Mux, pc *plugin.Client, done <-chan struct{}, logger hclog.Logger) {
	select {
	case <-mux.Failed():
	case <-done:
		return
	}
	err := mux.Err()
	if errors.Is(err, pluginwire.ErrChannelClosed) {
		return // closed by this host
	}
	select {
	case <-done:
		return // the plugin died first; its supervisor reports that
	default:
	}
	logger.Error("plugin broke its data channel; ending it", "error", err)
	if p := pc.ReattachConfig(); p != nil && p.Pid > 0 {
		if proc, perr := os.FindProcess(p.Pid); perr == nil {
			proc.Kill()
			proc.Release() // FindProcess holds a pidfd until released
			return
		}
	}
	pc.Kill()
}

// checkBinary checks that path is a regular executable file whose SHA-256
// is want (if set), and returns its SHA-256 when it computed it.
func checkBinary(name, path, want string) (string, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("plugin %s: %s does not exist; build it (make build) or point the plugin directory (--plugin-dir or FERRY_PLUGIN_DIR) at it", name, path)
	}
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("plugin %s: %s is not a regular file; the plugin directory must hold plugin executables", name, path)
	}
	if st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("plugin %s: %s is not executable; run chmod +x %s", name, path, path)
	}
	if want == "" {
		return "", nil
	}
	if _, err := hex.DecodeString(want); err != nil || len(want) != 64 {
		return "", fmt.Errorf("plugin %s: pinned checksum %q is not a hex SHA-256; fix the pin", name, want)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return "", fmt.Errorf("plugin %s: checksum %s: %w", name, path, err)
	}
	if !strings.EqualFold(sum, want) {
		return "", fmt.Errorf("plugin %s: %s has SHA-256 %s but %s is pinned; reinstall the pinned build or update the pin", name, path, sum, strings.ToLower(want))
	}
	return sum, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// startError turns go-plugin's start failures into one actionable line.
func startError(name, path string, timeout time.Duration, err error, stderr []string) error {
	msg := err.Error()
	first, _, _ := strings.Cut(msg, "\n")
	tail := ""
	if len(stderr) > 0 {
		tail = "; its stderr ended with: " + stderr[len(stderr)-1]
	}
	switch {
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		line := strings.TrimSpace(strings.TrimPrefix(first, "Unrecognized remote plugin message:"))
		return fmt.Errorf("plugin %s (%s): handshake failed: it printed %q on stdout before serving; a plugin must not write to stdout before transport.Serve (log to stderr instead)", name, path, line)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("plugin %s (%s): never answered: no handshake within %s; check that its main calls transport.Serve and does not block before it%s", name, path, timeout, tail)
	case strings.Contains(msg, "plugin exited before we could connect"):
		return fmt.Errorf("plugin %s (%s): exited during start%s; run it with FERRY_LOG_LEVEL=debug or look at its log", name, path, tail)
	case strings.Contains(msg, "Incompatible API version"), strings.Contains(msg, "incompatible"):
		return fmt.Errorf("plugin %s (%s): protocol version mismatch (host speaks %d): %s; rebuild the plugin against this Ferry SDK", name, path, ProtocolMajor, first)
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("plugin %s (%s): checksum does not match the pin; reinstall the pinned build or update the pin", name, path)
	}
	return fmt.Errorf("plugin %s (%s): start failed: %s%s", name, path, first, tail)
}

// Kind is what the plugin provides.
func (c *Client) Kind() Kind { return kindOf(c.hello.Kind) }

// Version is the plugin's own version, from its Hello.
func (c *Client) Version() string { return c.hello.Version }

// ProtocolMinor is the protocol minor both sides speak.
func (c *Client) ProtocolMinor() int {
	return int(min(c.hello.ProtocolMinor, pluginwire.ProtocolMinor))
}

// Capabilities are the protocol capabilities both sides offered, by name.
func (c *Client) Capabilities() []string {
	var out []string
	for _, k := range pluginwire.Intersect(pluginwire.HostCapabilities, c.hello.Capabilities) {
		out = append(out, strings.ToLower(strings.TrimPrefix(k.String(), "CAPABILITY_")))
	}
	return out
}

// Transport is the plugin's Transport, driven over gRPC; nil unless the
// plugin is a transport.
func (c *Client) Transport() transport.Transport {
	if c.remote == nil {
		return nil
	}
	return c.remote
}

// Remote is the plugin's Transport with its protocol details; nil unless
// the plugin is a transport.
func (c *Client) Remote() *transportclient.Remote { return c.remote }

// DataChannel reports whether the plugin's data moves on the private data
// channel (else on gRPC streams).
func (c *Client) DataChannel() bool { return c.mux != nil }

// DataRing reports whether the data channel's bytes move through shared
// memory rings (both sides offered them) rather than its socketpair.
func (c *Client) DataRing() bool { return c.mux != nil && c.mux.Ring() }

// Portal is the plugin's Portal, driven over gRPC; nil unless the plugin
// is a portal.
func (c *Client) Portal() portal.Portal {
	if c.portal == nil {
		return nil
	}
	return c.portal
}

// Name is the plugin's name.
func (c *Client) Name() string { return c.name }

// Path is the plugin's executable.
func (c *Client) Path() string { return c.path }

// SHA256 is the hex SHA-256 of the executable (checked at launch when
// pinned); empty if the file can no longer be read.
func (c *Client) SHA256() string {
	c.sumOnce.Do(func() {
		if c.sum == "" {
			c.sum, _ = fileSHA256(c.path)
		}
	})
	return c.sum
}

// Pid is the plugin process id.
func (c *Client) Pid() int { return int(c.hello.Pid) }

// Done is closed as soon as the plugin process has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Exited reports whether the plugin process has ended.
func (c *Client) Exited() bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// Stderr returns the last lines the plugin wrote to stderr.
func (c *Client) Stderr() []string { return c.stderr.Lines() }

// Kill ends the plugin: a graceful shutdown request, then SIGKILL after two
// seconds. It returns once the process is gone.
func (c *Client) Kill() {
	if c.remote != nil {
		c.remote.Close()
	}
	if c.mux != nil {
		defer c.mux.Close()
	}
	if c.portal != nil {
		c.portal.Close()
	}
	c.pc.Kill()
	if c.sockDir != "" {
		os.RemoveAll(c.sockDir)
	}
}

// lineRing keeps the last lines written to it.
type lineRing struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial []byte
}

func newLineRing(max int) *lineRing { return &lineRing{max: max} }

func (r *lineRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data := append(r.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(data[:i]), "\r"); line != "" {
			r.lines = append(r.lines, line)
			if len(r.lines) > r.max {
				r.lines = r.lines[len(r.lines)-r.max:]
			}
		}
		data = data[i+1:]
	}
	if len(data) > 4096 {
		data = data[:4096]
	}
	r.partial = append(r.partial[:0], data...)
	return len(p), nil
}

// Lines returns a copy of the kept lines, oldest first.
func (r *lineRing) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]string(nil), r.lines...)
	if len(r.partial) > 0 {
		out = append(out, string(r.partial))
	}
	return out
}

// lineLogger logs raw output the plugin wrote after the handshake.
type lineLogger struct {
	log  hclog.Logger
	what string
}

func (w *lineLogger) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Debug(line, "stream", w.what)
		}
	}
	return len(p), nil
}
