package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

// requireAt fails clearly when --at is missing.
func requireAt(at string) error {
	if at == "" {
		return fmt.Errorf("say which node with --at NAME; see ferry node list")
	}
	return state.ValidName(at)
}

// connectAt checks --at and connects to that node's control API.
func (a *app) connectAt(ctx context.Context, at string) (*api.Client, error) {
	if err := requireAt(at); err != nil {
		return nil, err
	}
	c, _, err := a.connect(ctx, at)
	return c, err
}

// withConfig changes node name's saved configuration under its lock, so a
// restart starts what was started by hand.
func (a *app) withConfig(name string, change func(*state.NodeConfig)) error {
	h, err := a.home()
	if err != nil {
		return err
	}
	l, err := h.Lock(name, lockTimeout)
	if err != nil {
		return err
	}
	defer l.Unlock()
	cfg, err := h.Load(name)
	if err != nil {
		return err
	}
	change(cfg)
	return h.Save(cfg)
}

func (a *app) newWorkerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Short: "Inspect workers"}
	var at string
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List the addresses of every worker on a node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			ws, err := c.Workers(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				if ws == nil {
					ws = []api.Worker{}
				}
				return a.printJSON(ws)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ADDRESS\tKIND")
			for _, wk := range ws {
				fmt.Fprintf(w, "%s\t%s\n", strings.Join(wk.Addresses, " "), kindOr(wk.Kind))
			}
			return w.Flush()
		},
	}
	list.Flags().StringVar(&at, "at", "", "node name")
	cmd.AddCommand(list)
	return cmd
}

func (a *app) newServiceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "List and start services"}
	var at string
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List the type and address of each service on a node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			ss, err := c.Services(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				if ss == nil {
					ss = []api.Service{}
				}
				return a.printJSON(ss)
			}
			// TYPE and ADDRESS are the listing scripts read; a LIMITS
			// column is added only when a service has a limit that is not
			// the default, so the usual listing keeps its two columns.
			limits := make([]string, len(ss))
			anyLimits := false
			for i, s := range ss {
				var l []string
				if len(s.Authorized) > 0 {
					l = append(l, fmt.Sprintf("authorized: %s", strings.Join(s.Authorized, ", ")))
				}
				if s.MaxRegistrations > 0 && s.MaxRegistrations != relays.DefaultMaxRegistrations {
					l = append(l, fmt.Sprintf("max registrations: %d", s.MaxRegistrations))
				}
				limits[i] = strings.Join(l, "; ")
				anyLimits = anyLimits || len(l) > 0
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			if !anyLimits {
				fmt.Fprintln(w, "TYPE\tADDRESS")
				for _, s := range ss {
					fmt.Fprintf(w, "%s\t%s\n", s.Type, s.Address)
				}
				return w.Flush()
			}
			fmt.Fprintln(w, "TYPE\tADDRESS\tLIMITS")
			for i, s := range ss {
				fmt.Fprintf(w, "%s\t%s\t%s\n", s.Type, s.Address, dash(limits[i]))
			}
			return w.Flush()
		},
	}
	list.Flags().StringVar(&at, "at", "", "node name")
	var startAt, addr string
	var authorized []string
	var maxRegistrations int
	start := &cobra.Command{
		Use:   "start TYPE --at NODE [--authorized IDENTIFIER]... [--max-registrations N (relay)]",
		Short: "Start a built-in service (echo, uppercase, hop) on a node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireAt(startAt); err != nil {
				return err
			}
			if cmd.Flags().Changed("max-registrations") {
				if args[0] != "relay" {
					return fmt.Errorf("--max-registrations applies to the relay service only, not %q", args[0])
				}
				if maxRegistrations < 1 || maxRegistrations > state.MaxRegistrationsLimit {
					return fmt.Errorf("--max-registrations %d: want a number from 1 to %d (default %d)", maxRegistrations, state.MaxRegistrationsLimit, relays.DefaultMaxRegistrations)
				}
			}
			c, _, err := a.connect(cmd.Context(), startAt)
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := c.StartService(cmd.Context(), api.StartServiceRequest{Type: args[0], Address: addr, Authorized: authorized, MaxRegistrations: maxRegistrations})
			if err != nil {
				return err
			}
			// Save the address's value, not its route text: "a b" is
			// /service/a%20b in text, and saving the text would escape it
			// again at the next start.
			sa, err := routing.ParseAddress(s.Address)
			if err != nil {
				return fmt.Errorf("service started at %s, which the node's reply does not parse as an address: %w", s.Address, err)
			}
			local := sa.Value
			if err := a.withConfig(startAt, func(cfg *state.NodeConfig) {
				saved := state.Service{Type: s.Type, Address: local, Authorized: s.Authorized}
				if s.Type == "relay" {
					// One relay service per node: this one replaces the
					// saved one, keeping a cap set earlier unless given.
					saved.MaxRegistrations = maxRegistrations
					cfg.Services = slices.DeleteFunc(cfg.Services, func(o state.Service) bool {
						if o.Type == "relay" && saved.MaxRegistrations == 0 {
							saved.MaxRegistrations = o.MaxRegistrations
						}
						return o.Type == "relay"
					})
				}
				cfg.Services = append(cfg.Services, saved)
			}); err != nil {
				return fmt.Errorf("service started, but saving it for the next start failed: %w", err)
			}
			return a.printResult(s, "Started %s service at %s on node %s\n", s.Type, s.Address, startAt)
		},
	}
	start.Flags().StringVar(&startAt, "at", "", "node name")
	start.Flags().StringVar(&addr, "address", "", "address for the service (default: its type, e.g. /service/hop)")
	start.Flags().StringArrayVar(&authorized, "authorized", nil, "only messages through a secure channel from this identifier reach the service (repeatable)")
	start.Flags().IntVar(&maxRegistrations, "max-registrations", 0, fmt.Sprintf("relay only: most names the relay service holds; a new name beyond it is refused (default %d, at most %d)", relays.DefaultMaxRegistrations, state.MaxRegistrationsLimit))
	cmd.AddCommand(list, start)
	return cmd
}
