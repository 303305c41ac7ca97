package routing

import (
	"fmt"
	"strings"
)

// Route is an ordered list of addresses. The zero value is an empty route.
// Methods that change a route return a new slice header and never modify the
// backing array of the receiver in a way visible to other holders, except
// where documented.
type Route []Address

// NewRoute builds a route from addresses, checking each and the hop limit.
func NewRoute(addrs ...Address) (Route, error) {
	r := Route(append([]Address(nil), addrs...))
	return r, r.Validate()
}

// Validate checks every address and the hop limit.
func (r Route) Validate() error {
	if len(r) > MaxHops {
		return fmt.Errorf("route has %d hops, the limit is %d", len(r), MaxHops)
	}
	for i, a := range r {
		if err := a.Validate(); err != nil {
			return fmt.Errorf("hop %d: %w", i+1, err)
		}
	}
	return nil
}

// Next returns the first address, or false for an empty route.
func (r Route) Next() (Address, bool) {
	if len(r) == 0 {
		return Address{}, false
	}
	return r[0], true
}

// Step removes the first address and returns it with the rest of the route.
func (r Route) Step() (Address, Route, error) {
	if len(r) == 0 {
		return Address{}, nil, fmt.Errorf("cannot step: the route is empty")
	}
	return r[0], r[1:], nil
}

// Prepend returns a new route with a in front. It fails rather than exceed
// MaxHops.
func (r Route) Prepend(a Address) (Route, error) {
	if len(r) >= MaxHops {
		return nil, fmt.Errorf("cannot prepend %s: the route already has %d hops (limit %d)", a, len(r), MaxHops)
	}
	out := make(Route, len(r)+1, len(r)+2)
	out[0] = a
	copy(out[1:], r)
	return out, nil
}

// Append returns a new route with a at the end. It fails rather than exceed
// MaxHops.
func (r Route) Append(a ...Address) (Route, error) {
	if len(r)+len(a) > MaxHops {
		return nil, fmt.Errorf("cannot append %d hops: the route would have %d hops (limit %d)", len(a), len(r)+len(a), MaxHops)
	}
	out := make(Route, 0, len(r)+len(a))
	out = append(out, r...)
	return append(out, a...), nil
}

// Concat returns r followed by s.
func (r Route) Concat(s Route) (Route, error) { return r.Append(s...) }

// Clone returns a copy that shares nothing with r.
func (r Route) Clone() Route {
	if r == nil {
		return nil
	}
	return append(Route(make([]Address, 0, len(r))), r...)
}

// Equal reports whether two routes have the same hops.
func (r Route) Equal(s Route) bool {
	if len(r) != len(s) {
		return false
	}
	for i := range r {
		if normType(r[i].Type) != normType(s[i].Type) || r[i].Value != s[i].Value {
			return false
		}
	}
	return true
}

func normType(t string) string {
	if t == "local" {
		return LocalType
	}
	return t
}

// String prints the route in its text form; the empty route prints as "/".
func (r Route) String() string {
	if len(r) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, a := range r {
		a.appendText(&b)
	}
	return b.String()
}

// Message is what workers exchange: where it goes, how a reply finds its way
// back, and the payload. Local is metadata the node keeps for itself; it is
// never encoded on the wire.
type Message struct {
	Onward  Route
	Return  Route
	Payload []byte
	Local   LocalInfo
}

// LocalInfo is node-local metadata about a message.
type LocalInfo struct {
	// Flow names the listener or connection a message arrived from; empty
	// for messages that originated on this node. The node uses it to apply
	// access control (deny by default for network input).
	Flow string
	// Identity is the identifier of the peer a message came from when it
	// arrived through a secure channel, set by that channel after it
	// authenticated the peer; empty otherwise. Access control by identity
	// reads it.
	Identity string
	// Origin names where a message (or the message it was forwarded from,
	// by a hop, relay or other worker on this node) first arrived from a
	// network: its flow, or the link it came in on; empty when it started
	// on this node. The node uses it to refuse dialling on behalf of the
	// network and to rate-limit the errors it sends back per source.
	Origin string
	// PayloadOwned is set by a sender that hands Payload over with the
	// message and keeps no reference to it: the worker that ends the
	// message's life (a transport link once it has encoded it) may then
	// recycle the buffer. Anyone who passes the payload on in more than
	// one message, or keeps it, must clear it.
	PayloadOwned bool
}
