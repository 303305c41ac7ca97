package transportclient

import (
	"context"
	"fmt"
	"time"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	pb "github.com/ferryhq/ferry/internal/pluginpb/transportv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// ForwardRule is a relay forwarder's route rewrite between two links of
// one plugin, done inside the plugin (capability CAPABILITY_FORWARD_RULES;
// see the ForwardRule message in internal/pluginpb/transport.proto).
type ForwardRule struct {
	// A and B are the two links; B is the first hop of RouteBack.
	A, B transport.Link
	// AddressA and AddressB are the local worker addresses of the links'
	// ends on the host; Forwarder is the forwarder's local address.
	AddressA, AddressB, Forwarder string
	// RouteBack is the forwarder's route to its registrant.
	RouteBack routing.Route
	// ErrorPrefix starts the payload of error reports, which the host
	// handles itself.
	ErrorPrefix []byte
	// MaxMessageSize is the largest encoded message the host would take
	// or send on these links.
	MaxMessageSize int
	// StallTimeout closes a link that takes nothing a rule sends for this
	// long (0: never).
	StallTimeout time.Duration
	// Fence makes each direction start only once a fence packet the plugin
	// sends through the host came back, so no message the host still holds
	// is overtaken (the host's forwarder counts the fences; ForwardCounts
	// says how many to take off).
	Fence bool
}

// ForwardCounts are what one rule did in the plugin.
type ForwardCounts struct {
	Forwarded, Returned uint64    // packets A → B, B → A
	LastReturned        time.Time // zero: none yet
	Active              bool      // false once either link closed
	// FencedForwarded and FencedReturned count the fences that came back
	// (A → B, B → A): the host forwarded them without counting them
	// (pluginwire.IsFence), so they are not part of Forwarded/Returned.
	FencedForwarded, FencedReturned uint64
}

func countsOf(c *pb.ForwardCounts) ForwardCounts {
	out := ForwardCounts{Forwarded: c.GetForwarded(), Returned: c.GetReturned(), Active: c.GetActive(),
		FencedForwarded: c.GetFencedForwarded(), FencedReturned: c.GetFencedReturned()}
	if ns := c.GetLastReturnedUnixNanos(); ns > 0 {
		out.LastReturned = time.Unix(0, ns)
	}
	return out
}

// LinkOf returns the plugin client that carries l and l's id in the
// plugin, when l is a link of a plugin (false for any other link).
func LinkOf(l transport.Link) (*Remote, uint64, bool) {
	switch v := l.(type) {
	case *remoteLink:
		return v.r, v.id, true
	case countingLink:
		return v.r, v.id, true
	}
	return nil, 0, false
}

// ForwardRules reports whether the plugin takes forwarding rules (both
// sides offered CAPABILITY_FORWARD_RULES).
func (r *Remote) ForwardRules() bool {
	return pluginwire.Has(r.caps, pluginv1.Capability_CAPABILITY_FORWARD_RULES)
}

// SetForwardRule installs rule in the plugin and returns its id. Both links
// must be links of this plugin.
func (r *Remote) SetForwardRule(ctx context.Context, rule ForwardRule) (uint64, error) {
	if !r.ForwardRules() {
		return 0, fmt.Errorf("forwarding rule: plugin %q does not take forwarding rules", r.info.Name)
	}
	ra, a, okA := LinkOf(rule.A)
	rb, b, okB := LinkOf(rule.B)
	if !okA || !okB || ra != r || rb != r {
		return 0, fmt.Errorf("forwarding rule: both links must belong to plugin %q", r.info.Name)
	}
	if rule.MaxMessageSize <= 0 {
		return 0, fmt.Errorf("forwarding rule: max message size %d", rule.MaxMessageSize)
	}
	id := r.ruleIDs.Add(1)
	req := &pb.ForwardRule{
		RuleId: id, LinkA: a, AddressA: rule.AddressA, LinkB: b, AddressB: rule.AddressB,
		Forwarder: rule.Forwarder, ErrorPrefix: rule.ErrorPrefix,
		MaxMessageSize:    uint32(min(rule.MaxMessageSize, 1<<31)),
		StallTimeoutNanos: int64(rule.StallTimeout),
		Fence:             rule.Fence,
	}
	for _, h := range rule.RouteBack {
		req.RouteBack = append(req.RouteBack, &pb.Hop{Type: h.Type, Value: h.Value})
	}
	if _, err := r.c.SetForwardRule(ctx, req); err != nil {
		return 0, r.wrap("set forwarding rule", err)
	}
	return id, nil
}

// RemoveForwardRule removes a rule and returns its final counts.
func (r *Remote) RemoveForwardRule(ctx context.Context, id uint64) (ForwardCounts, error) {
	c, err := r.c.RemoveForwardRule(ctx, &pb.ForwardRuleRef{RuleId: id})
	if err != nil {
		return ForwardCounts{}, r.wrap("remove forwarding rule", err)
	}
	return countsOf(c), nil
}

// ForwardCounters returns the counts of the rules ids that the plugin still
// holds.
func (r *Remote) ForwardCounters(ctx context.Context, ids ...uint64) (map[uint64]ForwardCounts, error) {
	resp, err := r.c.ForwardCounters(ctx, &pb.ForwardCountersRequest{RuleIds: ids})
	if err != nil {
		return nil, r.wrap("forwarding counters", err)
	}
	out := make(map[uint64]ForwardCounts, len(resp.Counts))
	for _, c := range resp.Counts {
		out[c.RuleId] = countsOf(c)
	}
	return out, nil
}
