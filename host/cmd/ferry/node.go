package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/state"
)

// Node status as measured.
const (
	statusUp       = api.StateUp
	statusDown     = api.StateDown
	statusDegraded = api.StateDegraded
)

// lockTimeout bounds how long a command waits for another one on the same
// node (a start can take a while when plugins are slow).
const lockTimeout = 60 * time.Second

// probeTimeout bounds a liveness check: a live node answers in well under a
// millisecond, a dead socket refuses at once.
const probeTimeout = time.Second

func probe(ctx context.Context, c *api.Client) (api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return c.Status(ctx)
}

// nodeView is what list/show/create print.
type nodeView struct {
	Name        string           `json:"name"`
	Status      string           `json:"status"`
	Pid         int              `json:"pid,omitempty"`
	Listeners   []api.Listener   `json:"listeners,omitempty"`
	Connections []api.Connection `json:"connections,omitempty"`
	Workers     []api.Worker     `json:"workers,omitempty"`
	// WorkersTotal counts every worker; Workers holds the first
	// api.StatusListLimit.
	WorkersTotal int           `json:"workers_total,omitempty"`
	Services     []api.Service `json:"services,omitempty"`
	Relays       *api.Relays   `json:"relays,omitempty"`
	Inlets       []api.Portal  `json:"inlets,omitempty"`
	Outlets      []api.Portal  `json:"outlets,omitempty"`
	Log          string        `json:"log"`
	Config       string        `json:"config"`
	Socket       string        `json:"socket"`
	// Note explains a DOWN or DEGRADED status when there is more to say.
	Note string `json:"note,omitempty"`
	// Plugins are the supervised plugins a running node started.
	Plugins []api.PluginState `json:"plugins,omitempty"`
}

// running reports whether the node's process serves (UP or DEGRADED).
func (v nodeView) running() bool { return v.Status == statusUp || v.Status == statusDegraded }

// nodeState is the status word of a node that answered.
func nodeState(st api.Status) string {
	if st.State == "" {
		return statusUp
	}
	return st.State
}

// listener is the node's own listener as TRANSPORT:ADDRESS, "-" if none.
func (v nodeView) listener() string {
	for _, l := range v.Listeners {
		if l.Default {
			return linkText(l.Transport, l.Address)
		}
	}
	if len(v.Listeners) > 0 {
		return linkText(v.Listeners[0].Transport, v.Listeners[0].Address)
	}
	return "-"
}

// measure asks node name's control socket; the status is UP only if it
// answers (which implies the process is there).
func measure(ctx context.Context, h *state.Home, name string) nodeView {
	v := nodeView{Name: name, Status: statusDown, Log: h.LogPath(name), Config: h.ConfigPath(name), Socket: h.SocketPath(name)}
	c := api.NewClient(h.SocketPath(name))
	defer c.Close()
	st, err := probe(ctx, c)
	if err == nil && state.ProcessAlive(st.Pid) {
		v.Status, v.Pid, v.Note, v.Plugins = nodeState(st), st.Pid, st.Reason, st.Plugins
		v.Listeners, v.Connections, v.Workers, v.Services = st.Listeners, st.Connections, st.Workers, st.Services
		v.WorkersTotal = st.WorkersTotal
		v.Relays, v.Inlets, v.Outlets = st.Relays, st.Inlets, st.Outlets
		return v
	}
	if pid := h.ReadPid(name); state.ProcessAlive(pid) && isNodeProcess(pid, name) {
		v.Pid = pid
		v.Note = fmt.Sprintf("process %d is alive but its control socket does not answer; see its log %s", pid, v.Log)
	}
	return v
}

// isNodeProcess guards against pid reuse before signalling a pid read from
// a file: the process must be `ferry node run NAME`.
func isNodeProcess(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for i := 0; i+2 < len(args); i++ {
		if args[i] == "node" && args[i+1] == "run" && args[i+2] == name {
			return true
		}
	}
	return false
}

func (a *app) newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Create, list, stop, start and delete nodes"}
	cmd.AddCommand(a.newNodeCreateCmd(), a.newNodeListCmd(), a.newNodeShowCmd(), a.newNodeStopCmd(),
		a.newNodeStartCmd(), a.newNodeDeleteCmd(), a.newNodeLogsCmd(), a.newNodeRunCmd())
	return cmd
}

type createFlags struct {
	config     string
	vars       []string
	listen     string
	listeners  []string
	noListener bool
	foreground bool
	verbose    bool
	pluginDir  string
	timeout    time.Duration
	parsed     []state.Listener // the listeners the flags ask for
	identity   string
}

// nodeListeners turns node create's listener flags into the node's saved
// listeners, the first one its default.
func nodeListeners(f createFlags, tcpChanged bool) ([]state.Listener, error) {
	if f.noListener || f.config != "" {
		return nil, nil
	}
	var out []state.Listener
	if tcpChanged || len(f.listeners) == 0 {
		if err := checkHostPort(f.listen); err != nil {
			return nil, fmt.Errorf("--tcp-listener-address: %w", err)
		}
		out = append(out, state.Listener{Transport: tcpTransport, Address: f.listen})
	}
	for _, l := range f.listeners {
		tr, addr, ok := strings.Cut(l, ":")
		if !ok || tr == "" || addr == "" {
			return nil, fmt.Errorf("--listener %q: want TRANSPORT:ADDRESS, e.g. tcp:127.0.0.1:0 or unix:/tmp/n1.sock", l)
		}
		out = append(out, state.Listener{Transport: tr, Address: addr})
	}
	out[0].Default = true
	return out, nil
}

func (a *app) newNodeCreateCmd() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a node and start it in the background (a random name if NAME is omitted)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return a.createNode(cmd.Context(), name, f)
		},
	}
	cmd.Flags().StringVar(&f.listen, "tcp-listener-address", "127.0.0.1:0", "address of the node's TCP listener (port 0: a free port at every start); the same as --listener tcp:ADDRESS")
	cmd.Flags().StringArrayVar(&f.listeners, "listener", nil, "a listener of any transport, --listener TRANSPORT:ADDRESS, e.g. udp:127.0.0.1:0 (repeatable; the first is the node's own); replaces the default TCP listener")
	cmd.Flags().BoolVar(&f.noListener, "no-listener", false, "open no listener: the node starts no transport and opens no socket until you ask (it can still dial out)")
	cmd.Flags().BoolVar(&f.foreground, "foreground", false, "run the node in this process instead of the background")
	cmd.Flags().BoolVar(&f.verbose, "verbose", false, "log at debug level (each worker as it starts)")
	cmd.Flags().StringVar(&f.pluginDir, "plugin-dir", "", "directory of plugin binaries (default $FERRY_PLUGIN_DIR, else beside the ferry binary)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the node to answer")
	cmd.Flags().StringVar(&f.config, "config", "", "start node NAME as declared in this topology file")
	cmd.Flags().StringArrayVar(&f.vars, "var", nil, "with --config: set a variable, --var NAME=VALUE (repeatable)")
	cmd.Flags().StringVar(&f.identity, "identity", "", "identity (ferry identity create NAME) the node proves in secure channels (default: a new one named after the node)")
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := a.checkIdentity(f.identity); err != nil {
			return err
		}
		if f.config == "" && len(f.vars) > 0 {
			return errors.New("--var needs --config FILE")
		}
		if f.config != "" && (cmd.Flags().Changed("tcp-listener-address") || len(f.listeners) > 0 || f.noListener) {
			return errors.New("--tcp-listener-address, --listener and --no-listener do not apply with --config: the file declares the node's listeners")
		}
		if f.noListener && (cmd.Flags().Changed("tcp-listener-address") || len(f.listeners) > 0) {
			return errors.New("--no-listener contradicts --listener and --tcp-listener-address; give one or the other")
		}
		ls, err := nodeListeners(f, cmd.Flags().Changed("tcp-listener-address"))
		if err != nil {
			return err
		}
		f.parsed = ls
		if f.config != "" && len(args) == 0 {
			return errors.New("with --config, name the node of the file to start: ferry node create NAME --config FILE")
		}
		return nil
	}
	return cmd
}

func (a *app) createNode(ctx context.Context, name string, f createFlags) error {
	h, err := a.home()
	if err != nil {
		return err
	}
	if name != "" {
		if err := state.ValidName(name); err != nil {
			return err
		}
	}
	// Only an explicit --plugin-dir is saved; $FERRY_PLUGIN_DIR is read
	// from the environment at every start, like any other setting of the
	// user's shell.
	pluginDir := ""
	if f.pluginDir != "" {
		if pluginDir, err = absPath(f.pluginDir); err != nil {
			return err
		}
	}
	var file string
	var vars map[string]string
	if f.config != "" {
		if file, err = absPath(f.config); err != nil {
			return err
		}
		if vars, err = parseVars(f.vars); err != nil {
			return err
		}
		t, err := a.loadTopology(ctx, file, vars, pluginDir)
		if err != nil {
			return err
		}
		if t.Node(name) == nil {
			var names []string
			for _, n := range t.Nodes {
				names = append(names, n.Name)
			}
			return fmt.Errorf("%s declares no node %q; it declares %s", f.config, name, strings.Join(names, ", "))
		}
	}
	var lock *state.Lock
	for tries := 0; ; tries++ {
		n := name
		if n == "" {
			n = state.RandomName()
		}
		lock, err = h.Lock(n, lockTimeout)
		if err != nil {
			return err
		}
		cfg := &state.NodeConfig{Name: n, Listeners: f.parsed, PluginDir: pluginDir, ConfigFile: file, Vars: vars, Identity: f.identity, Created: time.Now().UTC()}
		err = h.Create(cfg)
		if errors.Is(err, state.ErrExists) && name == "" && tries < 10 {
			lock.Unlock()
			continue
		}
		if errors.Is(err, state.ErrExists) {
			lock.Unlock()
			return fmt.Errorf("node %q already exists; see ferry node show %s, or delete it with ferry node delete %s", n, n, n)
		}
		if err != nil {
			lock.Unlock()
			return err
		}
		name = n
		break
	}
	if f.foreground {
		// The lock is for changes of state; a foreground node holds no
		// lock while it runs, so `ferry node stop` can reach it.
		lock.Unlock()
		return a.runForeground(ctx, h, name, f.verbose)
	}
	defer lock.Unlock()
	st, err := spawn(ctx, h, name, f.verbose, f.timeout)
	if err != nil {
		return fmt.Errorf("%w\nthe node's state is kept: fix the cause and run ferry node start %s, or remove it with ferry node delete %s", err, name, name)
	}
	return a.printNode(nodeFromStatus(h, st), false)
}

func absPath(p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return wd + "/" + p, nil
}

func nodeFromStatus(h *state.Home, st api.Status) nodeView {
	return nodeView{Name: st.Name, Status: nodeState(st), Note: st.Reason, Plugins: st.Plugins, Pid: st.Pid, Listeners: st.Listeners, Connections: st.Connections,
		Workers: st.Workers, WorkersTotal: st.WorkersTotal, Services: st.Services, Relays: st.Relays, Inlets: st.Inlets, Outlets: st.Outlets, Log: h.LogPath(st.Name), Config: h.ConfigPath(st.Name), Socket: h.SocketPath(st.Name)}
}

// spawn starts `ferry node run NAME` detached (its own session, stdin from
// /dev/null, output to the node's log) and waits until it reports, on a
// pipe passed as fd 3, that its control socket serves. No polling and no
// fixed sleep: the pipe carries the status, or closes if the node dies.
func spawn(ctx context.Context, h *state.Home, name string, verbose bool, timeout time.Duration) (api.Status, error) {
	exe, err := os.Executable()
	if err != nil {
		return api.Status{}, fmt.Errorf("find the ferry binary to start the node: %w", err)
	}
	logf, err := os.OpenFile(h.LogPath(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return api.Status{}, fmt.Errorf("open node log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return api.Status{}, err
	}
	defer devnull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return api.Status{}, fmt.Errorf("readiness pipe: %w", err)
	}
	defer pr.Close()
	args := []string{"node", "run", name, "--ready-fd", "3"}
	if verbose {
		args = append(args, "--verbose")
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "FERRY_HOME="+h.Dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	fmt.Fprintf(logf, "--- %s starting node %s\n", time.Now().UTC().Format(time.RFC3339Nano), name)
	err = cmd.Start()
	pw.Close() // the child holds the only write end now: EOF means it died
	if err != nil {
		return api.Status{}, fmt.Errorf("start node process: %w", err)
	}
	pid := cmd.Process.Pid
	// Reap the child if it exits while we wait, so liveness checks do not
	// see a zombie; after we return it belongs to init.
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = pr.SetReadDeadline(deadline)
	stopRead := context.AfterFunc(ctx, func() { _ = pr.SetReadDeadline(time.Now()) })
	defer stopRead()
	line, rerr := bufio.NewReader(io.LimitReader(pr, 1<<20)).ReadString('\n')
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "ok ") {
		var st api.Status
		if err := json.Unmarshal([]byte(line[3:]), &st); err != nil {
			return api.Status{}, fmt.Errorf("node %s sent a bad readiness message: %w", name, err)
		}
		return st, nil
	}
	// Not ready: make sure it is gone so a later start does not race it.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return api.Status{}, fmt.Errorf("node %s failed to start: %s (log: %s)", name, msg, h.LogPath(name))
	}
	if ctx.Err() != nil {
		return api.Status{}, fmt.Errorf("start of node %s interrupted: %w", name, ctx.Err())
	}
	if rerr != nil && errors.Is(rerr, os.ErrDeadlineExceeded) {
		return api.Status{}, fmt.Errorf("node %s did not answer within %s; see its log %s", name, timeout, h.LogPath(name))
	}
	return api.Status{}, fmt.Errorf("node %s exited before it served; last lines of its log %s:\n%s", name, h.LogPath(name), tail(h.LogPath(name), 10))
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func (a *app) printNode(v nodeView, detail bool) error {
	if a.json() {
		return a.printJSON(v)
	}
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "Name:\t%s\n", v.Name)
	fmt.Fprintf(w, "Status:\t%s\n", v.Status)
	if v.Pid != 0 {
		fmt.Fprintf(w, "Pid:\t%d\n", v.Pid)
	}
	if v.running() {
		fmt.Fprintf(w, "Listener:\t%s\n", v.listener())
	}
	if v.Note != "" {
		fmt.Fprintf(w, "Note:\t%s\n", v.Note)
	}
	if detail {
		fmt.Fprintf(w, "Log:\t%s\n", v.Log)
		fmt.Fprintf(w, "Socket:\t%s\n", v.Socket)
	}
	w.Flush()
	if !detail || !v.running() {
		return nil
	}
	a.printf("Listeners:\n")
	if len(v.Listeners) == 0 {
		a.printf("  (none)\n")
	} else if err := printListeners(indent(a.stdout), v.Listeners); err != nil {
		return err
	}
	if len(v.Listeners) > 0 {
		a.printf("Hops (listeners' transport counters):\n")
		printHopCounters(a.stdout, v.Listeners)
	}
	if len(v.Connections) > 0 {
		a.printf("Connections:\n")
		if err := printConnections(indent(a.stdout), v.Connections); err != nil {
			return err
		}
	}
	a.printf("Services:\n")
	for _, s := range v.Services {
		a.printf("  %-10s %s\n", s.Type, s.Address)
	}
	a.printRelaysAndPortals(v.Relays, v.Inlets, v.Outlets)
	a.printf("Workers:\n")
	for _, wk := range v.Workers {
		a.printf("  %s  (%s)\n", strings.Join(wk.Addresses, " "), kindOr(wk.Kind))
	}
	if v.WorkersTotal > len(v.Workers) {
		a.printf("  ... %d workers in all; see ferry worker list --at %s\n", v.WorkersTotal, v.Name)
	}
	return nil
}

// indent prefixes every line written to w with two spaces.
func indent(w io.Writer) io.Writer { return &indenter{w: w, bol: true} }

type indenter struct {
	w   io.Writer
	bol bool
}

func (d *indenter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if d.bol {
			b = append(b, ' ', ' ')
		}
		b = append(b, c)
		d.bol = c == '\n'
	}
	if _, err := d.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func kindOr(k string) string {
	if k == "" {
		return "worker"
	}
	return k
}

func (a *app) newNodeListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List nodes with their measured status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := a.home()
			if err != nil {
				return err
			}
			names, err := h.Names()
			if err != nil {
				return err
			}
			views := make([]nodeView, len(names))
			var wg sync.WaitGroup
			for i, n := range names {
				wg.Add(1)
				go func() { defer wg.Done(); views[i] = measure(cmd.Context(), h, n) }()
			}
			wg.Wait()
			if a.json() {
				for i := range views {
					views[i].Workers, views[i].Services, views[i].Connections = nil, nil, nil
				}
				if views == nil {
					views = []nodeView{}
				}
				return a.printJSON(views)
			}
			if len(views) == 0 {
				a.printf("No nodes; create one with ferry node create\n")
				return nil
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSTATUS\tPID\tLISTENER")
			for _, v := range views {
				pid, l := "-", "-"
				if v.running() {
					pid, l = fmt.Sprint(v.Pid), v.listener()
				}
				if v.Note != "" {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.Status, pid, l, v.Note)
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", v.Name, v.Status, pid, l)
			}
			return w.Flush()
		},
	}
}

func (a *app) newNodeShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a node: status, pid, listeners, workers, services",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, _, err := a.loadNode(args[0])
			if err != nil {
				return err
			}
			v := measure(cmd.Context(), h, args[0])
			if v.running() {
				c := api.NewClient(h.SocketPath(args[0]))
				withListenerCounters(cmd.Context(), c, v.Listeners)
				c.Close()
			}
			return a.printNode(v, true)
		},
	}
}

func (a *app) newNodeStopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Stop a node's process and keep its state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, _, err := a.loadNode(args[0])
			if err != nil {
				return err
			}
			l, err := h.Lock(args[0], lockTimeout)
			if err != nil {
				return err
			}
			defer l.Unlock()
			was, err := stopNode(cmd.Context(), h, args[0])
			if err != nil {
				return err
			}
			format := "Stopped node %s\n"
			if !was {
				format = "Node %s is not running; nothing to stop\n"
			}
			return a.printResult(map[string]any{"name": args[0], "status": statusDown, "was_running": was}, format, args[0])
		},
	}
}

// printResult prints v as JSON or the formatted text.
func (a *app) printResult(v any, format string, args ...any) error {
	if a.json() {
		return a.printJSON(v)
	}
	a.printf(format, args...)
	return nil
}

// stopNode stops node name's process and waits until it has exited. The
// caller holds the node's lock. It reports whether a process was running.
func stopNode(ctx context.Context, h *state.Home, name string) (bool, error) {
	c := api.NewClient(h.SocketPath(name))
	defer c.Close()
	pid := 0
	if st, err := probe(ctx, c); err == nil {
		pid = st.Pid
		sctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := c.Shutdown(sctx)
		cancel()
		if err != nil && state.ProcessAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	} else if p := h.ReadPid(name); state.ProcessAlive(p) && isNodeProcess(p, name) {
		pid = p
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if pid == 0 {
		return false, nil
	}
	if waitExit(ctx, pid, 10*time.Second) {
		h.RemovePid(name, pid)
		return true, nil
	}
	// It did not stop in time: do not leave it running behind our back.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !waitExit(ctx, pid, 5*time.Second) {
		return true, fmt.Errorf("node %s (pid %d) does not exit even after SIGKILL", name, pid)
	}
	h.RemovePid(name, pid)
	return true, nil
}

// waitExit polls for pid to disappear; a process that is not our child
// gives no event to wait on.
func waitExit(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	wait := time.Millisecond
	for state.ProcessAlive(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(wait)
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
	return true
}

func (a *app) newNodeStartCmd() *cobra.Command {
	var verbose bool
	var timeout time.Duration
	var pluginDir string
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a stopped node again with the same configuration",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			h, _, err := a.loadNode(name)
			if err != nil {
				return err
			}
			l, err := h.Lock(name, lockTimeout)
			if err != nil {
				return err
			}
			defer l.Unlock()
			if v := measure(cmd.Context(), h, name); v.running() {
				return a.printNode(v, false)
			} else if v.Note != "" {
				return fmt.Errorf("node %s: %s; stop it first with ferry node stop %s", name, v.Note, name)
			}
			if pluginDir != "" {
				cfg, err := h.Load(name)
				if err != nil {
					return err
				}
				if cfg.PluginDir, err = absPath(pluginDir); err != nil {
					return err
				}
				if err := h.Save(cfg); err != nil {
					return err
				}
			}
			st, err := spawn(cmd.Context(), h, name, verbose, timeout)
			if err != nil {
				return err
			}
			return a.printNode(nodeFromStatus(h, st), false)
		},
	}
	cmd.Flags().BoolVar(&verbose, "verbose", false, "log at debug level")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the node to answer")
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", "", "use (and remember) this plugin directory from now on")
	return cmd
}

func (a *app) newNodeDeleteCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "delete [NAME...] | --all",
		Short: "Stop nodes if running and remove their state",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return errors.New("name the nodes to delete, or pass --all")
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			names := args
			if all {
				if names, err = h.Names(); err != nil {
					return err
				}
				names = append(names, h.LogOnly()...)
			} else {
				for _, n := range names {
					if _, _, err := a.loadNode(n); err != nil && !h.HasLog(n) {
						return err
					}
				}
			}
			var errs []error
			deleted := []string{}
			for _, n := range names {
				if err := deleteNode(cmd.Context(), h, n, false); err != nil {
					errs = append(errs, err)
					continue
				}
				deleted = append(deleted, n)
			}
			if a.json() {
				_ = a.printJSON(map[string]any{"deleted": deleted})
			} else {
				for _, n := range deleted {
					a.printf("Deleted node %s\n", n)
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "delete every node")
	return cmd
}

// deleteNode stops node name and removes its state; keepLog keeps its log
// (ferry down), node delete removes everything.
func deleteNode(ctx context.Context, h *state.Home, name string, keepLog bool) error {
	l, err := h.Lock(name, lockTimeout)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if !h.Exists(name) {
		if !keepLog {
			// Deleted by a concurrent command, or gone down with only
			// its log kept: the log goes now.
			return h.Remove(name)
		}
		return nil
	}
	if _, err := stopNode(ctx, h, name); err != nil {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	if keepLog {
		return h.RemoveKeepLog(name)
	}
	return h.Remove(name)
}

func named(name string) string {
	if name == "" {
		return ""
	}
	return " (" + name + ")"
}
