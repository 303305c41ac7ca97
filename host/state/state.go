// Package state keeps the ferry command's state under $FERRY_HOME (default
// ~/.ferry): per node its configuration, log file, pid file and control
// socket.
//
// Layout:
//
//	$FERRY_HOME/               0700 when ferry creates it; an existing
//	                           directory keeps its mode
//	  locks/NAME.lock          one flock per node name; never removed, so two
//	                           commands can never hold "the same" lock on
//	                           different inodes
//	  nodes/NAME/              0700
//	    config.json            written atomically (temp file, fsync, rename)
//	    node.pid               the running process, written by the node itself
//	    node.log               stdout/stderr of the background process
//	    api.sock               control API socket, 0600
//
// Nothing in here says whether a node is running: liveness is measured by
// asking the control socket (see the api package), never read from a file.
package state

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNotFound is returned for a node that has no state.
var ErrNotFound = errors.New("node does not exist")

// ErrExists is returned when creating a node whose name is taken.
var ErrExists = errors.New("node already exists")

// MaxNameLen bounds node names; it keeps socket paths under the kernel's
// 108-byte limit for reasonable $FERRY_HOME values.
const MaxNameLen = 40

// maxSocketPath is sun_path's size minus the terminating NUL.
const maxSocketPath = 107

// Home is a $FERRY_HOME directory.
type Home struct {
	Dir string
}

// DefaultDir returns $FERRY_HOME, or ~/.ferry.
func DefaultDir() (string, error) {
	if d := os.Getenv("FERRY_HOME"); d != "" {
		return filepath.Abs(d)
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory for ~/.ferry (set FERRY_HOME instead): %w", err)
	}
	return filepath.Join(h, ".ferry"), nil
}

// Open returns the home at dir (DefaultDir when empty). A home that does
// not exist is created with mode 0700; an existing one is used as it is,
// never re-moded (it may be a shared directory with a sticky bit): what
// must be private, each node's directory and control socket, is made 0700
// and 0600 by itself. Open writes nothing when the home and its
// subdirectories exist, so read-only commands work on a read-only home.
func Open(dir string) (*Home, error) {
	if dir == "" {
		d, err := DefaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("ferry home %s: %w", dir, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, "nodes"), filepath.Join(abs, "locks")} {
		st, err := os.Stat(d)
		if err == nil {
			if !st.IsDir() {
				return nil, fmt.Errorf("ferry home: %s is not a directory", d)
			}
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ferry home %s: %w", d, err)
		}
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			if d != abs && isReadOnly(err) {
				// A read-only home without this subdirectory has no
				// nodes; commands that write say so when they try.
				continue
			}
			if d == abs {
				// Create missing parents too (~/.config/ferry); only the
				// home itself gets 0700, parents the usual mode.
				err = os.MkdirAll(filepath.Dir(d), 0o755)
				if err == nil {
					err = os.Mkdir(d, 0o700)
				}
				if err == nil || errors.Is(err, os.ErrExist) {
					continue
				}
			}
			return nil, fmt.Errorf("create ferry home: %w", err)
		}
	}
	return &Home{Dir: abs}, nil
}

func isReadOnly(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// ValidName checks a node name: 1 to MaxNameLen characters, a-z, 0-9, '-'
// and '_', starting with a letter or digit.
func ValidName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("node name %q is longer than %d characters", name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '-' || c == '_'):
		default:
			return fmt.Errorf("node name %q: use lower-case letters, digits, '-' and '_' (starting with a letter or digit)", name)
		}
	}
	return nil
}

// RandomName returns a fresh random node name.
func RandomName() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms
	return hex.EncodeToString(b[:])
}

// NodeDir is the directory of node name.
func (h *Home) NodeDir(name string) string { return filepath.Join(h.Dir, "nodes", name) }

// ConfigPath is the node's configuration file.
func (h *Home) ConfigPath(name string) string { return filepath.Join(h.NodeDir(name), "config.json") }

// LogPath is the node's log file.
func (h *Home) LogPath(name string) string { return filepath.Join(h.NodeDir(name), "node.log") }

// PidPath is the node's pid file.
func (h *Home) PidPath(name string) string { return filepath.Join(h.NodeDir(name), "node.pid") }

// SocketPath is the node's control socket.
func (h *Home) SocketPath(name string) string { return filepath.Join(h.NodeDir(name), "api.sock") }

// CheckSocketPath reports a clear error when the socket path would not fit
// in a sockaddr_un.
func (h *Home) CheckSocketPath(name string) error {
	p := h.SocketPath(name)
	if len(p) > maxSocketPath {
		return fmt.Errorf("control socket path %s is %d bytes, the limit is %d; use a shorter FERRY_HOME or node name", p, len(p), maxSocketPath)
	}
	return nil
}

// Service is a service started on a node, kept so a restart starts it again.
type Service struct {
	Type    string `json:"type"`
	Address string `json:"address"`
	// Authorized: see api.StartServiceRequest.
	Authorized []string `json:"authorized,omitempty"`
	// MaxRegistrations caps a relay service's names (service start relay
	// --max-registrations); 0: the default, relays.DefaultMaxRegistrations.
	MaxRegistrations int `json:"max_registrations,omitempty"`
}

// Upper bounds of the caps a user may set (--max-sessions, max_sessions,
// --max-registrations, max_registrations). Each session holds a TCP
// connection, a worker and buffers, and each registration a forwarder, so
// a cap far beyond what one node can hold is a mistake, not a setting.
const (
	MaxSessionsLimit      = 65536
	MaxRegistrationsLimit = 65536
)

// CheckCap reports a cap (named what, such as "--max-sessions") outside
// 1..limit; 0 means unset (the default) and is accepted.
func CheckCap(what string, n, limit int) error {
	if n < 0 || n > limit {
		return fmt.Errorf("%s %d: want a number from 1 to %d (0 or unset: the default)", what, n, limit)
	}
	return nil
}

// Relay is a relay registration: forward_to_Name at the relay service
// reached by At (route text, may start with /node/NAME).
type Relay struct {
	Name string `json:"name"`
	At   string `json:"at"`
	// Insecure: registered without a secure channel (relay create
	// --insecure); the name is owned through the node's relay secret only.
	Insecure bool `json:"insecure,omitempty"`
}

// legacyTransport is the transport of listener and connection entries
// written before they named one: only TCP existed then.
const legacyTransport = "tcp"

// Listener is a listener of any transport: Address is in that transport's
// own syntax (a :0 port gets a new port at every start).
type Listener struct {
	Transport string `json:"transport"`
	Address   string `json:"address"`
	// Allow lists the local addresses network input may reach; empty:
	// the node's network services.
	Allow []string `json:"allow,omitempty"`
	// Settings configure the transport plugin.
	Settings map[string]string `json:"settings,omitempty"`
	// Default marks the node's own listener, the one /node/NAME prefers.
	Default bool `json:"default,omitempty"`
}

// UnmarshalJSON also reads the old form, a bare TCP address string.
func (l *Listener) UnmarshalJSON(b []byte) error {
	var addr string
	if json.Unmarshal(b, &addr) == nil {
		*l = Listener{Transport: legacyTransport, Address: addr}
		return nil
	}
	type plain Listener
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*l = Listener(p)
	return nil
}

// Connection is an outgoing connection of any transport: its worker id
// (the /worker/ID hop routes use) and the address it dials.
type Connection struct {
	ID        string            `json:"id"`
	Transport string            `json:"transport"`
	Address   string            `json:"address"`
	Allow     []string          `json:"allow,omitempty"`
	Settings  map[string]string `json:"settings,omitempty"`
}

// Inlet is a TCP portal inlet: it listens at Address (the bound address, so
// a restart keeps the port) and opens sessions along Route.
type Inlet struct {
	Address string `json:"address"`
	Route   string `json:"route"`
	Secure  bool   `json:"secure,omitempty"` // sessions inside a secure channel
	// SessionTimeout is the inlet's session timeout as given ("30s");
	// empty: the default.
	SessionTimeout string `json:"session_timeout,omitempty"`
	// MaxSessions caps the inlet's open sessions; 0: the default,
	// portals.DefaultMaxSessions.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// SecureChannel is a secure channel created with secure-channel create,
// restored at every start under the same Address (route text, /worker/<id>)
// so routes through it keep working.
type SecureChannel struct {
	Address string `json:"address"`
	// Route leads to the far node's listener, /node/NAME hops unresolved
	// (they are resolved again before every open).
	Route      string   `json:"route"`
	Authorized []string `json:"authorized,omitempty"`
}

// Outlet is a TCP portal outlet: a worker at Address (route text) dialling
// Target for every session.
type Outlet struct {
	Address string `json:"address"`
	Target  string `json:"target"`
	Secure  bool   `json:"secure,omitempty"` // sessions only through a secure channel
	// MaxSessions caps the outlet's open sessions; 0: the default,
	// portals.DefaultMaxSessions.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// NodeConfig is what a node is started from. The CLI is its only writer and
// writes it under the node's lock.
type NodeConfig struct {
	Name string `json:"name"`
	// LegacyTCPListener is the default listener of configs written before
	// Listeners named their transport; Load moves it into Listeners.
	LegacyTCPListener string `json:"tcp_listener_address,omitempty"`
	// Listeners are opened at every start, in order: those of node create
	// (the first one the node's default) and of listener create. None: the
	// node opens no socket at all.
	Listeners []Listener `json:"listeners,omitempty"`
	// Connections created with `connection create`, restored at every
	// start with the same worker id so routes naming it keep working.
	Connections []Connection `json:"connections,omitempty"`
	// Services started with `service start`, beyond the defaults.
	Services []Service `json:"services,omitempty"`
	// Relays this node registered with `relay create --to THIS`, restored
	// (re-registered in the background) at every start.
	Relays []Relay `json:"relays,omitempty"`
	// Inlets and Outlets created with tcp-inlet/tcp-outlet create.
	Inlets  []Inlet  `json:"inlets,omitempty"`
	Outlets []Outlet `json:"outlets,omitempty"`
	// SecureChannels created with secure-channel create.
	SecureChannels []SecureChannel `json:"secure_channels,omitempty"`
	// PluginDir overrides where the node finds plugins (empty: default
	// search).
	PluginDir string `json:"plugin_dir,omitempty"`
	// Identity names the identity (in $FERRY_HOME/vault) the node proves in
	// secure channels; empty: one named after the node, created on first
	// start.
	Identity string `json:"identity,omitempty"`
	// ConfigFile and Vars: the node was created from a topology file.
	ConfigFile string            `json:"config_file,omitempty"`
	Vars       map[string]string `json:"vars,omitempty"`
	Created    time.Time         `json:"created"`
}

// Exists reports whether node name has state.
func (h *Home) Exists(name string) bool {
	_, err := os.Stat(h.ConfigPath(name))
	return err == nil
}

// Names lists the nodes with state, sorted.
func (h *Home) Names() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(h.Dir, "nodes"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && ValidName(e.Name()) == nil && h.Exists(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Load reads node name's configuration.
func (h *Home) Load(name string) (*NodeConfig, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(h.ConfigPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read node %q: %w", name, err)
	}
	var c NodeConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("node %q: config %s is not valid JSON (%v); delete the node and create it again", name, h.ConfigPath(name), err)
	}
	c.Name = name
	c.upgrade()
	return &c, nil
}

// upgrade rewrites fields of older configs into their current form.
func (c *NodeConfig) upgrade() {
	if c.LegacyTCPListener != "" {
		c.Listeners = append([]Listener{{Transport: legacyTransport, Address: c.LegacyTCPListener, Default: true}}, c.Listeners...)
		c.LegacyTCPListener = ""
	}
	for i := range c.Connections {
		if c.Connections[i].Transport == "" {
			c.Connections[i].Transport = legacyTransport
		}
	}
}

// Create makes node c.Name's directory and writes its configuration. The
// caller holds the node's lock.
func (h *Home) Create(c *NodeConfig) error {
	if err := ValidName(c.Name); err != nil {
		return err
	}
	if err := h.CheckSocketPath(c.Name); err != nil {
		return err
	}
	if h.Exists(c.Name) {
		return fmt.Errorf("node %q: %w", c.Name, ErrExists)
	}
	if err := os.MkdirAll(h.NodeDir(c.Name), 0o700); err != nil {
		return fmt.Errorf("create node %q: %w", c.Name, err)
	}
	return h.Save(c)
}

// Save writes c atomically. The caller holds the node's lock.
func (h *Home) Save(c *NodeConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node %q config: %w", c.Name, err)
	}
	return WriteFileAtomic(h.ConfigPath(c.Name), append(b, '\n'), 0o600)
}

// Remove deletes node name's state. The caller holds the node's lock and has
// stopped the node.
func (h *Home) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	// Remove the config first: a crash half-way leaves a directory that
	// Names ignores, never a half-node.
	if err := os.Remove(h.ConfigPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	if err := os.RemoveAll(h.NodeDir(name)); err != nil {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	return nil
}

// LogOnly lists the names whose state is gone but whose log was kept
// (RemoveKeepLog), sorted.
func (h *Home) LogOnly() []string {
	ents, _ := os.ReadDir(filepath.Join(h.Dir, "nodes"))
	var out []string
	for _, e := range ents {
		if e.IsDir() && ValidName(e.Name()) == nil && !h.Exists(e.Name()) && h.HasLog(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// HasLog reports whether node name has a log file, also one RemoveKeepLog
// kept.
func (h *Home) HasLog(name string) bool {
	if ValidName(name) != nil {
		return false
	}
	_, err := os.Stat(h.LogPath(name))
	return err == nil
}

// RemoveKeepLog deletes node name's state but keeps its log files
// (node.log and its rotated part), so `ferry node logs` still shows why a
// node of a topology that went down did what it did. Names no longer lists
// the node; creating it again appends to the same log; Remove deletes it.
func (h *Home) RemoveKeepLog(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := os.Remove(h.ConfigPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	ents, err := os.ReadDir(h.NodeDir(name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	log := filepath.Base(h.LogPath(name))
	for _, e := range ents {
		if e.Name() == log || e.Name() == log+".1" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(h.NodeDir(name), e.Name())); err != nil {
			return fmt.Errorf("delete node %q: %w", name, err)
		}
	}
	return nil
}

// WritePid records the running process of node name. The pid file is a
// hint (liveness is measured), so it is renamed into place but not fsynced:
// a sync here costs a node tens of milliseconds to start on a busy disk.
func (h *Home) WritePid(name string, pid int) error {
	return writeFile(h.PidPath(name), []byte(strconv.Itoa(pid)+"\n"), 0o600, false)
}

// ReadPid returns the pid recorded for node name, 0 if none.
func (h *Home) ReadPid(name string) int {
	b, err := os.ReadFile(h.PidPath(name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// RemovePid removes the pid file if it still names pid.
func (h *Home) RemovePid(name string, pid int) {
	if h.ReadPid(name) == pid {
		_ = os.Remove(h.PidPath(name))
	}
}

// WriteFileAtomic writes data to path so that a reader (or a crash) sees
// either the old content or the new, never a mix: temp file in the same
// directory, fsync, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, true)
}

func writeFile(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if durable {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !durable {
		return nil
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: makes the rename durable
		d.Close()
	}
	return nil
}

// Lock is a held flock.
type Lock struct{ f *os.File }

// Lock takes node name's exclusive lock, waiting for another ferry command
// that holds it, until timeout.
func (h *Home) Lock(name string, timeout time.Duration) (*Lock, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	return lockFile(filepath.Join(h.Dir, "locks", name+".lock"), timeout)
}

func lockFile(path string, timeout time.Duration) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: another ferry command has held it for %s; try again when it finishes", path, timeout)
		}
		// flock has no timed wait; poll with a short, growing interval.
		time.Sleep(wait)
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// ProcessAlive reports whether pid is a live process (not a zombie).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie answers kill(0) but is dead; on Linux /proc says which.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}
