package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/ferryhq/ferry/host/api"
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
