package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

// linkCmd describes one spelling of the listener/connection commands: the
// generic one (transport from --transport) or an alias bound to one
// transport (tcp-listener, tcp-connection), whose addresses it may check.
type linkCmd struct {
	use       string
	transport string // fixed transport of an alias; empty: --transport
	what      string // "listener", "tcp listener", ...
	check     func(addr string) error
}

// linkFlags are the flags of listener/connection create.
type linkFlags struct {
	transport string
	allow     []string
	settings  []string
}

func (f *linkFlags) add(cmd *cobra.Command, lc linkCmd) {
	if lc.transport == "" {
		cmd.Flags().StringVar(&f.transport, "transport", "", "transport plugin, e.g. tcp, udp, quic, serial, kafka or a third party's (see ferry plugin list)")
	}
	cmd.Flags().StringSliceVar(&f.allow, "allow", nil, "local addresses network input over it may reach (default: echo, uppercase, hop, relay); repeatable or comma-separated")
	cmd.Flags().StringArrayVar(&f.settings, "setting", nil, "a transport setting, --setting NAME=VALUE (repeatable; see the plugin's settings)")
}

// request builds the create request; transport may come from a route.
func (f *linkFlags) request(lc linkCmd, address string) (api.CreateRequest, error) {
	tr := lc.transport
	if tr == "" {
		tr = f.transport
	}
	if tr == "" {
		return api.CreateRequest{}, errors.New("say which transport with --transport NAME; see ferry plugin list")
	}
	settings, err := parseSettings(f.settings)
	if err != nil {
		return api.CreateRequest{}, err
	}
	if lc.check != nil {
		if err := lc.check(address); err != nil {
			return api.CreateRequest{}, err
		}
	}
	return api.CreateRequest{Transport: tr, Address: address, Allow: f.allow, Settings: settings}, nil
}

func parseSettings(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--setting %q: want NAME=VALUE", kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--setting %s is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// linkText is the compact form of a listener or connection address:
// TRANSPORT:ADDRESS, the spelling node create --listener takes.
func linkText(transport, address string) string { return transport + ":" + address }

func upText(up bool) string {
	if up {
		return "UP"
	}
	return "DOWN"
}

// printListeners is the one listener table: listener list, node show.
func printListeners(out io.Writer, ls []api.Listener) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTRANSPORT\tADDRESS\tSTATUS\tALLOWS\tNAME")
	for _, l := range ls {
		name := l.Name
		if l.Default {
			name = strings.TrimPrefix(name+" (default)", " ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Transport, l.Address, upText(l.Up), orDash(l.Allow), orDash(nonEmpty(name)))
	}
	return w.Flush()
}

// printConnections is the one connection table: connection list, node show.
func printConnections(out io.Writer, cs []api.Connection) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTRANSPORT\tWORKER\tREMOTE\tDIRECTION\tSTATUS\tNAME")
	for _, c := range cs {
		dir := "out"
		if c.Accepted {
			dir = "in"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Transport, c.Worker, c.Remote, dir, upText(c.Up), orDash(nonEmpty(c.Name)))
	}
	return w.Flush()
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// findListener finds a listener by id, address or route text.
func findListener(ls []api.Listener, transport, id string) *api.Listener {
	for i, l := range ls {
		if transport != "" && l.Transport != transport {
			continue
		}
		if l.ID == id || l.Address == id || l.Route() == id || l.Name != "" && l.Name == id {
			return &ls[i]
		}
	}
	return nil
}

func (a *app) newListenerCmd(lc linkCmd) *cobra.Command {
	short := "Create, list, show and delete listeners of any transport"
	if lc.transport != "" {
		short = fmt.Sprintf("Create, list, show and delete %ss (the same as ferry listener ... --transport %s)", lc.what, lc.transport)
	}
	cmd := &cobra.Command{Use: lc.use, Short: short}
	var at string
	var f linkFlags
	create := &cobra.Command{
		Use:   "create ADDRESS --at NODE" + map[bool]string{true: " --transport NAME", false: ""}[lc.transport == ""],
		Short: "Listen for links from other nodes at ADDRESS, in the transport's own syntax (input reaches only the --allow workers)",
		Example: map[bool]string{true: `  ferry listener create 127.0.0.1:7000 --at n1 --transport udp
  ferry listener create /tmp/n1.sock --at n1 --transport unix --allow echo`, false: "  ferry " + lc.use + " create 127.0.0.1:7000 --at n1"}[lc.transport == ""],
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireAt(at); err != nil {
				return err
			}
			req, err := f.request(lc, args[0])
			if err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			l, err := c.CreateListener(cmd.Context(), req)
			if err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				cfg.Listeners = append(cfg.Listeners, state.Listener{Transport: req.Transport, Address: req.Address, Allow: req.Allow, Settings: req.Settings})
			}); err != nil {
				return fmt.Errorf("listener created, but saving it for the next start failed: %w", err)
			}
			if a.json() {
				return a.printJSON(l)
			}
			a.printf("Listening on %s (id %s, %s) at node %s; network input may reach %s\n", l.Route(), l.ID, linkText(l.Transport, l.Address), at, strings.Join(l.Allow, " "))
			return nil
		},
	}
	f.add(create, lc)
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List a node's " + lc.what + "s",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			all, err := c.Listeners(cmd.Context())
			if err != nil {
				return err
			}
			ls := slices.DeleteFunc(all, func(l api.Listener) bool { return lc.transport != "" && l.Transport != lc.transport })
			if a.json() {
				return a.printJSON(ls)
			}
			return printListeners(a.stdout, ls)
		},
	}
	show := &cobra.Command{
		Use:   "show ID|ADDRESS --at NODE",
		Short: "Show a listener with the properties and counters its transport reports",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			ls, err := c.Listeners(cmd.Context())
			if err != nil {
				return err
			}
			found := findListener(ls, lc.transport, args[0])
			if found == nil {
				return fmt.Errorf("node %s has no %s %q; see ferry %s list --at %s", at, lc.what, args[0], lc.use, at)
			}
			l, err := c.Listener(cmd.Context(), found.ID)
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(l)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "ID:\t%s\n", l.ID)
			if l.Name != "" {
				fmt.Fprintf(w, "Name:\t%s\n", l.Name)
			}
			fmt.Fprintf(w, "Transport:\t%s\n", l.Transport)
			fmt.Fprintf(w, "Address:\t%s\n", l.Address)
			fmt.Fprintf(w, "Route:\t%s\n", l.Route())
			fmt.Fprintf(w, "Status:\t%s\n", upText(l.Up))
			fmt.Fprintf(w, "Default:\t%v\n", l.Default)
			fmt.Fprintf(w, "Allows:\t%s\n", orDash(l.Allow))
			for _, k := range slices.Sorted(maps.Keys(l.Properties)) {
				fmt.Fprintf(w, "%s:\t%s\n", k, l.Properties[k])
			}
			for _, k := range slices.Sorted(maps.Keys(l.Counters)) {
				fmt.Fprintf(w, "%s:\t%d\n", k, l.Counters[k])
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID|ADDRESS --at NODE",
		Short: "Close a listener (also at the node's next start)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			ls, err := c.Listeners(cmd.Context())
			if err != nil {
				return err
			}
			found := findListener(ls, lc.transport, args[0])
			if found == nil {
				return fmt.Errorf("node %s has no %s %q; see ferry %s list --at %s", at, lc.what, args[0], lc.use, at)
			}
			if found.Name != "" {
				return a.declaredInFile(at, "listener", found.Name)
			}
			if err := c.DeleteListener(cmd.Context(), found.ID); err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				cfg.Listeners = removeListener(cfg.Listeners, *found)
			}); err != nil {
				return fmt.Errorf("listener closed, but removing it from the node's saved state failed (node start would open it again): %w", err)
			}
			return a.printResult(found, "Deleted %s %s (%s) at node %s\n", lc.what, found.ID, linkText(found.Transport, found.Address), at)
		},
	}
	for _, c := range []*cobra.Command{create, list, show, del} {
		c.Flags().StringVar(&at, "at", "", "node name")
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}

// declaredInFile refuses a change that the node's next start would undo.
func (a *app) declaredInFile(node, kind, name string) error {
	file := "its topology file"
	if h, err := a.home(); err == nil {
		if cfg, err := h.Load(node); err == nil && cfg.ConfigFile != "" {
			file = cfg.ConfigFile
		}
	}
	return fmt.Errorf("%s %q of node %s is declared in %s; remove it there and restart the node (deleting it here would last only until the next start)", kind, name, node, file)
}

// removeListener drops the saved entry that produced l: the same transport
// and its bound or requested address.
func removeListener(cfg []state.Listener, l api.Listener) []state.Listener {
	for _, want := range []string{l.Address, l.Requested} {
		if want == "" {
			continue
		}
		for i, c := range cfg {
			if c.Transport == l.Transport && c.Address == want {
				return append(cfg[:i:i], cfg[i+1:]...)
			}
		}
	}
	return cfg
}

func (a *app) newConnectionCmd(lc linkCmd) *cobra.Command {
	short := "Create, list and delete connections to other nodes over any transport"
	if lc.transport != "" {
		short = fmt.Sprintf("Create, list and delete %ss (the same as ferry connection ... --transport %s)", lc.what, lc.transport)
	}
	cmd := &cobra.Command{Use: lc.use, Short: short}
	var from, to, at string
	var f linkFlags
	create := &cobra.Command{
		Use:   "create --from NODE --to ADDRESS|/node/NAME" + map[bool]string{true: " --transport NAME", false: ""}[lc.transport == ""],
		Short: "Connect a node to another node's listener; prints the connection's worker address for routes",
		Example: map[bool]string{true: `  ferry connection create --from n1 --transport udp --to 127.0.0.1:7000
  ferry connection create --from n1 --to /node/n2`, false: "  ferry " + lc.use + " create --from n1 --to /node/n2"}[lc.transport == ""],
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return errors.New("say which node connects with --from NAME; see ferry node list")
			}
			if to == "" {
				return errors.New("say where to connect with --to ADDRESS (in the transport's syntax) or /node/NAME")
			}
			if lc.check != nil && !strings.HasPrefix(to, "/") {
				if err := lc.check(to); err != nil {
					return err
				}
			}
			c, st, err := a.connect(cmd.Context(), from)
			if err != nil {
				return err
			}
			defer c.Close()
			transport := lc.transport
			if transport == "" {
				transport = f.transport
			}
			addr := to
			if strings.HasPrefix(to, "/") {
				r, err := routing.ParseRoute(to)
				if err == nil && len(r) == 1 && r[0].Type == api.NodeType {
					h, herr := a.home()
					if herr != nil {
						return herr
					}
					l, err := resolveNodeListener(cmd, h, r[0].Value, transport, st.Transports)
					if err != nil {
						return err
					}
					addr, transport = l.Address, l.Transport
				} else if err == nil && len(r) == 1 && !r[0].IsLocal() && (transport == "" || transport == r[0].Type) {
					// /TYPE/ADDRESS names the plugin serving TYPE.
					addr, transport = r[0].Value, r[0].Type
				} else if lc.check != nil || err == nil {
					return fmt.Errorf("--to %s: want an address, /%s/ADDRESS or /node/NAME", to, orWord(transport, "TYPE"))
				}
			}
			f.transport = transport
			req, err := f.request(linkCmd{transport: lc.transport, check: lc.check}, addr)
			if err != nil {
				return err
			}
			conn, err := c.CreateConnection(cmd.Context(), req)
			if err != nil {
				return err
			}
			if err := a.withConfig(from, func(cfg *state.NodeConfig) {
				cfg.Connections = append(cfg.Connections, state.Connection{ID: conn.ID, Transport: req.Transport, Address: req.Address, Allow: req.Allow, Settings: req.Settings})
			}); err != nil {
				return fmt.Errorf("connection %s is up but was not saved (node start will not restore it): %w", conn.Worker, err)
			}
			if a.json() {
				return a.printJSON(conn)
			}
			a.printf("%s\n", conn.Worker)
			return nil
		},
	}
	f.add(create, lc)
	create.Flags().StringVar(&from, "from", "", "node that connects")
	create.Flags().StringVar(&to, "to", "", "address of another node's listener, or /node/NAME")
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List a node's " + lc.what + "s (dialled and accepted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			all, err := c.Connections(cmd.Context())
			if err != nil {
				return err
			}
			cs := slices.DeleteFunc(all, func(c api.Connection) bool { return lc.transport != "" && c.Transport != lc.transport })
			if a.json() {
				return a.printJSON(cs)
			}
			return printConnections(a.stdout, cs)
		},
	}
	del := &cobra.Command{
		Use:   "delete ID|WORKER --at NODE",
		Short: "Close a connection (also at the node's next start)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			cs, err := c.Connections(cmd.Context())
			if err != nil {
				return err
			}
			var found *api.Connection
			for i, cn := range cs {
				if (lc.transport == "" || cn.Transport == lc.transport) && (cn.ID == args[0] || cn.Worker == args[0]) {
					found = &cs[i]
				}
			}
			if found == nil {
				return fmt.Errorf("node %s has no %s %q; see ferry %s list --at %s", at, lc.what, args[0], lc.use, at)
			}
			if found.Name != "" {
				return a.declaredInFile(at, "connection", found.Name)
			}
			if err := c.DeleteConnection(cmd.Context(), found.ID); err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				cfg.Connections = slices.DeleteFunc(cfg.Connections, func(sc state.Connection) bool { return sc.ID == found.ID })
			}); err != nil {
				return fmt.Errorf("connection %s is closed but still saved (node start would restore it): %w", args[0], err)
			}
			return a.printResult(map[string]string{"deleted": found.ID, "worker": found.Worker}, "Deleted %s %s (%s) at node %s\n", lc.what, found.ID, found.Worker, at)
		},
	}
	for _, c := range []*cobra.Command{list, del} {
		c.Flags().StringVar(&at, "at", "", "node name")
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func orWord(s, w string) string {
	if s == "" {
		return w
	}
	return s
}

// resolveNodeListener finds the listener of node name a connection from a
// node running transports have should use.
func resolveNodeListener(cmd *cobra.Command, h *state.Home, name, transport string, have []string) (api.Listener, error) {
	return api.NodeListener(cmd.Context(), h, name, transport, have)
}
