package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

func checkHostPort(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("address %q: want host:port such as 127.0.0.1:4000 (%v)", addr, err)
	}
	return nil
}

func (a *app) newTCPListenerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-listener", Short: "Create, list and delete TCP listeners"}
	var at string
	create := &cobra.Command{
		Use:   "create ADDRESS --at NODE",
		Short: "Listen for TCP connections from other nodes (input reaches only echo, uppercase, hop, relay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireAt(at); err != nil {
				return err
			}
			if err := checkHostPort(args[0]); err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			l, err := c.CreateListener(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) { cfg.Listeners = append(cfg.Listeners, args[0]) }); err != nil {
				return fmt.Errorf("listener created, but saving it for the next start failed: %w", err)
			}
			if a.json() {
				return a.printJSON(l)
			}
			a.printf("Listening on /tcp/%s (id %s) at node %s\n", l.Address, l.ID, at)
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List TCP listeners",
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
			ls := []api.Listener{}
			for _, l := range all {
				if l.Transport == "tcp" {
					ls = append(ls, l)
				}
			}
			if a.json() {
				return a.printJSON(ls)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tADDRESS\tALLOWS")
			for _, l := range ls {
				fmt.Fprintf(w, "%s\t/tcp/%s\t%s\n", l.ID, l.Address, strings.Join(l.Allow, " "))
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID|ADDRESS --at NODE",
		Short: "Close a TCP listener",
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
			var found *api.Listener
			for i, l := range ls {
				if l.ID == args[0] || l.Address == args[0] || "/tcp/"+l.Address == args[0] {
					found = &ls[i]
				}
			}
			if found == nil {
				return fmt.Errorf("node %s has no tcp listener %q; see ferry tcp-listener list --at %s", at, args[0], at)
			}
			if err := c.DeleteListener(cmd.Context(), found.ID); err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				if found.Default {
					// Keep the node reachable as configured at its next
					// start; deleting closes it for this run only.
					return
				}
				cfg.Listeners = removeListener(cfg.Listeners, found.Address)
			}); err != nil {
				return err
			}
			return a.printResult(found, "Deleted tcp listener %s (/tcp/%s) at node %s\n", found.ID, found.Address, at)
		},
	}
	for _, c := range []*cobra.Command{create, list, del} {
		c.Flags().StringVar(&at, "at", "", "node name")
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// removeListener drops the configured entry that produced bound: the same
// address, or the same host with port 0.
func removeListener(cfg []string, bound string) []string {
	host, _, _ := net.SplitHostPort(bound)
	for i, c := range cfg {
		if c == bound {
			return append(cfg[:i:i], cfg[i+1:]...)
		}
	}
	for i, c := range cfg {
		if h, p, err := net.SplitHostPort(c); err == nil && h == host && p == "0" {
			return append(cfg[:i:i], cfg[i+1:]...)
		}
	}
	return cfg
}

func (a *app) newTCPConnectionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-connection", Short: "Create, list and delete TCP connections to other nodes"}
	var from, to, at string
	create := &cobra.Command{
		Use:   "create --from NODE --to ADDRESS|/node/NAME",
		Short: "Connect a node to another node's TCP listener; prints the connection's worker address for routes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return errors.New("say which node connects with --from NAME; see ferry node list")
			}
			if to == "" {
				return errors.New("say where to connect with --to HOST:PORT (or /node/NAME)")
			}
			addr := to
			if strings.HasPrefix(to, "/") {
				r, err := routing.ParseRoute(to)
				if err != nil {
					return fmt.Errorf("--to: %w", err)
				}
				switch {
				case len(r) == 1 && r[0].Type == nodeType:
					if addr, err = a.nodeListener(cmd.Context(), r[0].Value); err != nil {
						return err
					}
				case len(r) == 1 && r[0].Type == "tcp":
					addr = r[0].Value
				default:
					return fmt.Errorf("--to %s: want HOST:PORT, /tcp/HOST:PORT or /node/NAME", to)
				}
			}
			if err := checkHostPort(addr); err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), from)
			if err != nil {
				return err
			}
			defer c.Close()
			conn, err := c.CreateConnection(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if err := a.withConfig(from, func(cfg *state.NodeConfig) {
				cfg.Connections = append(cfg.Connections, state.Connection{ID: conn.ID, Address: addr})
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
	create.Flags().StringVar(&from, "from", "", "node that connects")
	create.Flags().StringVar(&to, "to", "", "HOST:PORT of another node's listener, or /node/NAME")
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List a node's TCP connections (dialled and accepted)",
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
			cs := []api.Connection{}
			for _, cn := range all {
				if cn.Transport == "tcp" {
					cs = append(cs, cn)
				}
			}
			if a.json() {
				return a.printJSON(cs)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tWORKER\tREMOTE\tDIRECTION\tUP")
			for _, cn := range cs {
				dir := "out"
				if cn.Accepted {
					dir = "in"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\n", cn.ID, cn.Worker, cn.Remote, dir, cn.Up)
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID|WORKER --at NODE",
		Short: "Close a TCP connection",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.DeleteConnection(cmd.Context(), args[0]); err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				cfg.Connections = slices.DeleteFunc(cfg.Connections, func(sc state.Connection) bool {
					return sc.ID == args[0] || routing.Local(sc.ID).String() == args[0]
				})
			}); err != nil {
				return fmt.Errorf("connection %s is closed but still saved (node start would restore it): %w", args[0], err)
			}
			return a.printResult(map[string]string{"deleted": args[0]}, "Deleted tcp connection %s at node %s\n", args[0], at)
		},
	}
	for _, c := range []*cobra.Command{list, del} {
		c.Flags().StringVar(&at, "at", "", "node name")
	}
	cmd.AddCommand(create, list, del)
	return cmd
}
