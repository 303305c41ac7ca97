package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/sdk/routing"
)

// nodeType is the pseudo transport type of "/node/NAME" in routes the
// command resolves through the state directory.
const nodeType = api.NodeType

// resolveRoute decides which node sends and rewrites /node/NAME hops:
// a leading /node/NAME without --from means "NAME sends the rest"; any
// other /node/NAME hop becomes the address of one of NAME's listeners that
// the sender can reach (api.ResolveNode).
func (a *app) resolveRoute(ctx context.Context, from string, route routing.Route) (string, routing.Route, error) {
	if len(route) == 0 {
		return "", nil, errors.New("the route is empty; say where the message goes, e.g. --to /node/n1/service/echo")
	}
	if first := route[0]; first.Type == nodeType {
		if from == "" || from == first.Value {
			from, route = first.Value, route[1:]
		}
	}
	if from == "" {
		return "", nil, errors.New("say which node sends the message: start the route with /node/NAME, or pass --from NAME")
	}
	if len(route) == 0 {
		return "", nil, fmt.Errorf("the route ends at node %s; add where on it the message goes, e.g. /node/%s/service/echo", from, from)
	}
	if !slices.ContainsFunc(route, func(a routing.Address) bool { return a.Type == nodeType }) {
		return from, route, nil
	}
	h, err := a.home()
	if err != nil {
		return "", nil, err
	}
	c, st, err := a.connect(ctx, from)
	if err != nil {
		return "", nil, err
	}
	c.Close()
	out := make(routing.Route, 0, len(route))
	for _, hop := range route {
		if hop.Type == nodeType {
			if hop, err = api.ResolveNode(ctx, h, hop.Value, "", st.Transports); err != nil {
				return "", nil, err
			}
		}
		out = append(out, hop)
	}
	return from, out, nil
}

func (a *app) newMessageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "message", Short: "Send messages along routes"}
	var from, to string
	var timeout time.Duration
	send := &cobra.Command{
		Use:   "send PAYLOAD --to ROUTE [--from NODE]",
		Short: "Send a message and print the reply",
		Long: `Send PAYLOAD along ROUTE and print the first reply.

A route starting with /node/NAME is sent by node NAME (ferry message send hi --to /node/n1/service/echo).
With --from OTHER the message is sent by OTHER, and a /node/NAME hop goes to one of NAME's
listeners (one of a transport OTHER already runs if it has one, else NAME's default listener).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("say where the message goes with --to ROUTE, e.g. --to /node/n1/service/echo")
			}
			route, err := routing.ParseRoute(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			sender, route, err := a.resolveRoute(cmd.Context(), from, route)
			if err != nil {
				return err
			}
			c, _, err := a.connect(cmd.Context(), sender)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			reply, err := c.Send(ctx, api.SendRequest{Route: route.String(), Payload: []byte(args[0]), Timeout: timeout})
			if err != nil {
				return fmt.Errorf("send from %s along %s: %w", sender, route, err)
			}
			if a.json() {
				return a.printJSON(map[string]any{"from": sender, "route": route.String(), "reply": string(reply.Payload), "return_route": reply.Return})
			}
			a.stdout.Write(append(reply.Payload, '\n'))
			return nil
		},
	}
	send.Flags().StringVar(&from, "from", "", "node that sends the message")
	send.Flags().StringVar(&to, "to", "", "route, e.g. /node/n1/service/uppercase")
	send.Flags().DurationVar(&timeout, "timeout", api.DefaultSendTimeout, "how long to wait for the reply")
	cmd.AddCommand(send)
	return cmd
}
