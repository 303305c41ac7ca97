package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

// portalKind describes tcp-inlet or tcp-outlet for the shared list, show
// and delete commands.
type portalKind struct {
	name   string // tcp-inlet
	list   func(c *api.Client, ctx context.Context) ([]api.Portal, error)
	delete func(c *api.Client, ctx context.Context, id string) error
	forget func(cfg *state.NodeConfig, p api.Portal)
}

func (a *app) newTCPOutletCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-outlet", Short: "Create, list, show and delete TCP portal outlets (they dial a target for each session)"}
	var at, from, to string
	var secure bool
	var maxSessions int
	create := &cobra.Command{
		Use:   "create --at NODE [--from /service/outlet] --to HOST:PORT [--secure] [--max-sessions N]",
		Short: "Start an outlet worker that dials HOST:PORT for every portal session opened to it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireAt(at); err != nil {
				return err
			}
			if to == "" {
				return errors.New("say what the outlet connects to with --to HOST:PORT")
			}
			if err := checkHostPort(to); err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if err := checkMaxSessions(cmd, maxSessions); err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			p, err := c.CreateOutlet(cmd.Context(), api.CreateOutletRequest{Address: from, Target: to, Secure: secure, MaxSessions: maxSessions})
			if err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				cfg.Outlets = slices.DeleteFunc(cfg.Outlets, func(o state.Outlet) bool { return o.Address == p.ID })
				cfg.Outlets = append(cfg.Outlets, state.Outlet{Address: p.ID, Target: to, Secure: secure, MaxSessions: maxSessions})
			}); err != nil {
				return fmt.Errorf("outlet created, but saving it for the next start failed: %w", err)
			}
			if a.json() {
				return a.printJSON(p)
			}
			a.printf("Outlet %s at node %s connects each portal session to %s\n", p.ID, at, p.Target)
			return nil
		},
	}
	create.Flags().StringVar(&at, "at", "", "node name")
	create.Flags().StringVar(&from, "from", "/service/outlet", "the outlet's local address, where inlets' routes end")
	create.Flags().StringVar(&to, "to", "", "HOST:PORT the outlet connects to")
	create.Flags().BoolVar(&secure, "secure", false, "accept sessions only through a secure channel (inlets made with tcp-inlet create --secure)")
	create.Flags().IntVar(&maxSessions, "max-sessions", 0, fmt.Sprintf("most sessions open at once (each dials the target); more are refused (default %d, at most %d)", portals.DefaultMaxSessions, state.MaxSessionsLimit))
	k := portalKind{
		name:   "tcp-outlet",
		list:   (*api.Client).Outlets,
		delete: (*api.Client).DeleteOutlet,
		forget: func(cfg *state.NodeConfig, p api.Portal) {
			cfg.Outlets = slices.DeleteFunc(cfg.Outlets, func(o state.Outlet) bool { return o.Address == p.ID })
		},
	}
	cmd.AddCommand(create)
	cmd.AddCommand(a.portalSubcommands(k)...)
	return cmd
}

func (a *app) newTCPInletCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-inlet", Short: "Create, list, show and delete TCP portal inlets (they carry accepted connections to an outlet)"}
	var at, from, to string
	var secure bool
	var sessionTimeout string
	var maxSessions int
	create := &cobra.Command{
		Use:   "create --at NODE --from HOST:PORT --to ROUTE [--secure] [--max-sessions N]",
		Short: "Listen on HOST:PORT and carry each accepted TCP connection along ROUTE to an outlet",
		Long: `Listen on HOST:PORT and carry each accepted TCP connection along ROUTE to an outlet.

  ferry tcp-inlet create --at n1 --from 127.0.0.1:6000 \
      --to /worker/<n1's connection to n2>/service/forward_to_n3/service/hop/service/outlet

With --secure, sessions travel inside a secure channel to the outlet's node: the inlet opens one
to ROUTE without its last address (the outlet) followed by /service/api, and sends sessions
through it to the outlet, so relays on the way see only ciphertext:

  ferry tcp-inlet create --at n1 --from 127.0.0.1:6000 --secure \
      --to /worker/<n1's connection to n2>/service/forward_to_n3/service/outlet

/node/NAME hops in ROUTE go over one of NAME's listeners. Until the outlet answers for the first
time, clients wait (up to 30s after creation) instead of being refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireAt(at); err != nil {
				return err
			}
			if from == "" {
				return errors.New("say where the inlet listens with --from HOST:PORT, e.g. 127.0.0.1:6000")
			}
			if err := checkHostPort(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if to == "" {
				return errors.New("say where sessions go with --to ROUTE, ending at an outlet, e.g. --to /node/n3/service/outlet")
			}
			route, err := routing.ParseRoute(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if len(route) == 0 {
				return errors.New("--to: the route is empty; end it at an outlet such as /service/outlet")
			}
			if err := checkMaxSessions(cmd, maxSessions); err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			p, err := c.CreateInlet(cmd.Context(), api.CreateInletRequest{Address: from, Route: route.String(), Secure: secure, SessionTimeout: sessionTimeout, MaxSessions: maxSessions})
			if err != nil {
				return err
			}
			if err := a.withConfig(at, func(cfg *state.NodeConfig) {
				cfg.Inlets = slices.DeleteFunc(cfg.Inlets, func(i state.Inlet) bool { return i.Address == p.ID })
				// The bound address: a restart listens on the same port.
				cfg.Inlets = append(cfg.Inlets, state.Inlet{Address: p.ID, Route: route.String(), Secure: secure, SessionTimeout: sessionTimeout, MaxSessions: maxSessions})
			}); err != nil {
				return fmt.Errorf("inlet created, but saving it for the next start failed: %w", err)
			}
			if a.json() {
				return a.printJSON(p)
			}
			a.printf("Inlet %s at node %s carries each connection to %s (%s)\n", p.ID, at, p.Route, p.State)
			return nil
		},
	}
	create.Flags().StringVar(&at, "at", "", "node name")
	create.Flags().StringVar(&from, "from", "", "HOST:PORT to listen on")
	create.Flags().StringVar(&to, "to", "", "route to the outlet")
	create.Flags().BoolVar(&secure, "secure", false, "carry sessions inside a secure channel to the outlet's node")
	create.Flags().StringVar(&sessionTimeout, "session-timeout", "", "how long a session waits for a broken path to come back before its client is closed (default 30s)")
	create.Flags().IntVar(&maxSessions, "max-sessions", 0, fmt.Sprintf("most clients (sessions) at once; one more is reset at once (default %d, at most %d)", portals.DefaultMaxSessions, state.MaxSessionsLimit))
	k := portalKind{
		name:   "tcp-inlet",
		list:   (*api.Client).Inlets,
		delete: (*api.Client).DeleteInlet,
		forget: func(cfg *state.NodeConfig, p api.Portal) {
			cfg.Inlets = slices.DeleteFunc(cfg.Inlets, func(i state.Inlet) bool { return i.Address == p.ID })
		},
	}
	cmd.AddCommand(create)
	cmd.AddCommand(a.portalSubcommands(k)...)
	return cmd
}

// checkMaxSessions refuses a --max-sessions given outside 1..limit.
func checkMaxSessions(cmd *cobra.Command, n int) error {
	if !cmd.Flags().Changed("max-sessions") {
		return nil
	}
	if n < 1 || n > state.MaxSessionsLimit {
		return fmt.Errorf("--max-sessions %d: want a number from 1 to %d (default %d)", n, state.MaxSessionsLimit, portals.DefaultMaxSessions)
	}
	return nil
}

// find returns the portal whose id (or name in the topology file) is id;
// an outlet may also be named by its bare address ("outlet").
func findPortal(ps []api.Portal, id string) (api.Portal, bool) {
	for _, p := range ps {
		if p.ID == id || (p.Name != "" && p.Name == id) || p.ID == routing.Local(id).String() {
			return p, true
		}
	}
	return api.Portal{}, false
}

func (a *app) portalSubcommands(k portalKind) []*cobra.Command {
	var at string
	with := func(cmd *cobra.Command, f func(c *api.Client, ps []api.Portal) error) error {
		c, err := a.connectAt(cmd.Context(), at)
		if err != nil {
			return err
		}
		defer c.Close()
		ps, err := k.list(c, cmd.Context())
		if err != nil {
			return err
		}
		return f(c, ps)
	}
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List with state and counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return with(cmd, func(_ *api.Client, ps []api.Portal) error {
				if a.json() {
					return a.printJSON(ps)
				}
				w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tTO\tSTATE\tSESSIONS\tMAX\tREFUSED\tBYTES OUT\tBYTES IN\tLAST ERROR")
				for _, p := range ps {
					dest := p.Route
					if dest == "" {
						dest = p.Target
					}
					fmt.Fprintf(w, "%s%s\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%s\n", p.ID, named(p.Name), dest, p.State, p.ActiveSessions, p.TotalSessions, p.MaxSessions, p.Refused, p.BytesOut, p.BytesIn, dash(p.LastError))
				}
				return w.Flush()
			})
		},
	}
	show := &cobra.Command{
		Use:   "show ID --at NODE",
		Short: "Show one with state and counters",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return with(cmd, func(_ *api.Client, ps []api.Portal) error {
				p, ok := findPortal(ps, args[0])
				if !ok {
					return fmt.Errorf("node %s has no %s %q; see ferry %s list --at %s", at, k.name, args[0], k.name, at)
				}
				if a.json() {
					return a.printJSON(p)
				}
				w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintf(w, "ID:\t%s\n", p.ID)
				if p.Name != "" {
					fmt.Fprintf(w, "Name:\t%s\n", p.Name)
				}
				if p.Route != "" {
					fmt.Fprintf(w, "Route:\t%s\n", p.Route)
				}
				if p.Target != "" {
					fmt.Fprintf(w, "Target:\t%s\n", p.Target)
				}
				fmt.Fprintf(w, "State:\t%s\n", p.State)
				if p.LastError != "" {
					fmt.Fprintf(w, "Last error:\t%s\n", p.LastError)
				}
				fmt.Fprintf(w, "Sessions:\t%d active, %d total\n", p.ActiveSessions, p.TotalSessions)
				fmt.Fprintf(w, "Max sessions:\t%d (%d refused)\n", p.MaxSessions, p.Refused)
				fmt.Fprintf(w, "Bytes out:\t%d\n", p.BytesOut)
				fmt.Fprintf(w, "Bytes in:\t%d\n", p.BytesIn)
				fmt.Fprintf(w, "Retransmits:\t%d\n", p.Retransmits)
				fmt.Fprintf(w, "Duplicates:\t%d\n", p.Duplicates)
				return w.Flush()
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete ID --at NODE",
		Short: "Stop one and forget it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return with(cmd, func(c *api.Client, ps []api.Portal) error {
				p, ok := findPortal(ps, args[0])
				if !ok {
					return fmt.Errorf("node %s has no %s %q; see ferry %s list --at %s", at, k.name, args[0], k.name, at)
				}
				if p.Name != "" {
					return a.declaredInFile(at, k.name, p.Name)
				}
				if err := k.delete(c, cmd.Context(), p.ID); err != nil {
					return err
				}
				if err := a.withConfig(at, func(cfg *state.NodeConfig) { k.forget(cfg, p) }); err != nil {
					return err
				}
				return a.printResult(map[string]string{"deleted": p.ID}, "Deleted %s %s at node %s\n", k.name, p.ID, at)
			})
		},
	}
	for _, c := range []*cobra.Command{list, show, del} {
		c.Flags().StringVar(&at, "at", "", "node name")
	}
	return []*cobra.Command{list, show, del}
}
