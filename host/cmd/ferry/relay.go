package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/api/daemon"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

// relayWait bounds how long relay create waits for the first
// acknowledgement before it reports failure (and registers nothing).
const relayWait = 15 * time.Second

// nodeArg accepts NAME or /node/NAME.
func nodeArg(flag, v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("say which node with %s NAME; see ferry node list", flag)
	}
	if strings.HasPrefix(v, "/") {
		r, err := routing.ParseRoute(v)
		if err != nil || len(r) != 1 || r[0].Type != nodeType {
			return "", fmt.Errorf("%s %s: want a node name such as n3 or /node/n3", flag, v)
		}
		v = r[0].Value
	}
	return v, state.ValidName(v)
}

// forwarderRoute is where messages for the relay go: the route to the relay
// service with its last hop replaced by forward_to_NAME.
func forwarderRoute(at routing.Route, name string) routing.Route {
	out := at.Clone()
	if len(out) == 0 {
		return routing.Route{routing.Local(relays.ForwarderAddress(name))}
	}
	out[len(out)-1] = routing.Local(relays.ForwarderAddress(name))
	return out
}

func (a *app) newRelayCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "relay", Short: "Make a node that only dials out reachable through a relay node"}
	var at, to string
	var insecure bool
	create := &cobra.Command{
		Use:   "create NAME --at ROUTE --to NODE [--insecure]",
		Short: "Register forward_to_NAME at the relay service reached by ROUTE; messages to it reach NODE",
		Long: `Node NODE dials out (if needed) and registers forward_to_NAME at the relay service
reached by ROUTE (/node/n2 means n2's relay service over one of its listeners). NODE keeps the
registration alive and registers again when the path breaks or the relay node restarts.

The registration goes through a secure channel from NODE's identity to the relay node's secure
channel listener (ROUTE with /service/api in place of the relay service). The relay node binds
forward_to_NAME to that identity: no other identity can register the name again, delete it or take
its traffic, and what the relay forwards to NODE travels encrypted on that hop. The channel is kept
open and re-opened when the relay node restarts (see ferry secure-channel list --at NODE).

--insecure registers without a secure channel (for a relay node that cannot be reached by one);
the name is then owned through a secret kept in NODE's directory (relay.secret) only, and the relay
hop carries what it forwards as it is.

  ferry relay create n3 --at /node/n2 --to /node/n3`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := relays.ValidName(name); err != nil {
				return err
			}
			node, err := nodeArg("--to", to)
			if err != nil {
				return err
			}
			if at == "" {
				return errors.New("say where the relay runs with --at ROUTE, e.g. --at /node/n2")
			}
			route, err := routing.ParseRoute(at)
			if err != nil {
				return fmt.Errorf("--at: %w", err)
			}
			if len(route) == 0 {
				return errors.New("--at: the route is empty; give the relay node, e.g. --at /node/n2")
			}
			if route[0].Type == nodeType && route[0].Value == node {
				return fmt.Errorf("--at %s starts at node %s itself; give the relay node, e.g. --at /node/n2", at, node)
			}
			route = daemon.RelayServiceRoute(route)
			c, st, err := a.connect(cmd.Context(), node)
			if err != nil {
				return err
			}
			defer c.Close()
			// Fail early, with the CLI's words, when a named node is not up.
			h, err := a.home()
			if err != nil {
				return err
			}
			for _, hop := range route {
				if hop.Type == nodeType {
					if _, err := api.ResolveNode(cmd.Context(), h, hop.Value, "", st.Transports); err != nil {
						return err
					}
				}
			}
			info, err := c.CreateRelay(cmd.Context(), api.CreateRelayRequest{Name: name, At: route.String(), Wait: relayWait, Insecure: insecure})
			if err != nil {
				return fmt.Errorf("relay %s from node %s at %s: %w", name, node, route, err)
			}
			if err := a.withConfig(node, func(cfg *state.NodeConfig) {
				cfg.Relays = slices.DeleteFunc(cfg.Relays, func(r state.Relay) bool { return r.Name == name })
				cfg.Relays = append(cfg.Relays, state.Relay{Name: name, At: route.String(), Insecure: insecure})
			}); err != nil {
				return fmt.Errorf("relay registered, but saving it for the next start failed: %w", err)
			}
			fwd := forwarderRoute(route, name)
			if a.json() {
				return a.printJSON(map[string]any{"relay": info, "forwarder_route": fwd.String(), "node": node})
			}
			a.printf("Relay %s is %s: messages to %s now reach node %s\n", name, info.State, fwd, node)
			a.printf("  registered at %s by %s (kept alive; see ferry relay list --at %s)\n", info.Relay, info.Registrant, node)
			if info.SecureChannel != "" {
				a.printf("  through secure channel %s to the relay node's identity %s; the name belongs to node %s's identity\n", info.SecureChannel, info.RelayIdentifier, node)
			} else {
				a.printf("  without a secure channel (--insecure): the name is owned through node %s's relay secret only\n", node)
			}
			return nil
		},
	}
	create.Flags().StringVar(&at, "at", "", "route to the relay node or its relay service, e.g. /node/n2")
	create.Flags().StringVar(&to, "to", "", "node the relay leads to (it registers and keeps the registration alive)")
	create.Flags().BoolVar(&insecure, "insecure", false, "register without a secure channel to the relay node (the name is owned through a secret only)")

	var listAt string
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List the relays a node registered and the forwarders its relay service runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireAt(listAt); err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), listAt)
			if err != nil {
				return err
			}
			defer c.Close()
			rs, err := c.Relays(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(rs)
			}
			a.printRelays(&rs)
			return nil
		},
	}
	list.Flags().StringVar(&listAt, "at", "", "node name")

	var delAt string
	del := &cobra.Command{
		Use:   "delete NAME --at NODE",
		Short: "Delete a relay: on the registering node for good, on the relay node until it registers again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireAt(delAt); err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), delAt)
			if err != nil {
				return err
			}
			defer c.Close()
			rs, err := c.Relays(cmd.Context())
			if err != nil {
				return err
			}
			registered := slices.ContainsFunc(rs.Registrations, func(r relays.RegistrationInfo) bool { return r.Name == args[0] })
			if registered {
				// A registration the node's topology file declares comes
				// back at its next start: refuse rather than pretend.
				if _, cfg, err := a.loadNode(delAt); err == nil && cfg.ConfigFile != "" &&
					!slices.ContainsFunc(cfg.Relays, func(r state.Relay) bool { return r.Name == args[0] }) {
					return a.declaredInFile(delAt, "relay", args[0])
				}
			}
			delErr := c.DeleteRelay(cmd.Context(), args[0])
			if delErr != nil && (api.IsNotFound(delErr) || !registered) {
				return delErr
			}
			if registered {
				// Forget it even when the relay node could not be told
				// (it is down): the registration is gone from here.
				if err := a.withConfig(delAt, func(cfg *state.NodeConfig) {
					cfg.Relays = slices.DeleteFunc(cfg.Relays, func(r state.Relay) bool { return r.Name == args[0] })
				}); err != nil {
					return err
				}
			}
			if delErr != nil {
				return fmt.Errorf("relay %s deleted at node %s, but the relay node could not be told (%v); its forwarder goes stale, delete it there with ferry relay delete %s --at RELAYNODE", args[0], delAt, delErr, args[0])
			}
			what := "forwarder"
			if registered {
				what = "registration"
			}
			return a.printResult(map[string]string{"deleted": args[0], "kind": what}, "Deleted relay %s %s at node %s\n", what, args[0], delAt)
		},
	}
	del.Flags().StringVar(&delAt, "at", "", "node name")
	cmd.AddCommand(create, list, del)
	return cmd
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}

func (a *app) printRelays(rs *api.Relays) {
	if rs == nil {
		return
	}
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	if len(rs.Registrations) > 0 {
		fmt.Fprintln(w, "REGISTERED HERE\tAT\tSECURE CHANNEL\tSTATE\tLAST OK\tREGISTRATIONS\tFORWARDED\tLAST ERROR")
		for _, r := range rs.Registrations {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Name, r.Relay, secureOrNot(r.SecureChannel), r.State, ago(r.LastSuccess), r.Registrations, r.Forwarded, dash(r.LastError))
		}
	}
	if len(rs.Forwarders) > 0 {
		fmt.Fprintln(w, "FORWARDER\tROUTE BACK\tOWNER\tSTATE\tLAST SEEN\tFORWARDED\tRETURNED\tLAST ERROR")
		for _, f := range rs.Forwarders {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", f.Address, f.RouteBack, owner(f.Identity), f.State, ago(f.LastSeen), f.Forwarded, f.Returned, dash(f.LastError))
		}
	}
	if len(rs.Registrations) == 0 && len(rs.Forwarders) == 0 {
		fmt.Fprintln(w, "no relays")
	}
	w.Flush()
}

// secureOrNot is a registration's secure channel, or insecure.
func secureOrNot(ch string) string {
	if ch == "" {
		return "none (insecure)"
	}
	return ch
}

// owner is the identity a forwarder belongs to, or how it is owned without one.
func owner(id string) string {
	if id == "" {
		return "secret (no channel)"
	}
	return id
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printRelaysAndPortals is node show's part for relays, inlets and outlets.
func (a *app) printRelaysAndPortals(rs *api.Relays, ins, outs []api.Portal) {
	if rs != nil && len(rs.Registrations)+len(rs.Forwarders) > 0 {
		a.printf("Relays:\n")
		for _, r := range rs.Registrations {
			a.printf("  %s  registered at %s  %s%s  registrations %d  forwarded %d\n", r.Name, r.Relay, r.State, lastErr(r.LastError), r.Registrations, r.Forwarded)
		}
		for _, f := range rs.Forwarders {
			a.printf("  %s  for %s via %s  %s%s  forwarded %d  returned %d\n", f.Address, f.Name, f.RouteBack, f.State, lastErr(f.LastError), f.Forwarded, f.Returned)
		}
	}
	if len(ins) > 0 {
		a.printf("TCP inlets:\n")
		for _, p := range ins {
			a.printf("  %s%s  to %s  %s%s  %s\n", p.ID, named(p.Name), p.Route, p.State, lastErr(p.LastError), portalCounters(p))
		}
	}
	if len(outs) > 0 {
		a.printf("TCP outlets:\n")
		for _, p := range outs {
			a.printf("  %s%s  to %s  %s%s  %s\n", p.ID, named(p.Name), p.Target, p.State, lastErr(p.LastError), portalCounters(p))
		}
	}
}

func lastErr(e string) string {
	if e == "" {
		return ""
	}
	return " (" + e + ")"
}

func portalCounters(p api.Portal) string {
	return fmt.Sprintf("sessions %d active/%d total  bytes out %d in %d  retransmits %d duplicates %d", p.ActiveSessions, p.TotalSessions, p.BytesOut, p.BytesIn, p.Retransmits, p.Duplicates)
}
