package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

func (a *app) newSecureChannelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secure-channel",
		Short: "End-to-end encrypted, mutually authenticated channels over any route",
	}
	var from, to string
	var authorized []string
	var timeout time.Duration
	create := &cobra.Command{
		Use:   "create --from NODE --to ROUTE/service/api [--authorized IDENTIFIER]",
		Short: "Create a secure channel and print its address",
		Long: `Create a secure channel from NODE to the secure channel listener at the end of ROUTE
(every node runs one at /service/api) and print the channel's address, /worker/<id>.
A message sent to /worker/<id>/rest/of/route travels encrypted to the far node and continues
along rest/of/route there; replies come back through the channel. Relays and bridges on the
way see ciphertext only.

The channel is kept under that address until deleted: when the far node restarts (or the
channel dies otherwise) it is opened again, and it is saved with NODE's state and restored at
its next start, so routes through /worker/<id> keep working.

  ferry secure-channel create --from n1 --to /node/n2/service/api
  ferry message send hello --from n1 --to /worker/<id>/service/uppercase

With --authorized the channel is made only if the far node proves one of those identifiers
(ferry identity show NAME prints one).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("say where the listener is with --to ROUTE, e.g. --to /node/n2/service/api")
			}
			route, err := routing.ParseRoute(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			// Resolved here to fail early in the command's words; the node
			// gets the route as given and resolves /node/NAME hops again
			// before every re-open (the far node may come back elsewhere).
			sender, _, err := a.resolveRoute(cmd.Context(), from, route)
			if err != nil {
				return err
			}
			if route[0].Type == nodeType && route[0].Value == sender {
				route = route[1:]
			}
			c, _, err := a.connect(cmd.Context(), sender)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			info, err := c.CreateSecureChannel(ctx, api.CreateSecureChannelRequest{Route: route.String(), Authorized: authorized, Timeout: timeout})
			if err != nil {
				return fmt.Errorf("secure channel from %s: %w", sender, err)
			}
			if err := a.withConfig(sender, func(cfg *state.NodeConfig) {
				cfg.SecureChannels = append(cfg.SecureChannels, state.SecureChannel{Address: info.Address, Route: route.String(), Authorized: authorized})
			}); err != nil {
				return fmt.Errorf("secure channel %s created, but saving it for the next start failed: %w", info.Address, err)
			}
			if a.json() {
				return a.printJSON(info)
			}
			a.printf("%s\n", info.Address)
			return nil
		},
	}
	create.Flags().StringVar(&from, "from", "", "node that creates the channel")
	create.Flags().StringVar(&to, "to", "", "route to the far node's secure channel listener, e.g. /node/n2/service/api")
	create.Flags().StringArrayVar(&authorized, "authorized", nil, "identifier the far node must prove (repeatable; default: any identity)")
	create.Flags().DurationVar(&timeout, "timeout", securechannel.DefaultHandshakeTimeout, "how long the handshake may take")
	cmd.AddCommand(create)

	var at string
	list := &cobra.Command{
		Use:   "list --at NODE",
		Short: "List a node's secure channels (created and accepted) and its identity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connectAt(cmd.Context(), at)
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := c.SecureChannels(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(v)
			}
			a.printf("Identity: %s (%s), listener %s\n", v.Identity.Identifier, v.Identity.Name, v.Identity.Listener)
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tROLE\tPEER\tROUTE\tSENT\tDELIVERED\tDROPPED")
			for _, ch := range v.Channels {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", ch.Address, ch.Role, ch.PeerIdentifier, ch.Route, ch.Stats.Sent, ch.Stats.Delivered, ch.Stats.Dropped())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			a.printf("Listener totals: %s\n", v.Listener)
			return nil
		},
	}
	list.Flags().StringVar(&at, "at", "", "node")
	cmd.AddCommand(list)

	var delAt string
	del := &cobra.Command{
		Use:   "delete ADDRESS --at NODE",
		Short: "Close a secure channel (the far end is told and closes too)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connectAt(cmd.Context(), delAt)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.DeleteSecureChannel(cmd.Context(), args[0]); err != nil {
				return err
			}
			if err := a.withConfig(delAt, func(cfg *state.NodeConfig) {
				cfg.SecureChannels = slices.DeleteFunc(cfg.SecureChannels, func(sc state.SecureChannel) bool { return sc.Address == args[0] })
			}); err != nil {
				return fmt.Errorf("secure channel %s closed, but forgetting it for the next start failed: %w", args[0], err)
			}
			if a.json() {
				return a.printJSON(map[string]string{"deleted": args[0]})
			}
			a.printf("closed secure channel %s\n", args[0])
			return nil
		},
	}
	del.Flags().StringVar(&delAt, "at", "", "node")
	cmd.AddCommand(del)
	return cmd
}
