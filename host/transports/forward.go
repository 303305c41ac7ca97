package transports

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferryhq/ferry/host/plugins/transportclient"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// ErrNotForwardable is returned by InstallForward when the two links are
// not links of one transport plugin that takes forwarding rules (or one of
// them is down, or the message did not come in on the link it names).
var ErrNotForwardable = errors.New("the links cannot carry a forwarding rule")

// ForwardSpec names a relay forwarder's rewrite between two links of the
// binding (see transportclient.ForwardRule).
type ForwardSpec struct {
	// A and B are the links' worker addresses (ConnectionInfo.Worker
	// values); B is RouteBack's first hop.
	A, B string
	// In is the worker address of the link the message that proved access
	// came in on (A or B), and Flow the flow it was delivered with: the
	// rule is installed only if that flow is In's, so a rule never opens
	// the forwarder to a flow the node did not let through.
	In, Flow string
	// Forwarder is the forwarder's local address; RouteBack its route to
	// the registrant; ErrorPrefix starts error reports, which stay with
	// the host.
	Forwarder   string
	RouteBack   routing.Route
	ErrorPrefix []byte
}

// Forward is a forwarding rule installed in a transport plugin.
type Forward struct {
	r      *transportclient.Remote
	id     uint64
	sa, sb *session
}

// InstallForward installs spec as a rule in the transport plugin that
// carries both links. It fails with ErrNotForwardable when that is not
// possible (an in-process transport, links of two processes, a plugin
// without the capability, a link that is down).
func (b *Binding) InstallForward(ctx context.Context, spec ForwardSpec) (*Forward, error) {
	if spec.A == spec.B || (spec.In != spec.A && spec.In != spec.B) || spec.Flow == "" ||
		len(spec.RouteBack) == 0 || !spec.RouteBack[0].IsLocal() || spec.RouteBack[0].Value != spec.B {
		return nil, ErrNotForwardable
	}
	b.mu.Lock()
	ca, cb, cin := b.conns[spec.A], b.conns[spec.B], b.conns[spec.In]
	b.mu.Unlock()
	if ca == nil || cb == nil || cin.flow != spec.Flow {
		return nil, ErrNotForwardable
	}
	sa, sb := ca.session(), cb.session()
	if sa == nil || sb == nil || sa.ctx.Err() != nil || sb.ctx.Err() != nil {
		return nil, ErrNotForwardable
	}
	ra, _, okA := transportclient.LinkOf(sa.link)
	rb, _, okB := transportclient.LinkOf(sb.link)
	if !okA || !okB || ra != rb || !ra.ForwardRules() {
		return nil, ErrNotForwardable
	}
	id, err := ra.SetForwardRule(ctx, transportclient.ForwardRule{
		A: sa.link, B: sb.link, AddressA: spec.A, AddressB: spec.B, Forwarder: spec.Forwarder,
		RouteBack: spec.RouteBack, ErrorPrefix: spec.ErrorPrefix,
		MaxMessageSize: b.opts.MaxMessageSize, StallTimeout: b.opts.StallTimeout, Fence: true,
	})
	if err != nil {
		return nil, fmt.Errorf("install forwarding rule %s <-> %s: %w", routing.Local(spec.A), routing.Local(spec.B), err)
	}
	return &Forward{r: ra, id: id, sa: sa, sb: sb}, nil
}

func (c *conn) session() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// Current reports whether both links are still the ones the rule was
// installed for, and up. A re-dialled connection keeps its worker address
// but is a new link in the plugin, which needs a new rule.
func (f *Forward) Current() bool {
	return f.sa.ctx.Err() == nil && f.sb.ctx.Err() == nil &&
		f.sa.c.session() == f.sa && f.sb.c.session() == f.sb
}

// Counts returns what the rule forwarded so far.
func (f *Forward) Counts(ctx context.Context) (transportclient.ForwardCounts, error) {
	cs, err := f.r.ForwardCounters(ctx, f.id)
	if err != nil {
		return transportclient.ForwardCounts{}, err
	}
	c, ok := cs[f.id]
	if !ok {
		return transportclient.ForwardCounts{}, fmt.Errorf("forwarding rule %d: gone from the plugin", f.id)
	}
	return c, nil
}

// Remove removes the rule from the plugin and returns its final counts.
// When the plugin cannot be told (a call that fails while the process is
// still there), the rule's links are closed instead, which ends the rule
// in the plugin: a forwarder that is gone must not go on forwarding.
func (f *Forward) Remove(ctx context.Context) (transportclient.ForwardCounts, error) {
	c, err := f.r.RemoveForwardRule(ctx, f.id)
	if err == nil || errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrClosed) {
		// Removed; or the process is gone, and its rules with it; or the
		// plugin no longer holds the rule.
		return c, err
	}
	cause := fmt.Errorf("could not remove forwarding rule %d from the plugin: %w", f.id, err)
	f.sa.fail(cause)
	f.sb.fail(cause)
	return c, cause
}
