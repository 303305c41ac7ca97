package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/portals"
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

	mu      sync.Mutex
	portals map[string]*portals.SupervisedPlugin
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

// Watch calls restarted each time the supervised plugin behind t runs again
// after a crash, so the node re-opens listeners and re-dials at once, and
// logs crashes with the plugin's last stderr lines.
func (p *pluginTransports) Watch(t transport.Transport, restarted func()) (cancel func()) {
	pt, ok := t.(*plugins.Transport)
	if !ok {
		return func() {}
	}
	log := p.log
	return pt.Subscribe(func(e plugins.Event) {
		switch e.Kind {
		case plugins.Crashed:
			log.Error("plugin crashed; restarting it", "plugin", e.Plugin, "error", e.Err, "stderr", e.Stderr)
		case plugins.Restarted:
			log.Info("plugin restarted", "plugin", e.Plugin, "pid", e.Pid)
			restarted()
		case plugins.GaveUp:
			log.Error("plugin keeps crashing; gave up restarting it", "plugin", e.Plugin, "error", e.Err, "stderr", e.Stderr)
		}
	})
}

func (p *pluginTransports) Plugins(ctx context.Context) ([]api.Plugin, error) {
	ps, err := listPlugins(ctx, p.m)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range ps {
		if sp := p.portals[ps[i].Name]; sp != nil && ps[i].Kind == "portal" {
			if pid := sp.Pid(); pid > 0 {
				ps[i].Running, ps[i].Pid = true, pid
			}
		}
	}
	return ps, nil
}

func (p *pluginTransports) Close() error {
	p.mu.Lock()
	ps := p.portals
	p.portals = nil
	p.mu.Unlock()
	for _, sp := range ps {
		sp.Close()
	}
	return p.m.Close()
}

// Portal starts the portal plugin name (bin/plugins/portal-tcp) as a
// supervised subprocess on first use: a plugin that dies is started again
// at the next session or re-listen.
func (p *pluginTransports) Portal(ctx context.Context, name string) (portal.Portal, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sp := p.portals[name]; sp != nil {
		return sp, nil
	}
	if strings.ContainsAny(name, "/\\") || name == "" || name[0] == '.' {
		return nil, fmt.Errorf("portal plugin name %q: want a file name such as portal-tcp", name)
	}
	path := filepath.Join(p.m.Dir(), name)
	if explicit := p.paths[name]; explicit != "" {
		path = explicit
	}
	sp, err := portals.StartPlugin(ctx, portals.PluginConfig{Path: path, Name: name, Logger: p.log.Named(name), SHA256: p.pins[name]})
	if err != nil {
		return nil, fmt.Errorf("%w (looked in %s; build it with make build or set FERRY_PLUGIN_DIR)", err, p.m.Dir())
	}
	if p.portals == nil {
		p.portals = map[string]*portals.SupervisedPlugin{}
	}
	p.portals[name] = sp
	return sp, nil
}

func listPlugins(ctx context.Context, m *plugins.Manager) ([]api.Plugin, error) {
	infos, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Plugin, 0, len(infos))
	for _, i := range infos {
		p := api.Plugin{Kind: "transport", Name: i.Name, Version: i.Version, ProtocolMajor: i.ProtocolMajor, ProtocolMinor: i.ProtocolMinor,
			Path: i.Path, SHA256: i.SHA256, Running: i.Running, Pid: i.Pid, Error: i.Error}
		if i.Error != "" {
			// Not a transport: a portal plugin answers a different
			// handshake, so ask it as one before reporting an error.
			if pp, ok := portalInfo(ctx, i.Name, i.Path); ok {
				pp.SHA256 = i.SHA256
				p = pp
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// portalInfo starts the executable at path briefly as a portal plugin and
// returns its description, or false if it is not one.
func portalInfo(ctx context.Context, name, path string) (api.Plugin, bool) {
	c, err := portals.LaunchPlugin(ctx, portals.PluginConfig{Path: path, Name: name, Logger: hclog.NewNullLogger()})
	if err != nil {
		return api.Plugin{}, false
	}
	defer c.Kill()
	info := c.Portal().Info()
	return api.Plugin{Kind: "portal", Name: name, Version: info.Version, ProtocolMajor: portal.ProtocolMajor,
		ProtocolMinor: portal.ProtocolMinor, Path: path}, true
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
