package securechannel

import (
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Policy restricts a worker (a service, an outlet, a listener's consumer)
// to messages that arrived through a secure channel from one of a set of
// identities. A message without an authenticated identity, or from another
// identity, never reaches the worker; it is dropped and counted.
type Policy struct {
	allowed map[string]struct{}
	denied  atomic.Uint64
}

// NewPolicy returns a policy admitting the given identifiers; it needs at
// least one.
func NewPolicy(identifiers ...string) (*Policy, error) {
	if len(identifiers) == 0 {
		return nil, fmt.Errorf("an identity policy needs at least one identifier")
	}
	p := &Policy{allowed: map[string]struct{}{}}
	for _, id := range identifiers {
		if err := identity.ValidIdentifier(id); err != nil {
			return nil, err
		}
		p.allowed[id] = struct{}{}
	}
	return p, nil
}

// Identifiers lists the admitted identifiers, sorted.
func (p *Policy) Identifiers() []string {
	out := make([]string, 0, len(p.allowed))
	for id := range p.allowed {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Allows reports whether a message with this local metadata is admitted.
func (p *Policy) Allows(info routing.LocalInfo) bool {
	if info.Identity == "" {
		return false
	}
	_, ok := p.allowed[info.Identity]
	return ok
}

// Denied counts messages the policy kept from its workers.
func (p *Policy) Denied() uint64 { return p.denied.Load() }

// Wrap returns w guarded by the policy. The wrapper keeps w's Initialize and
// Shutdown hooks.
func (p *Policy) Wrap(w node.Worker) node.Worker { return &guarded{p: p, w: w} }

type guarded struct {
	p *Policy
	w node.Worker
}

func (g *guarded) HandleMessage(c *node.Context, m *routing.Message) error {
	if !g.p.Allows(m.Local) {
		g.p.denied.Add(1)
		who := m.Local.Identity
		if who == "" {
			who = "no secure channel"
		}
		c.Node().Logger().Debug("message refused by identity policy", "worker", c.Address().String(), "identity", who, "return", m.Return.String())
		return nil
	}
	return g.w.HandleMessage(c, m)
}

func (g *guarded) Initialize(c *node.Context) error {
	if i, ok := g.w.(node.Initializer); ok {
		return i.Initialize(c)
	}
	return nil
}

func (g *guarded) Shutdown(c *node.Context) error {
	if s, ok := g.w.(node.ShutdownHook); ok {
		return s.Shutdown(c)
	}
	return nil
}
