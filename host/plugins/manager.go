package plugins

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Config configures a Manager.
type Config struct {
	// Dir holds the plugin executables. Empty: $FERRY_PLUGIN_DIR, else a
	// "plugins" directory beside the running executable, else ./bin/plugins.
	Dir string
	// Logger receives the Manager's and the plugins' logs; default: none.
	Logger hclog.Logger
	// Pins maps a plugin name to the hex SHA-256 its executable must have.
	Pins map[string]string
	// Paths maps a plugin name to its executable when it is not Dir/NAME
	// (a topology file's plugin block may name one).
	Paths map[string]string
	// StartTimeout bounds each plugin's handshake; default DefaultStartTimeout.
	StartTimeout time.Duration
	// RestartBackoff is the first delay before restarting a crashed plugin
	// (default 100ms); it doubles on each crash in a row up to
	// MaxRestartBackoff (default 10s).
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// MaxRestarts is how many restarts in a row may fail, or crash within
	// StableAfter of starting, before the Manager gives up (default 5).
	MaxRestarts int
	// StableAfter is how long a plugin must run for a crash to count as a
	// new series rather than one more in a row (default 30s).
	StableAfter time.Duration
}

// Manager finds transport plugins by name and runs them.
type Manager struct {
	cfg Config
	dir string
	log hclog.Logger

	mu         sync.Mutex
	transports map[string]*Transport
	closed     bool
}

// NewManager returns a Manager for the plugins in cfg.Dir (or the default
// directory). Plugins start on first use.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = 100 * time.Millisecond
	}
	if cfg.MaxRestartBackoff <= 0 {
		cfg.MaxRestartBackoff = 10 * time.Second
	}
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 5
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 30 * time.Second
	}
	for name, sum := range cfg.Pins {
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("plugin pin: %w", err)
		}
		if len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" {
			return nil, fmt.Errorf("plugin pin for %s: %q is not a hex SHA-256 (64 hex digits)", name, sum)
		}
	}
	dir, err := resolveDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, dir: dir, log: cfg.Logger.Named("plugins"), transports: map[string]*Transport{}}, nil
}

// resolveDir picks the plugin directory.
func resolveDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("FERRY_PLUGIN_DIR")
	}
	if dir == "" {
		if exe, err := os.Executable(); err == nil {
			beside := filepath.Join(filepath.Dir(exe), "plugins")
			if st, err := os.Stat(beside); err == nil && st.IsDir() {
				dir = beside
			}
		}
	}
	if dir == "" {
		dir = filepath.Join("bin", "plugins")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("plugin directory %s: %w", dir, err)
	}
	return abs, nil
}

// Dir is the directory plugins are found in.
func (m *Manager) Dir() string { return m.dir }

// path is plugin name's executable: Config.Paths[name], else Dir/name.
func (m *Manager) path(name string) string {
	if p := m.cfg.Paths[name]; p != "" {
		return p
	}
	return filepath.Join(m.dir, name)
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("%q is not a plugin name (a file name in the plugin directory)", name)
	}
	return nil
}

// Transport returns the named plugin's transport, starting the plugin if it
// is not running yet. The returned Transport survives crashes: the Manager
// restarts the plugin and re-applies Configure; links and listeners opened
// before the crash fail with errors and must be opened again (Subscribe).
func (m *Manager) Transport(ctx context.Context, name string) (*Transport, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("plugin %s: manager closed", name)
	}
	t := m.transports[name]
	if t != nil && t.down() {
		// It gave up earlier; a new request starts it afresh.
		delete(m.transports, name)
		t = nil
	}
	if t == nil {
		t = &Transport{m: m, name: name, path: m.path(name), ready: make(chan struct{}), subs: map[int]func(Event){}}
		m.transports[name] = t
		m.mu.Unlock()
		t.startErr = t.firstStart(ctx)
		close(t.ready)
		if t.startErr != nil {
			m.mu.Lock()
			if m.transports[name] == t {
				delete(m.transports, name)
			}
			m.mu.Unlock()
		}
	} else {
		m.mu.Unlock()
	}
	select {
	case <-t.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("plugin %s: %w", name, ctx.Err())
	}
	if t.startErr != nil {
		return nil, t.startErr
	}
	return t, nil
}

func (m *Manager) launchConfig(name, path string) LaunchConfig {
	return LaunchConfig{
		Path:         path,
		Name:         name,
		Logger:       m.cfg.Logger,
		SHA256:       m.cfg.Pins[name],
		StartTimeout: m.cfg.StartTimeout,
	}
}

// Info describes an installed plugin.
type Info struct {
	Name          string
	Version       string
	AddressType   string
	ProtocolMajor int
	ProtocolMinor int
	Path          string
	SHA256        string
	Pinned        bool
	Running       bool
	Pid           int
	// Error says why the plugin could not be queried, if it could not.
	Error string
}

// List describes every plugin in the directory. Plugins that are not
// running are started briefly to ask their version.
func (m *Manager) List(ctx context.Context) ([]Info, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("list plugins in %s: %w", m.dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		names = append(names, e.Name())
	}
	for name := range m.cfg.Paths {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out []Info
	for _, name := range names {
		info := Info{Name: name, Path: m.path(name), ProtocolMajor: transport.ProtocolMajor}
		_, info.Pinned = m.cfg.Pins[name]
		m.mu.Lock()
		t := m.transports[name]
		m.mu.Unlock()
		var c *Client
		if t != nil {
			c = t.client()
		}
		if c != nil {
			info.Running, info.Pid = true, c.Pid()
		} else {
			c, err = Launch(ctx, m.launchConfig(name, info.Path))
			if err != nil {
				info.Error = err.Error()
				if sum, err := fileSHA256(info.Path); err == nil {
					info.SHA256 = sum
				}
				out = append(out, info)
				continue
			}
		}
		ti := c.Remote().Info()
		info.Version, info.AddressType = ti.Version, ti.AddressType
		info.ProtocolMinor = c.Remote().ProtocolMinor()
		info.SHA256 = c.SHA256()
		if !info.Running {
			c.Kill()
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Close stops every plugin the Manager started.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ts := m.transports
	m.transports = map[string]*Transport{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Go(func() { t.Close() })
	}
	wg.Wait()
	return nil
}

// EventKind says what happened to a plugin process.
type EventKind int

const (
	// Crashed: the process ended unexpectedly; its links and listeners are
	// gone. A restart follows unless GaveUp does.
	Crashed EventKind = iota + 1
	// Restarted: a new process serves the transport (settings re-applied);
	// re-open listeners and re-dial connections.
	Restarted
	// GaveUp: restarts kept failing; the transport stays down.
	GaveUp
)

func (k EventKind) String() string {
	switch k {
	case Crashed:
		return "crashed"
	case Restarted:
		return "restarted"
	case GaveUp:
		return "gave up"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a change in a plugin process.
type Event struct {
	Kind   EventKind
	Plugin string
	// Err is why it crashed or why restarting failed.
	Err error
	// Stderr holds the plugin's last stderr lines (Crashed, GaveUp).
	Stderr []string
	// Pid is the process id (the new one for Restarted).
	Pid int
}

// Transport is a supervised plugin's transport.Transport. It delegates to
// the current plugin process; while the plugin is down, calls fail with an
// error matching transport.ErrUnavailable.
type Transport struct {
	m          *Manager
	name, path string
	ready      chan struct{}
	startErr   error

	mu       sync.Mutex
	cur      *Client
	info     transport.Info
	settings map[string]string
	subs     map[int]func(Event)
	nextSub  int
	closed   bool
	gaveUp   error
	stop     chan struct{}
	superv   sync.WaitGroup
}

var _ transport.Transport = (*Transport)(nil)

func (t *Transport) firstStart(ctx context.Context) error {
	c, err := Launch(ctx, t.m.launchConfig(t.name, t.path))
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.cur, t.info, t.stop = c, c.Remote().Info(), make(chan struct{})
	t.mu.Unlock()
	t.m.log.Debug("plugin started", "plugin", t.name, "pid", c.Pid(), "version", t.info.Version)
	t.superv.Add(1)
	go t.supervise(c)
	return nil
}

// Name is the plugin's name.
func (t *Transport) Name() string { return t.name }

func (t *Transport) down() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gaveUp != nil
}

func (t *Transport) client() *Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// Client is the current plugin process, or nil while it is down.
func (t *Transport) Client() *Client { return t.client() }

// Subscribe calls fn for every event of this plugin, in order, from the
// supervising goroutine: fn must not block. cancel stops the calls.
func (t *Transport) Subscribe(fn func(Event)) (cancel func()) {
	t.mu.Lock()
	id := t.nextSub
	t.nextSub++
	t.subs[id] = fn
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.subs, id)
		t.mu.Unlock()
	}
}

func (t *Transport) emit(e Event) {
	e.Plugin = t.name
	t.mu.Lock()
	fns := make([]func(Event), 0, len(t.subs))
	for _, fn := range t.subs {
		fns = append(fns, fn)
	}
	t.mu.Unlock()
	for _, fn := range fns {
		fn(e)
	}
}

// supervise waits for the process to end and, unless the end was asked
// for, restarts it with backoff.
func (t *Transport) supervise(c *Client) {
	defer t.superv.Done()
	backoff := t.m.cfg.RestartBackoff
	inRow := 0
	started := time.Now()
	for {
		select {
		case <-c.Done():
		case <-t.stop:
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return
		}
		t.cur = nil
		t.mu.Unlock()
		stderr := c.Stderr()
		err := fmt.Errorf("plugin %s (pid %d) exited unexpectedly after %s", t.name, c.Pid(), time.Since(started).Round(time.Millisecond))
		t.m.log.Error("plugin crashed", "plugin", t.name, "pid", c.Pid(), "stderr", strings.Join(stderr, "\n"))
		c.Kill() // release go-plugin's resources
		t.emit(Event{Kind: Crashed, Err: err, Stderr: stderr, Pid: c.Pid()})
		if time.Since(started) >= t.m.cfg.StableAfter {
			backoff, inRow = t.m.cfg.RestartBackoff, 0
		}
		for {
			inRow++
			if inRow > t.m.cfg.MaxRestarts {
				gave := fmt.Errorf("plugin %s: gave up after %d restarts in a row: %w", t.name, t.m.cfg.MaxRestarts, err)
				t.mu.Lock()
				t.gaveUp = gave
				t.mu.Unlock()
				t.m.log.Error("plugin keeps crashing; giving up", "plugin", t.name, "error", err)
				t.emit(Event{Kind: GaveUp, Err: gave, Stderr: stderr})
				return
			}
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-t.stop:
				timer.Stop()
				return
			}
			backoff = min(2*backoff, t.m.cfg.MaxRestartBackoff)
			nc, lerr := t.restart()
			if lerr != nil {
				err = lerr
				t.m.log.Warn("plugin restart failed", "plugin", t.name, "error", lerr)
				continue
			}
			c, started = nc, time.Now()
			t.m.log.Info("plugin restarted", "plugin", t.name, "pid", c.Pid())
			t.emit(Event{Kind: Restarted, Pid: c.Pid()})
			break
		}
	}
}

// restart launches a new process and re-applies the settings.
func (t *Transport) restart() (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.m.cfg.StartTimeout+5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-t.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := Launch(ctx, t.m.launchConfig(t.name, t.path))
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	settings := t.settings
	t.mu.Unlock()
	if settings != nil {
		if err := c.Transport().Configure(ctx, settings); err != nil {
			c.Kill()
			return nil, fmt.Errorf("plugin %s: re-apply settings after restart: %w", t.name, err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Kill()
		return nil, fmt.Errorf("plugin %s: %w", t.name, transport.ErrClosed)
	}
	t.cur, t.info = c, c.Remote().Info()
	return c, nil
}

// current is the running client, or an error saying why there is none.
func (t *Transport) current(what string) (transport.Transport, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return nil, fmt.Errorf("%s: plugin %s: %w", what, t.name, transport.ErrClosed)
	case t.gaveUp != nil:
		return nil, fmt.Errorf("%s: %w (%w)", what, t.gaveUp, transport.ErrUnavailable)
	case t.cur == nil || t.cur.Exited():
		return nil, fmt.Errorf("%s: plugin %s crashed and is restarting; retry shortly: %w", what, t.name, transport.ErrUnavailable)
	}
	return t.cur.Transport(), nil
}

// Info implements transport.Transport with the Info the plugin reported.
func (t *Transport) Info() transport.Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.info
}

// Configure implements transport.Transport; the settings are re-applied
// after every restart.
func (t *Transport) Configure(ctx context.Context, settings map[string]string) error {
	tr, err := t.current("configure")
	if err != nil {
		return err
	}
	if err := tr.Configure(ctx, settings); err != nil {
		return fmt.Errorf("plugin %s: %w", t.name, err)
	}
	kept := make(map[string]string, len(settings))
	for k, v := range settings {
		kept[k] = v
	}
	t.mu.Lock()
	t.settings = kept
	t.mu.Unlock()
	return nil
}

// Listen implements transport.Transport.
func (t *Transport) Listen(ctx context.Context, address string) (transport.Listener, error) {
	tr, err := t.current("listen " + address)
	if err != nil {
		return nil, err
	}
	l, err := tr.Listen(ctx, address)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", t.name, err)
	}
	return l, nil
}

// Dial implements transport.Transport.
func (t *Transport) Dial(ctx context.Context, address string) (transport.Link, error) {
	tr, err := t.current("dial " + address)
	if err != nil {
		return nil, err
	}
	l, err := tr.Dial(ctx, address)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", t.name, err)
	}
	return l, nil
}

// Close stops supervision and the plugin process.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	c := t.cur
	t.cur = nil
	stop := t.stop
	t.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	t.superv.Wait()
	if c != nil {
		c.Kill()
	}
	t.m.mu.Lock()
	if t.m.transports[t.name] == t {
		delete(t.m.transports, t.name)
	}
	t.m.mu.Unlock()
	return nil
}
