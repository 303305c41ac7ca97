package plugins

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Config configures a Manager. Every field is optional.
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
	// StableAfter of starting, before the Manager reports the plugin
	// degraded and tries only every DegradedBackoff (default 5).
	MaxRestarts int
	// DegradedBackoff is the delay between restart attempts of a degraded
	// plugin (default 1m). The Manager never gives up for good: a plugin
	// that was fixed (or whose cause went away) comes back on its own.
	DegradedBackoff time.Duration
	// StableAfter is how long a plugin must run for a crash to count as a
	// new series rather than one more in a row (default 30s).
	StableAfter time.Duration
	// DataStallTimeout ends (and so restarts) a plugin whose data channel
	// accepts no bytes for this long (default 15s; LaunchConfig).
	DataStallTimeout time.Duration
}

// validate fills in defaults and checks the pins.
func (cfg *Config) validate() error {
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
	if cfg.DegradedBackoff <= 0 {
		cfg.DegradedBackoff = time.Minute
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = 30 * time.Second
	}
	for name, sum := range cfg.Pins {
		if err := validName(name); err != nil {
			return fmt.Errorf("plugin pin: %w", err)
		}
		if len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" {
			return fmt.Errorf("plugin pin for %s: %q is not a hex SHA-256 (64 hex digits)", name, sum)
		}
	}
	return nil
}

// Manager is the plugin catalog: it finds plugins by kind and name and
// runs each under supervision. It is the only thing that starts plugin
// processes for a node.
type Manager struct {
	cfg Config
	dir string
	log hclog.Logger

	mu     sync.Mutex // guards procs and closed; never held while a plugin starts
	procs  map[key]*Supervised
	closed bool
}

type key struct {
	kind Kind
	name string
}

// NewManager returns a Manager for the plugins in cfg.Dir (or the default
// directory). Plugins start on first use.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := resolveDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, dir: dir, log: cfg.Logger.Named("plugins"), procs: map[key]*Supervised{}}, nil
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

// get returns the supervised plugin (kind, name), starting it if it is not
// running. One start is in flight per plugin: the first caller starts it
// without holding m.mu, later callers wait for that start (or their ctx).
func (m *Manager) get(ctx context.Context, kind Kind, name string) (*Supervised, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	k := key{kind, name}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("%s plugin %s: manager closed", kind, name)
	}
	s := m.procs[k]
	if s == nil {
		s = &Supervised{m: m, kind: kind, name: name, path: m.path(name), ready: make(chan struct{}), subs: map[int]func(Event){}}
		s.tr, s.pt = &Transport{s}, &Portal{s}
		m.procs[k] = s
		m.mu.Unlock()
		s.startErr = s.firstStart(ctx)
		close(s.ready)
		if s.startErr != nil {
			m.mu.Lock()
			if m.procs[k] == s {
				delete(m.procs, k)
			}
			m.mu.Unlock()
		}
	} else {
		m.mu.Unlock()
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%s plugin %s: waiting for its start: %w", kind, name, ctx.Err())
	}
	if s.startErr != nil {
		return nil, s.startErr
	}
	return s, nil
}

// Transport returns the named transport plugin, starting it if it is not
// running yet. The returned Transport survives crashes: the Manager
// restarts the plugin and re-applies Configure; links and listeners opened
// before the crash fail with errors and must be opened again (Subscribe).
func (m *Manager) Transport(ctx context.Context, name string) (*Transport, error) {
	s, err := m.get(ctx, KindTransport, name)
	if err != nil {
		return nil, err
	}
	return s.tr, nil
}

// Portal returns the named portal plugin, starting it if it is not running
// yet. Like Transport it survives crashes; listeners and streams of the
// crashed process fail and are opened again by their owners.
func (m *Manager) Portal(ctx context.Context, name string) (*Portal, error) {
	s, err := m.get(ctx, KindPortal, name)
	if err != nil {
		return nil, err
	}
	return s.pt, nil
}

func (m *Manager) launchConfig(kind Kind, name, path string) LaunchConfig {
	return LaunchConfig{
		Path:         path,
		Name:         name,
		Kind:         kind,
		Logger:       m.cfg.Logger,
		SHA256:       m.cfg.Pins[name],
		StartTimeout: m.cfg.StartTimeout,

		DataStallTimeout: m.cfg.DataStallTimeout,
	}
}

// State is where a supervised plugin is in its life.
type State string

// Plugin states.
const (
	// StateStarting: the first start is in flight.
	StateStarting State = "starting"
	// StateRunning: a process serves the plugin.
	StateRunning State = "running"
	// StateRestarting: the process ended unexpectedly; a restart is pending.
	StateRestarting State = "restarting"
	// StateDegraded: restarts kept failing; the Manager still tries, every
	// Config.DegradedBackoff. Whatever the plugin carried is down.
	StateDegraded State = "degraded"
	// StateStopped: closed on purpose.
	StateStopped State = "stopped"
)

// Status describes a supervised plugin for status output. A node shows a
// plugin whose State is not StateRunning as DEGRADED (or down), with LastError.
type Status struct {
	Kind  Kind
	Name  string
	State State
	// Pid is the current process id (0 while none runs).
	Pid int
	// Restarts counts successful restarts since the first start.
	Restarts int
	// Failures counts crashes and failed restarts in the current series.
	Failures int
	// LastError says why the plugin last crashed or failed to restart.
	LastError string
	// Since is when State last changed.
	Since time.Time
	// NextAttempt is when the next restart is tried (StateRestarting, StateDegraded).
	NextAttempt time.Time
}

// Statuses returns the state of every plugin the Manager supervises,
// sorted by kind and name. It never waits for a plugin to start.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	ss := make([]*Supervised, 0, len(m.procs))
	for _, s := range m.procs {
		ss = append(ss, s)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.Status())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// StatusOf returns the state of plugin (kind, name), if the Manager
// supervises it. It never waits for a plugin to start.
func (m *Manager) StatusOf(kind Kind, name string) (Status, bool) {
	m.mu.Lock()
	s := m.procs[key{kind, name}]
	m.mu.Unlock()
	if s == nil {
		return Status{}, false
	}
	return s.Status(), true
}

// Info describes an installed plugin.
type Info struct {
	Kind          Kind
	Name          string
	Version       string
	AddressType   string // transports
	ProtocolMajor int
	ProtocolMinor int
	Capabilities  []string
	Path          string
	SHA256        string
	Pinned        bool
	Running       bool
	Pid           int
	// Error says why the plugin could not be queried, if it could not.
	Error string
}

// running returns a running client for the binary name, of any kind.
func (m *Manager) running(name string) *Client {
	m.mu.Lock()
	var ss []*Supervised
	for k, s := range m.procs {
		if k.name == name {
			ss = append(ss, s)
		}
	}
	m.mu.Unlock()
	for _, s := range ss {
		if c := s.client(); c != nil {
			return c
		}
	}
	return nil
}

// List describes every plugin in the directory. A plugin that is not
// running is started briefly and asked the one base Hello, which says its
// kind.
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
	out := make([]Info, 0, len(names))
	for _, name := range names {
		info := Info{Name: name, Path: m.path(name), ProtocolMajor: ProtocolMajor}
		_, info.Pinned = m.cfg.Pins[name]
		c := m.running(name)
		if c != nil {
			info.Running, info.Pid = true, c.Pid()
		} else {
			c, err = Launch(ctx, m.launchConfig("", name, info.Path))
			if err != nil {
				info.Error = err.Error()
				if sum, err := fileSHA256(info.Path); err == nil {
					info.SHA256 = sum
				}
				out = append(out, info)
				continue
			}
		}
		info.Kind, info.Version = c.Kind(), c.Version()
		info.ProtocolMinor, info.Capabilities = c.ProtocolMinor(), c.Capabilities()
		if r := c.Remote(); r != nil {
			info.AddressType = r.Info().AddressType
		}
		info.SHA256 = c.SHA256()
		if !info.Running {
			c.Kill()
		}
		out = append(out, info)
	}
	return out, nil
}

// Close stops every plugin the Manager started.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ss := m.procs
	m.procs = map[key]*Supervised{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			<-s.ready
			s.Close()
		})
	}
	wg.Wait()
	return nil
}

// EventKind says what happened to a plugin process.
type EventKind int

const (
	// Crashed: the process ended unexpectedly; its links, listeners and
	// streams are gone. A restart follows.
	Crashed EventKind = iota + 1
	// Restarted: a new process serves the plugin (settings re-applied);
	// re-open listeners and re-dial connections.
	Restarted
	// Degraded: restarts kept failing; the Manager keeps trying every
	// Config.DegradedBackoff, and Restarted follows when one works.
	Degraded
)

// GaveUp is the old name of Degraded: the Manager no longer gives up.
const GaveUp = Degraded

func (k EventKind) String() string {
	switch k {
	case Crashed:
		return "crashed"
	case Restarted:
		return "restarted"
	case Degraded:
		return "degraded"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a change in a plugin process.
type Event struct {
	Kind   EventKind
	Plugin string
	// PluginKind is the plugin's kind.
	PluginKind Kind
	// Err is why it crashed or why restarting failed.
	Err error
	// Stderr holds the plugin's last stderr lines (Crashed, Degraded).
	Stderr []string
	// Pid is the process id (the new one for Restarted).
	Pid int
}

// Supervised is one plugin under the Manager's supervision, whatever its
// kind. Transport and Portal give it the kind's interface.
type Supervised struct {
	m          *Manager
	kind       Kind
	name, path string
	ready      chan struct{}
	startErr   error

	mu       sync.Mutex
	cur      *Client
	settings map[string]string
	subs     map[int]func(Event)
	nextSub  int
	closed   bool
	stop     chan struct{}
	superv   sync.WaitGroup
	status   Status
	tr       *Transport // the kind's face, one per Supervised
	pt       *Portal
}

func (s *Supervised) firstStart(ctx context.Context) error {
	s.mu.Lock()
	s.status = Status{Kind: s.kind, Name: s.name, State: StateStarting, Since: time.Now()}
	s.mu.Unlock()
	c, err := Launch(ctx, s.m.launchConfig(s.kind, s.name, s.path))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cur, s.stop = c, make(chan struct{})
	s.status.State, s.status.Pid, s.status.Since = StateRunning, c.Pid(), time.Now()
	s.mu.Unlock()
	s.m.log.Debug("plugin started", "kind", s.kind, "plugin", s.name, "pid", c.Pid(), "version", c.Version())
	s.superv.Add(1)
	go s.supervise(c)
	return nil
}

// Name is the plugin's name.
func (s *Supervised) Name() string { return s.name }

// Kind is the plugin's kind.
func (s *Supervised) Kind() Kind { return s.kind }

// Status describes the plugin's state now.
func (s *Supervised) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Supervised) client() *Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Client is the current plugin process, or nil while it is down.
func (s *Supervised) Client() *Client { return s.client() }

// Subscribe calls fn for every event of this plugin, in order, from the
// supervising goroutine: fn must not block. cancel stops the calls.
func (s *Supervised) Subscribe(fn func(Event)) (cancel func()) {
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

func (s *Supervised) emit(e Event) {
	e.Plugin, e.PluginKind = s.name, s.kind
	s.mu.Lock()
	fns := make([]func(Event), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(e)
	}
}

func (s *Supervised) setState(st State, err error, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status.State != st {
		s.status.Since = time.Now()
	}
	s.status.State, s.status.NextAttempt = st, next
	if err != nil {
		s.status.LastError = err.Error()
	}
	if st != StateRunning {
		s.status.Pid = 0
	}
}

// supervise waits for the process to end and, unless the end was asked
// for, restarts it: capped exponential backoff, then, after MaxRestarts
// failures in a row, every DegradedBackoff, for as long as the Manager
// runs. It is the one place a crash is logged and announced.
func (s *Supervised) supervise(c *Client) {
	defer s.superv.Done()
	cfg := s.m.cfg
	backoff := cfg.RestartBackoff
	inRow := 0
	started := time.Now()
	for {
		select {
		case <-c.Done():
		case <-s.stop:
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.cur = nil
		s.mu.Unlock()
		stderr := c.Stderr()
		err := fmt.Errorf("%s plugin %s (pid %d) exited unexpectedly after %s", s.kind, s.name, c.Pid(), time.Since(started).Round(time.Millisecond))
		s.m.log.Error("plugin crashed", "kind", s.kind, "plugin", s.name, "pid", c.Pid(), "stderr", strings.Join(stderr, "\n"))
		c.Kill() // release go-plugin's resources
		if time.Since(started) >= cfg.StableAfter {
			backoff, inRow = cfg.RestartBackoff, 0
		}
		s.setState(StateRestarting, err, time.Now().Add(backoff))
		s.emit(Event{Kind: Crashed, Err: err, Stderr: stderr, Pid: c.Pid()})
		for {
			inRow++
			delay := backoff
			if inRow > cfg.MaxRestarts {
				delay = cfg.DegradedBackoff
				if inRow == cfg.MaxRestarts+1 {
					s.m.log.Error("plugin keeps crashing; it stays down and is retried", "kind", s.kind, "plugin", s.name, "every", cfg.DegradedBackoff, "error", err)
					s.setState(StateDegraded, err, time.Now().Add(delay))
					s.emit(Event{Kind: Degraded, Err: err, Stderr: stderr})
				}
			}
			s.mu.Lock()
			s.status.Failures = inRow
			s.status.NextAttempt = time.Now().Add(delay)
			s.mu.Unlock()
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-s.stop:
				timer.Stop()
				return
			}
			backoff = min(2*backoff, cfg.MaxRestartBackoff)
			nc, lerr := s.restart()
			if lerr != nil {
				if errors.Is(lerr, errClosed) {
					return
				}
				err = lerr
				s.setState(s.Status().State, lerr, time.Time{})
				s.m.log.Warn("plugin restart failed", "kind", s.kind, "plugin", s.name, "error", lerr)
				continue
			}
			c, started = nc, time.Now()
			s.mu.Lock()
			s.status.Restarts++
			s.status.Pid = c.Pid()
			s.mu.Unlock()
			s.setState(StateRunning, nil, time.Time{})
			s.m.log.Info("plugin restarted", "kind", s.kind, "plugin", s.name, "pid", c.Pid())
			s.emit(Event{Kind: Restarted, Pid: c.Pid()})
			break
		}
	}
}

var errClosed = errors.New("plugin closed")

// restart launches a new process and re-applies the settings.
func (s *Supervised) restart() (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.StartTimeout+5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := Launch(ctx, s.m.launchConfig(s.kind, s.name, s.path))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	settings := s.settings
	s.mu.Unlock()
	if settings != nil && c.Transport() != nil {
		if err := c.Transport().Configure(ctx, settings); err != nil {
			c.Kill()
			return nil, fmt.Errorf("plugin %s: re-apply settings after restart: %w", s.name, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Kill()
		return nil, errClosed
	}
	s.cur = c
	return c, nil
}

// current is the running client, or an error saying why there is none.
func (s *Supervised) current(what string, unavailable error) (*Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, fmt.Errorf("%s: %s plugin %s: closed", what, s.kind, s.name)
	case s.status.State == StateDegraded:
		return nil, fmt.Errorf("%s: %s plugin %s is degraded: restarts keep failing (last: %s); retried every %s: %w",
			what, s.kind, s.name, s.status.LastError, s.m.cfg.DegradedBackoff, unavailable)
	case s.cur == nil || s.cur.Exited():
		return nil, fmt.Errorf("%s: %s plugin %s crashed and is restarting; retry shortly: %w", what, s.kind, s.name, unavailable)
	}
	return s.cur, nil
}

// Close stops supervision and the plugin process.
func (s *Supervised) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c := s.cur
	s.cur = nil
	stop := s.stop
	s.status.State, s.status.Pid, s.status.Since = StateStopped, 0, time.Now()
	s.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	s.superv.Wait()
	if c != nil {
		c.Kill()
	}
	k := key{s.kind, s.name}
	s.m.mu.Lock()
	if s.m.procs[k] == s {
		delete(s.m.procs, k)
	}
	s.m.mu.Unlock()
	return nil
}

// Kill ends the current process with SIGKILL, as a crash would (for tests
// and chaos drills); supervision restarts it.
func (s *Supervised) Kill() error {
	c := s.client()
	if c == nil {
		return fmt.Errorf("%s plugin %s: no process running", s.kind, s.name)
	}
	p, err := os.FindProcess(c.Pid())
	if err != nil {
		return err
	}
	defer p.Release() // FindProcess holds a pidfd until released
	return p.Kill()
}

// Transport is a supervised transport plugin's transport.Transport. It
// delegates to the current plugin process; while the plugin is down, calls
// fail with an error matching transport.ErrUnavailable.
type Transport struct{ *Supervised }

var _ transport.Transport = (*Transport)(nil)

func (t *Transport) current(what string) (transport.Transport, error) {
	c, err := t.Supervised.current(what, transport.ErrUnavailable)
	if err != nil {
		return nil, err
	}
	return c.Transport(), nil
}

// Info implements transport.Transport with the Info the plugin reported.
func (t *Transport) Info() transport.Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil || t.cur.Remote() == nil {
		return transport.Info{Name: t.name}
	}
	return t.cur.Remote().Info()
}

// MaxMessageSize implements transport.MaxMessageSizer: the largest packet
// the current plugin process takes as configured (0 while it is down).
func (t *Transport) MaxMessageSize() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil || t.cur.Remote() == nil {
		return 0
	}
	return t.cur.Remote().MaxMessageSize()
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

// Portal is a supervised portal plugin's portal.Portal. It delegates to
// the current plugin process; while the plugin is down, calls fail with an
// error matching portal.ErrUnavailable (inlets then listen again).
type Portal struct{ *Supervised }

var _ portal.Portal = (*Portal)(nil)

// Info implements portal.Portal with the Info the plugin reported.
func (p *Portal) Info() portal.Info {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || p.cur.Portal() == nil {
		return portal.Info{Name: p.name}
	}
	return p.cur.Portal().Info()
}

// Listen implements portal.Portal.
func (p *Portal) Listen(ctx context.Context, address string) (portal.Listener, error) {
	c, err := p.current("listen "+address, portal.ErrUnavailable)
	if err != nil {
		return nil, err
	}
	return c.Portal().Listen(ctx, address)
}

// Dial implements portal.Portal.
func (p *Portal) Dial(ctx context.Context, address string) (portal.Stream, error) {
	c, err := p.current("dial "+address, portal.ErrUnavailable)
	if err != nil {
		return nil, err
	}
	return c.Portal().Dial(ctx, address)
}

// Pid is the current process id, 0 while none runs.
func (p *Portal) Pid() int { return p.Status().Pid }
