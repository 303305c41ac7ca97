// Package routing defines Ferry's addresses, routes and messages, the text
// syntax people use for routes, and the binary wire codec that carries a
// message between nodes.
//
// An Address is a transport type plus a value. The empty type is a local
// worker on the same node; "tcp", "udp", "quic", "serial", "kafka" or a third
// party's own short name select a transport. A Route is an ordered list of
// addresses. Every hop removes itself from the front of the onward route and
// puts its own address at the front of the return route; a reply travels
// along the return route the request arrived with.
package routing

import (
	"fmt"
	"strings"
)

// LocalType is the transport type of addresses owned by workers on the same
// node. "local" is accepted as a synonym when building addresses and is
// normalised to the empty string.
const LocalType = ""

// MaxHops bounds the length of a route. A longer route is almost certainly a
// loop or an attack; rejecting it keeps every per-hop operation cheap.
const MaxHops = 64

// MaxTypeLen and MaxValueLen bound the parts of an address.
const (
	MaxTypeLen  = 32
	MaxValueLen = 1024
)

// Address names one hop: a transport type and a value whose meaning belongs
// to that transport (a worker name, host:port, a topic, a device path).
type Address struct {
	Type  string
	Value string
}

// Local returns the address of a local worker.
func Local(value string) Address { return Address{Value: value} }

// NewAddress returns an address after checking the type and value.
func NewAddress(typ, value string) (Address, error) {
	if typ == "local" {
		typ = LocalType
	}
	a := Address{Type: typ, Value: value}
	return a, a.Validate()
}

// IsLocal reports whether the address belongs to a worker on this node.
func (a Address) IsLocal() bool { return a.Type == LocalType || a.Type == "local" }

// Validate checks that the type is a short lower-case name and the value is
// non-empty and bounded.
func (a Address) Validate() error {
	if err := validType(a.Type); err != nil {
		return err
	}
	if a.Value == "" {
		return fmt.Errorf("address of type %q has an empty value", a.Type)
	}
	if len(a.Value) > MaxValueLen {
		return fmt.Errorf("address value is %d bytes, the limit is %d", len(a.Value), MaxValueLen)
	}
	return nil
}

func validType(t string) error {
	if t == LocalType || t == "local" {
		return nil
	}
	if len(t) > MaxTypeLen {
		return fmt.Errorf("transport type %q is longer than %d bytes", t, MaxTypeLen)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_'):
		default:
			return fmt.Errorf("transport type %q must start with a-z and contain only a-z, 0-9, '-' and '_'", t)
		}
	}
	if t == "service" || t == "worker" {
		return fmt.Errorf("transport type %q is reserved for local addresses", t)
	}
	return nil
}

// String prints the address in route text form, e.g. "/service/echo" or
// "/tcp/127.0.0.1:4000".
func (a Address) String() string {
	var b strings.Builder
	a.appendText(&b)
	return b.String()
}
