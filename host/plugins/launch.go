// Package plugins finds, launches, checks and supervises transport plugin
// processes (HashiCorp go-plugin over gRPC).
//
// Launch starts one plugin process and returns a Client; a Manager finds
// plugins by name in a directory, starts each lazily on first use, pins
// checksums, and restarts a crashed plugin with capped exponential backoff,
// telling subscribers so links can be re-opened.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferryhq/ferry/sdk/transport"
)

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

	// noDeathSignal leaves out the parent-death signal, so tests can check
	// that Serve's parent check alone ends an orphaned plugin.
	noDeathSignal bool
}

// Client is one running plugin process.
type Client struct {
	name   string
	path   string
	pc     *plugin.Client
	remote *transport.Remote
	stderr *lineRing

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
	if !cfg.noDeathSignal {
		cmd.SysProcAttr = sysProcAttr()
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  transport.HandshakeConfig(),
		Plugins:          transport.PluginSet(),
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         !cfg.DisableMTLS,
		GRPCDialOptions:  transport.DialOptions(),
		StartTimeout:     cfg.StartTimeout,
		// go-plugin forwards the plugin's log lines to this logger named
		// after the executable, which is the plugin's name.
		Logger:     cfg.Logger,
		Stderr:     ring,
		SyncStdout: &lineLogger{log: logger, what: "stdout"},
		SyncStderr: io.MultiWriter(ring, &lineLogger{log: logger, what: "stderr"}),
	})

	type result struct {
		r   *transport.Remote
		err error
	}
	res := make(chan result, 1)
	go func() {
		rpc, err := pc.Client()
		if err != nil {
			res <- result{err: err}
			return
		}
		raw, err := rpc.Dispense(transport.PluginName)
		if err != nil {
			res <- result{err: err}
			return
		}
		r, ok := raw.(*transport.Remote)
		if !ok {
			res <- result{err: fmt.Errorf("dispensed %T, want a transport", raw)}
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
		return nil, fmt.Errorf("plugin %s (%s): start cancelled: %w", cfg.Name, cfg.Path, ctx.Err())
	}
	if out.err != nil {
		pc.Kill()
		return nil, startError(cfg.Name, cfg.Path, cfg.StartTimeout, out.err, ring.Lines())
	}
	return &Client{name: cfg.Name, path: cfg.Path, pc: pc, remote: out.r, stderr: ring, sum: sum}, nil
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
		return fmt.Errorf("plugin %s (%s): protocol version mismatch (host speaks %d): %s; rebuild the plugin against this Ferry SDK", name, path, transport.ProtocolMajor, first)
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("plugin %s (%s): checksum does not match the pin; reinstall the pinned build or update the pin", name, path)
	}
	return fmt.Errorf("plugin %s (%s): start failed: %s%s", name, path, first, tail)
}

// Transport is the plugin's Transport, driven over gRPC.
func (c *Client) Transport() transport.Transport { return c.remote }

// Remote is the plugin's Transport with its protocol details.
func (c *Client) Remote() *transport.Remote { return c.remote }

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
func (c *Client) Pid() int { return c.remote.Pid() }

// Done is closed as soon as the plugin process has ended.
func (c *Client) Done() <-chan struct{} { return c.remote.Done() }

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
	c.remote.Close()
	c.pc.Kill()
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
