// Package relays makes a node that only dials out reachable through a node
// that listens.
//
// The relay node runs the relay service (StartService, conventionally at
// /service/relay). A registering node calls Register with a route to that
// service and a name, say n3. The service starts a forwarder worker at
// forward_to_n3 that remembers the return route of the registration, which
// is the path back to the registrant worker on n3, and sends every message
// it receives along that path, stepping itself off the onward route and
// putting its own address at the front of the return route, as a hop does.
// The registrant passes each message on along its onward route, again like a
// hop, so replies find their way back through the registrant and the
// forwarder.
//
// A message that comes back from the registrant side (its return route
// starts with the route back to the registrant) is a reply on its way to the
// original sender; the forwarder passes it on along its onward route instead
// of sending it back to the registrant.
//
// The registrant keeps its registration alive: it pings the relay service
// every CheckInterval, and when the ping fails (the connection dropped, the
// relay node restarted and forgot the registration, or another registration
// took the name) it registers again with capped exponential backoff.
//
// # Forwarding in the transport plugin
//
// With ServiceConfig.Bindings set, a forwarder whose messages come in on
// one link of a transport plugin and leave on another link of the same
// plugin process hands the plugin its rewrite as a forwarding rule (see
// rules.go and sdk/transport), after the node has forwarded the first
// message between those links itself: the messages that follow pass
// through the plugin without crossing into the node. The rule covers only
// the links the node let a message through on, anything it cannot handle
// exactly (error reports, size or hop limits, a link that fails) goes to
// the node as before, and what it forwarded is added to the forwarder's
// counters whenever they are read. A registration through a secure channel
// (what `relay create` does by default) has the channel on its route back,
// which needs the node's keys, so it is always forwarded by the node.
// Messages still on their way through the node when a rule is installed are
// not overtaken: each direction of a rule starts only once a fence packet
// the plugin sent through the node behind them has come back round (the
// node forwards fences without counting them).
//
// # Access control
//
// On the relay node, the relay service must be an allowed consumer of the
// listener's flow (host/transports Binding.Listen(..., "relay")). Each
// forwarder is allowed on the flow its registration arrived on and on every
// flow ServiceConfig.Flows returns, so a client connecting through the same
// listener reaches it. On the registering node nothing needs configuring: the
// registrant sent its registration through the connection, so the node's
// reply grant lets messages from that connection reach it, and what it
// forwards on is local traffic, and it passes network messages on to local
// workers only. Options.Allow narrows which ones.
//
// Whoever can reach the relay service can register a new name, up to
// ServiceConfig.MaxRegistrations; a name belongs to its first registrant
// (owner.go): registering it again replaces its route only with the same
// registrant secret (a reconnecting node is never locked out by its own
// stale registration), and anyone else is refused and logged (rate-limited).
// A forwarder whose registrant stops checking in expires after
// ServiceConfig.ExpireChecks of its check intervals.
package relays

import (
	"fmt"
)

// Conventional addresses.
const (
	// ServiceAddress is the relay service's address on every node the ferry
	// command creates.
	ServiceAddress = "relay"
	// ForwarderPrefix is prepended to a registration's name to make the
	// forwarder's address: forward_to_NAME.
	ForwarderPrefix = "forward_to_"
	// MaxNameLen bounds a registration name.
	MaxNameLen = 64
)

// ForwarderAddress returns the local address of the forwarder for name.
func ForwarderAddress(name string) string { return ForwarderPrefix + name }

// ValidName checks a registration name: 1 to MaxNameLen characters from
// a-z, A-Z, 0-9, '.', '_' and '-', so forward_to_NAME is a plain service
// address that needs no escaping in route text.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("relay name is empty; use a short name such as the node's name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("relay name %q is %d bytes, the limit is %d", shorten(name), len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("relay name %q: byte %q at offset %d is not allowed; use a-z, A-Z, 0-9, '.', '_' and '-'", shorten(name), c, i)
		}
	}
	return nil
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
