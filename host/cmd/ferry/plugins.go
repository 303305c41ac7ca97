package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/topology"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/transport"
)

// pluginTransports gives a node its transports as plugin subprocesses,
// supervised by the plugin manager.
type pluginTransports struct {
	m   *plugins.Manager
	log hclog.Logger

	// pins and paths come from a topology file's plugin blocks.
	pins  map[string]string
	paths map[string]string
}

// newPluginTransports starts nothing yet; spec (may be nil) carries the
// plugin blocks of the node's topology file: SHA-256 pins and explicit
// executable paths.
func newPluginTransports(dir string, log hclog.Logger, spec *topology.NodeSpec) (*pluginTransports, error) {
	pins, paths := map[string]string{}, map[string]string{}
	if spec != nil {
		for _, p := range spec.Plugins {
			if p.SHA256 != "" {
				pins[p.Name] = p.SHA256
			}
			if p.Path != "" {
				paths[p.Name] = p.Path
			}
		}
	}
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Logger: log, Pins: pins, Paths: paths})
	if err != nil {
		return nil, fmt.Errorf("plugin manager: %w", err)
	}
	return &pluginTransports{m: m, log: log, pins: pins, paths: paths}, nil
}

func (p *pluginTransports) Transport(ctx context.Context, name string) (transport.Transport, error) {
	t, err := p.m.Transport(ctx, name)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Watch is part of the daemon's transport source. The plugin catalog
// (host/plugins) logs a crash and its restart once, and the transport's
// binding (host/transports) re-opens listeners and re-dials on the one
// Restarted event, so nothing more happens here: one crash gives one
// "crashed" line, one restart and one re-open.
func (p *pluginTransports) Watch(transport.Transport, func()) (cancel func()) {
	return func() {}
}

// PluginStatuses is the supervisor's state of every plugin the node runs
// (running, restarting, degraded with the last error), for status output.
func (p *pluginTransports) PluginStatuses() []plugins.Status { return p.m.Statuses() }

func (p *pluginTransports) Plugins(ctx context.Context) ([]api.Plugin, error) {
	return listPlugins(ctx, p.m)
}

func (p *pluginTransports) Close() error { return p.m.Close() }

// Portal returns the portal plugin name (bin/plugins/portal-tcp) from the
// plugin catalog, which starts it on first use and restarts it when it
// dies; inlets then listen again.
func (p *pluginTransports) Portal(ctx context.Context, name string) (portal.Portal, error) {
	pt, err := p.m.Portal(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%w (looked in %s; build it with make build or set FERRY_PLUGIN_DIR)", err, p.m.Dir())
	}
	return pt, nil
}

// listPlugins describes every plugin binary; the kind comes from the one
// base Hello each answers.
func listPlugins(ctx context.Context, m *plugins.Manager) ([]api.Plugin, error) {
	infos, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Plugin, 0, len(infos))
	for _, i := range infos {
		out = append(out, api.Plugin{Kind: string(i.Kind), Name: i.Name, Version: i.Version, ProtocolMajor: i.ProtocolMajor, ProtocolMinor: i.ProtocolMinor,
			Path: i.Path, SHA256: i.SHA256, Running: i.Running, Pid: i.Pid, Error: i.Error})
	}
	return out, nil
}

func (a *app) newPluginCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "plugin", Short: "Inspect transport and portal plugins"}
	var at, dir string
	list := &cobra.Command{
		Use:   "list",
		Short: "List plugins: name, version, protocol version, path, sha256",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ps []api.Plugin
			if at != "" {
				c, _, err := a.connect(cmd.Context(), at)
				if err != nil {
					return err
				}
				defer c.Close()
				if ps, err = c.Plugins(cmd.Context()); err != nil {
					return err
				}
			} else {
				if dir == "" {
					dir = os.Getenv("FERRY_PLUGIN_DIR")
				}
				m, err := plugins.NewManager(plugins.Config{Dir: dir, Logger: hclog.NewNullLogger()})
				if err != nil {
					return fmt.Errorf("plugin manager: %w", err)
				}
				defer m.Close()
				if ps, err = listPlugins(cmd.Context(), m); err != nil {
					return err
				}
			}
			if a.json() {
				if ps == nil {
					ps = []api.Plugin{}
				}
				return a.printJSON(ps)
			}
			if len(ps) == 0 {
				a.printf("No plugins found; build them with make build, or point --plugin-dir / FERRY_PLUGIN_DIR at them\n")
				return nil
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tVERSION\tPROTOCOL\tRUNNING\tPATH\tSHA256")
			var broken []api.Plugin
			for _, p := range ps {
				run := "no"
				if p.Running {
					run = fmt.Sprintf("pid %d", p.Pid)
				}
				kind := p.Kind
				if p.Error != "" {
					kind, broken = "broken", append(broken, p)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d.%d\t%s\t%s\t%s\n", p.Name, kind, p.Version, p.ProtocolMajor, p.ProtocolMinor, run, p.Path, p.SHA256)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, p := range broken {
				fmt.Fprintf(a.stderr, "plugin %s: %s\n", p.Name, p.Error)
			}
			return nil
		},
	}
	list.Flags().StringVar(&at, "at", "", "ask this node (shows which plugins it runs)")
	list.Flags().StringVar(&dir, "plugin-dir", "", "directory of plugin binaries (default $FERRY_PLUGIN_DIR, else beside the ferry binary)")
	cmd.AddCommand(list)
	return cmd
}
