package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/host/topology"
	"github.com/ferryhq/ferry/sdk/transport"
)

// parseVars turns repeated --var k=v flags into a map.
func parseVars(vars []string) (map[string]string, error) {
	if len(vars) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--var %q: write NAME=VALUE, e.g. --var n2_port=7102", kv)
		}
		out[k] = v
	}
	return out, nil
}

// loadTopology loads path, printing diagnostics (warnings too) on stderr.
func (a *app) loadTopology(ctx context.Context, path string, vars map[string]string, pluginDir string) (*topology.Topology, error) {
	// Settings are checked against the schemas the plugins declare, as
	// ferry validate --check-plugins does (each plugin used is started
	// briefly to ask): a node is about to start them anyway.
	sc := &schemaSource{checkPlugins: true, pluginDir: pluginDir}
	defer sc.close()
	t, diags := topology.Load(path, topology.LoadOptions{Vars: vars, Installed: installedPlugins(pluginDir), Schemas: func(name string) ([]transport.Setting, error) {
		return sc.schema(ctx, name)
	}})
	if len(diags) > 0 {
		_ = t.WriteDiagnostics(a.stderr, diags, 100, false)
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s has errors (above); fix them and check with ferry validate %s", path, path)
	}
	return t, nil
}

// resolveSpec turns node cfg's topology file into a NodeSpec, resolving
// references to other nodes through the running nodes of this FERRY_HOME,
// else from the file alone (for nodes on other machines).
func resolveSpec(ctx context.Context, h *state.Home, cfg *state.NodeConfig) (*topology.NodeSpec, error) {
	t, diags := topology.Load(cfg.ConfigFile, topology.LoadOptions{Vars: cfg.Vars, Installed: installedPlugins(cfg.PluginDir)})
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = t.WriteDiagnostics(&b, diags, 0, false)
		return nil, fmt.Errorf("topology file %s has errors: %s", cfg.ConfigFile, strings.TrimSpace(b.String()))
	}
	lookup := func(ref topology.Ref) (string, error) {
		if ref.Node != cfg.Name && h.Exists(ref.Node) {
			c := api.NewClient(h.SocketPath(ref.Node))
			defer c.Close()
			st, err := probe(ctx, c)
			if err == nil {
				return lookupRunning(st, ref)
			}
			if other, lerr := h.Load(ref.Node); lerr == nil && other.ConfigFile == cfg.ConfigFile {
				return "", fmt.Errorf("node %s is not running; start it first (ferry up starts a file's nodes in order)", ref.Node)
			}
		}
		return t.StaticLookup(ref)
	}
	return t.ResolveNode(cfg.Name, lookup)
}

func lookupRunning(st api.Status, ref topology.Ref) (string, error) {
	switch ref.Kind {
	case topology.RefListener:
		for _, l := range st.Listeners {
			if l.Name == ref.Name {
				return l.Address, nil
			}
		}
		return "", fmt.Errorf("running node %s has no listener %q; was it started from another file?", ref.Node, ref.Name)
	case topology.RefConnection:
		for _, c := range st.Connections {
			if c.Name == ref.Name {
				return c.Worker, nil
			}
		}
		return "", fmt.Errorf("running node %s has no connection %q; was it started from another file?", ref.Node, ref.Name)
	}
	return "", fmt.Errorf("%s cannot be looked up on a running node", ref)
}

func (a *app) newUpCmd() *cobra.Command {
	var vars []string
	var timeout time.Duration
	var verbose bool
	cmd := &cobra.Command{
		Use:   "up FILE",
		Short: "Start every node of a topology file in the background, in dependency order",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			vm, err := parseVars(vars)
			if err != nil {
				return err
			}
			t, err := a.loadTopology(cmd.Context(), path, vm, "")
			if err != nil {
				return err
			}
			order, err := t.Order()
			if err != nil {
				return err
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			var views []nodeView
			for _, n := range order {
				v, err := a.upNode(cmd.Context(), h, n.Name, path, vm, verbose, timeout)
				if err != nil {
					var started []string
					for _, v := range views {
						started = append(started, v.Name)
					}
					hint := ""
					if len(started) > 0 {
						hint = fmt.Sprintf("\nnodes already running from this file: %s; stop them with ferry down %s", strings.Join(started, ", "), args[0])
					}
					return fmt.Errorf("%w%s", err, hint)
				}
				views = append(views, v)
			}
			if a.json() {
				for i := range views {
					views[i].Workers = nil
				}
				return a.printJSON(map[string]any{"file": path, "nodes": views})
			}
			a.printf("Started %s from %s (%s)\n", plural(len(views), "node"), args[0], t.Summary())
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSTATUS\tPID\tLISTENERS\tCONNECTIONS\tSERVICES")
			for _, v := range views {
				var ls, cs, ss []string
				for _, l := range v.Listeners {
					ls = append(ls, linkText(l.Transport, l.Address))
				}
				for _, c := range v.Connections {
					if !c.Accepted {
						cs = append(cs, c.Worker+" -> "+linkText(c.Transport, c.Remote))
					}
				}
				for _, s := range v.Services {
					ss = append(ss, s.Type)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", v.Name, v.Status, v.Pid, orDash(ls), orDash(cs), orDash(ss))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			printPaths(a.stdout, views)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&vars, "var", nil, "set a variable: --var NAME=VALUE (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for each node to answer")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "nodes log at debug level")
	return cmd
}

func orDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// upNode creates (or restarts) one node of file and waits until it is UP.
func (a *app) upNode(ctx context.Context, h *state.Home, name, file string, vars map[string]string, verbose bool, timeout time.Duration) (nodeView, error) {
	l, err := h.Lock(name, lockTimeout)
	if err != nil {
		return nodeView{}, err
	}
	defer l.Unlock()
	cfg, err := h.Load(name)
	switch {
	case errors.Is(err, state.ErrNotFound):
		cfg = &state.NodeConfig{Name: name, ConfigFile: file, Vars: vars, Created: time.Now().UTC()}
		if err := h.Create(cfg); err != nil {
			return nodeView{}, err
		}
	case err != nil:
		return nodeView{}, err
	case cfg.ConfigFile != file:
		return nodeView{}, fmt.Errorf("node %q already exists and was not created from %s; delete it (ferry node delete %s) or rename the node in the file", name, file, name)
	default:
		if v := measure(ctx, h, name); v.running() {
			return v, nil
		}
		cfg.Vars = vars
		if err := h.Save(cfg); err != nil {
			return nodeView{}, err
		}
	}
	st, err := spawn(ctx, h, name, verbose, timeout)
	if err != nil {
		return nodeView{}, err
	}
	return nodeFromStatus(h, st), nil
}

func (a *app) newDownCmd() *cobra.Command {
	var vars []string
	cmd := &cobra.Command{
		Use:   "down FILE",
		Short: "Stop and delete the nodes a topology file started (their logs stay until node delete)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			vm, err := parseVars(vars)
			if err != nil {
				return err
			}
			t, err := a.loadTopology(cmd.Context(), path, vm, "")
			if err != nil {
				return err
			}
			order, err := t.Order()
			if err != nil {
				return err
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			stopped := []string{}
			var errs []error
			// Reverse order: a node stops before the nodes it depends on.
			for i := len(order) - 1; i >= 0; i-- {
				name := order[i].Name
				cfg, err := h.Load(name)
				if errors.Is(err, state.ErrNotFound) {
					continue
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if cfg.ConfigFile != path {
					fmt.Fprintf(a.stderr, "ferry: leaving node %s alone: it was not started from %s\n", name, args[0])
					continue
				}
				if err := deleteNode(cmd.Context(), h, name, true); err != nil {
					errs = append(errs, err)
					continue
				}
				stopped = append(stopped, name)
			}
			if a.json() {
				_ = a.printJSON(map[string]any{"file": path, "stopped": stopped})
			} else if len(stopped) == 0 {
				a.printf("No nodes of %s were running\n", args[0])
			} else {
				a.printf("Stopped and deleted %s: %s\n", plural(len(stopped), "node"), strings.Join(stopped, ", "))
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringArrayVar(&vars, "var", nil, "set a variable: --var NAME=VALUE (as given to up)")
	return cmd
}
