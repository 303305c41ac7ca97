package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/topology"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// newValidateCmd is `ferry validate FILE`: load and check a topology file
// without starting anything.
func newValidateCmd() *cobra.Command {
	var (
		vars         []string
		checkPlugins bool
		pluginDir    string
	)
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a topology file without starting anything",
		Long: `Validate loads an HCL topology file and checks it: blocks and attributes,
types, route text, plugin names, references between blocks (node.n2.transport.public),
variables and the order the nodes would start in. Settings of built-in plugins are
checked against their declared schemas; --check-plugins also starts third-party
plugins briefly to read theirs (nothing else is ever started).

Exit status 0 with a one-line summary, or 1 with the diagnostics on stderr.`,
		Example: `  ferry validate configs/bridge.hcl
  ferry validate configs/relay-portal.hcl --var n2_port=7100`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			opts := topology.LoadOptions{}
			var err error
			if opts.Vars, err = parseVarFlags(vars); err != nil {
				return err
			}
			sc := &schemaSource{checkPlugins: checkPlugins, pluginDir: pluginDir}
			defer sc.close()
			opts.Installed = installedPlugins(pluginDir)
			if checkPlugins {
				// A first load finds the plugin blocks (paths, pins) the
				// schema lookup needs.
				if t, diags := topology.Load(path, opts); !diags.HasErrors() {
					sc.declared = t.Plugins
				}
			}
			opts.Schemas = func(name string) ([]transport.Setting, error) {
				return sc.schema(cmd.Context(), name)
			}
			t, diags := topology.Load(path, opts)
			return reportValidation(cmd, path, t, diags)
		},
	}
	cmd.Flags().StringArrayVar(&vars, "var", nil, "set a variable, as name=value (repeatable)")
	cmd.Flags().BoolVar(&checkPlugins, "check-plugins", false, "start third-party plugins briefly to check settings against the schemas they declare")
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", "", "directory of plugin binaries for --check-plugins (default $FERRY_PLUGIN_DIR, else beside the ferry binary)")
	return cmd
}

// installedPlugins lists the plugin directory (dir, else the default
// search) without starting anything: a topology may use any plugin there
// without a plugin block. nil when there is no such directory, so that
// Ferry's own plugins are assumed.
func installedPlugins(dir string) map[string]topology.InstalledPlugin {
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Logger: hclog.NewNullLogger()})
	if err != nil {
		return nil
	}
	defer m.Close()
	ents, err := os.ReadDir(m.Dir())
	if err != nil {
		return nil
	}
	out := map[string]topology.InstalledPlugin{}
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if info, err := e.Info(); err != nil || info.Mode()&0o111 == 0 {
			continue // not executable: not a plugin
		}
		out[e.Name()] = topology.InstalledPlugin{}
	}
	return out
}

// parseVarFlags turns --var name=value flags into LoadOptions.Vars.
func parseVarFlags(flags []string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--var %q: write --var name=value", f)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--var %s is given twice; keep one", k)
		}
		out[k] = v
	}
	return out, nil
}

type validation struct {
	File        string       `json:"file"`
	OK          bool         `json:"ok"`
	Summary     string       `json:"summary,omitempty"`
	Order       []string     `json:"order,omitempty"`
	Diagnostics []diagnostic `json:"diagnostics,omitempty"`
}

type diagnostic struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
}

func reportValidation(cmd *cobra.Command, path string, t *topology.Topology, diags hcl.Diagnostics) error {
	v := validation{File: path, OK: !diags.HasErrors()}
	for _, d := range diags {
		jd := diagnostic{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			jd.Severity = "warning"
		}
		if d.Subject != nil {
			jd.File, jd.Line, jd.Column = d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column
		}
		v.Diagnostics = append(v.Diagnostics, jd)
	}
	if v.OK {
		v.Summary = t.Summary()
		order, err := t.Order()
		if err != nil {
			return err
		}
		for _, n := range order {
			v.Order = append(v.Order, n.Name)
		}
	}
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if f := cmd.Flag("output"); f != nil && f.Value.String() == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
	} else {
		if len(diags) > 0 {
			if err := t.WriteDiagnostics(stderr, diags, 0, false); err != nil {
				return err
			}
		}
		if v.OK {
			fmt.Fprintf(stdout, "%s: %s; start order %s; OK\n", path, v.Summary, strings.Join(v.Order, ", "))
		}
	}
	if !v.OK {
		n := len(diags.Errs())
		if n == 1 {
			return fmt.Errorf("%s: 1 error; fix it and run ferry validate again", path)
		}
		return fmt.Errorf("%s: %d errors; fix them and run ferry validate again", path, n)
	}
	return nil
}

// schemaSource answers LoadOptions.Schemas: built-in transports from their
// in-process implementations (constructing one starts nothing), others
// only with --check-plugins.
type schemaSource struct {
	checkPlugins bool
	pluginDir    string
	declared     []*topology.Plugin
	manager      *plugins.Manager
}

func (s *schemaSource) schema(ctx context.Context, name string) ([]transport.Setting, error) {
	var declared *topology.Plugin
	for _, p := range s.declared {
		if p.Name == name {
			declared = p
		}
	}
	if name == "tcp" && (declared == nil || declared.Path == "") {
		t := tcptransport.New()
		defer t.Close()
		return t.Info().Settings, nil
	}
	if !s.checkPlugins || name == "portal-tcp" {
		// Portal plugins declare no transport settings schema.
		return nil, topology.ErrSchemaUnknown
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if declared != nil && declared.Path != "" {
		c, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: declared.Path, Name: declared.Name, SHA256: declared.SHA256})
		if err != nil {
			return nil, err
		}
		defer c.Kill()
		return c.Transport().Info().Settings, nil
	}
	if s.manager == nil {
		pins := map[string]string{}
		for _, p := range s.declared {
			if p.SHA256 != "" {
				pins[p.Name] = p.SHA256
			}
		}
		m, err := plugins.NewManager(plugins.Config{Dir: s.pluginDir, Pins: pins})
		if err != nil {
			return nil, err
		}
		s.manager = m
	}
	t, err := s.manager.Transport(ctx, name)
	if err != nil {
		return nil, err
	}
	return t.Info().Settings, nil
}

func (s *schemaSource) close() {
	if s.manager != nil {
		// Validation is over; a plugin that fails to stop cleanly changes
		// nothing about the answer.
		_ = s.manager.Close()
	}
}
