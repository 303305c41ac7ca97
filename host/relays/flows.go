package relays

import (
	"slices"

	"github.com/ferryhq/ferry/host/transports"
)

// ListenerFlows returns a ServiceConfig.Flows function that names the flow of
// every listener of the bindings that allows the relay service at addr
// (ServiceAddress when empty). With it, a forwarder is reachable through
// every listener the relay service is reachable through, not only the one
// its registration came in on.
func ListenerFlows(addr string, bindings ...*transports.Binding) func() []string {
	if addr == "" {
		addr = ServiceAddress
	}
	return func() []string {
		var out []string
		for _, b := range bindings {
			for _, l := range b.Listeners() {
				if slices.Contains(l.Allowed, addr) {
					out = append(out, l.Flow)
				}
			}
		}
		return out
	}
}
