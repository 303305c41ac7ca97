package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/sdk/routing"
)

// withListenerCounters fills in each listener's counters, which the node's
// status leaves out (they come from the transport, one call per listener).
// A listener whose counters cannot be read keeps none.
func withListenerCounters(ctx context.Context, c *api.Client, ls []api.Listener) {
	for i, l := range ls {
		if full, err := c.Listener(ctx, l.ID); err == nil {
			ls[i].Counters = full.Counters
		}
	}
}

// printHopCounters prints one line per listener: the hop's transport,
// state, traffic and losses, so a mixed path shows where it is slow or
// broken without a listener show per hop.
func printHopCounters(out io.Writer, ls []api.Listener) {
	for _, l := range ls {
		var traffic, losses []string
		for _, k := range slices.Sorted(maps.Keys(l.Counters)) {
			s := fmt.Sprintf("%s=%d", k, l.Counters[k])
			switch {
			case isTrafficCounter(k):
				traffic = append(traffic, s)
			case isLossCounter(k):
				losses = append(losses, s)
			}
		}
		line := fmt.Sprintf("  %s %s (%s):", l.Transport, l.Address, strings.ToLower(upText(l.Up)))
		if len(traffic)+len(losses) == 0 {
			fmt.Fprintf(out, "%s no counters reported by the transport\n", line)
			continue
		}
		if len(losses) == 0 {
			losses = []string{"-"}
		}
		fmt.Fprintf(out, "%s %s; losses: %s\n", line, strings.Join(traffic, " "), strings.Join(losses, " "))
	}
}

func isTrafficCounter(k string) bool {
	for _, p := range []string{"bytes_", "messages_", "records_", "datagrams_", "frames_"} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

func isLossCounter(k string) bool {
	for _, s := range []string{"drop", "bad", "duplicate", "timeout", "error", "refused", "lost", "retrans", "corrupt", "crc"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// printPaths prints, for every inlet of the nodes started together, the
// path its sessions take: each hop with its transport, the node at either
// end and the connection's state, then where the route ends. Counters are
// per listener in ferry node show.
func printPaths(out io.Writer, views []nodeView) {
	type conn struct {
		node string
		c    api.Connection
	}
	conns := map[string]conn{}       // worker address -> connection
	listeners := map[string]string{} // transport + " " + address -> node
	relayed := map[string]string{}   // forward_to_NAME -> the node that registered it
	for _, v := range views {
		if v.Relays != nil {
			for _, r := range v.Relays.Registrations {
				relayed["forward_to_"+r.Name] = v.Name
			}
		}
		for _, c := range v.Connections {
			conns[c.Worker] = conn{v.Name, c}
		}
		for _, l := range v.Listeners {
			listeners[l.Transport+" "+l.Address] = v.Name
		}
	}
	for _, v := range views {
		for _, in := range v.Inlets {
			r, err := routing.ParseRoute(in.Route)
			if err != nil {
				continue
			}
			fmt.Fprintf(out, "Path of inlet %s on %s:\n", in.ID, v.Name)
			if via, err := routing.ParseRoute(in.ChannelRoute); err == nil && len(via) > 0 && len(r) > 0 && r[0].String() == in.SecureChannel {
				// A secure inlet: its sessions go inside the channel, which
				// takes via (to the far node's listener) over the hops.
				fmt.Fprintf(out, "  (inside secure channel %s to %s)\n", in.SecureChannel, via[len(via)-1])
				r = append(via[:len(via)-1:len(via)-1], r[1:]...)
			}
			cur := v.Name
			for i, a := range r {
				c, ok := conns[a.String()]
				switch {
				case ok && c.node == cur:
					next := listeners[c.c.Transport+" "+c.c.Remote]
					for _, b := range r[i+1:] {
						// A serial connection names its own end of the line, not
						// the listener's: the node is the one whose connection
						// the route uses next.
						if next != "" {
							break
						}
						if nc, ok := conns[b.String()]; ok {
							next = nc.node
						}
					}
					if next == "" {
						next = c.c.Remote
					}
					fmt.Fprintf(out, "  %s ──%s──► %s  (%s %s, %s)\n", cur, c.c.Transport, next, c.c.Worker, linkText(c.c.Transport, c.c.Remote), strings.ToLower(upText(c.c.Up)))
					cur = next
				case a.IsLocal() && relayed[a.Value] != "":
					fmt.Fprintf(out, "  %s ──relay %s──► %s\n", cur, a, relayed[a.Value])
					cur = relayed[a.Value]
				case a.IsLocal():
					fmt.Fprintf(out, "  %s: %s\n", cur, a)
				default:
					fmt.Fprintf(out, "  %s ──%s──► %s\n", cur, a.Type, a.Value)
					cur = a.Value
				}
			}
		}
	}
}
