// Package services holds Ferry's built-in workers: echo, uppercase and hop.
// Each is registered under a conventional address (see the constants) by the
// ferry command and by topology files; embedding programs start them with
// Node.StartWorker or with Start.
package services

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Conventional addresses of the built-in services.
const (
	EchoAddress      = "echo"
	UppercaseAddress = "uppercase"
	HopAddress       = "hop"
)

// Echo replies to every message with the same payload.
type Echo struct{}

// HandleMessage replies along the return route.
func (Echo) HandleMessage(c *node.Context, m *routing.Message) error {
	return c.Reply(c, m, m.Payload)
}

// Uppercase replies with the payload upper-cased (Unicode-aware).
type Uppercase struct{}

// HandleMessage replies along the return route.
func (Uppercase) HandleMessage(c *node.Context, m *routing.Message) error {
	return c.Reply(c, m, bytes.ToUpper(m.Payload))
}

// Hop forwards each message along its onward route after stepping off it and
// putting its own address at the front of the return route, so replies come
// back through it.
type Hop struct{}

// HandleMessage forwards the message.
func (Hop) HandleMessage(c *node.Context, m *routing.Message) error {
	if len(m.Onward) < 2 {
		return fmt.Errorf("hop %s: nothing to forward to (onward route %s ends here)", c.Address(), m.Onward)
	}
	return c.Forward(c, m)
}

// Factory makes a fresh instance of a service.
type Factory func() node.Worker

var builtins = map[string]Factory{
	"echo":      func() node.Worker { return Echo{} },
	"uppercase": func() node.Worker { return Uppercase{} },
	"hop":       func() node.Worker { return Hop{} },
}

// Names lists the built-in service types.
func Names() []string {
	out := make([]string, 0, len(builtins))
	for k := range builtins {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// New returns a new instance of the built-in service typ.
func New(typ string) (node.Worker, error) {
	f, ok := builtins[typ]
	if !ok {
		return nil, fmt.Errorf("unknown service %q; built-in services are %v", typ, Names())
	}
	return f(), nil
}

// Start starts the service typ on n at addr (its conventional address,
// the type name, when addr is empty).
func Start(n *node.Node, typ, addr string) (routing.Address, error) {
	w, err := New(typ)
	if err != nil {
		return routing.Address{}, err
	}
	if addr == "" {
		addr = typ
	}
	return n.StartWorker(addr, w, node.WithKind(typ))
}
