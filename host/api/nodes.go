package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

// NodeType is the pseudo address type of /node/NAME in routes: a node of the
// ferry home, resolved to one of its listeners before anything is sent.
const NodeType = "node"

// nodeLookupTimeout bounds asking a node of the home for its listeners.
const nodeLookupTimeout = 2 * time.Second

// ResolveNode returns the address by which a caller reaches node name of
// home h: one of name's listeners, asked from its control socket. have are
// the transports the caller already runs (its Status.Transports); a
// listener of one of them wins, then name's default listener, then its
// first. With transport set, only listeners of that transport count.
//
// This is the only place /node/NAME becomes a transport address; the
// command and the daemon (relay registrations) both use it.
func ResolveNode(ctx context.Context, h *state.Home, name, transport string, have []string) (routing.Address, error) {
	l, err := NodeListener(ctx, h, name, transport, have)
	if err != nil {
		return routing.Address{}, err
	}
	return routing.Address{Type: typeOr(l.AddressType, l.Transport), Value: l.Address}, nil
}

// NodeListener is ResolveNode's choice of listener.
func NodeListener(ctx context.Context, h *state.Home, name, transport string, have []string) (Listener, error) {
	if h == nil {
		return Listener{}, fmt.Errorf("route names node %s, but there is no ferry home to look it up in", name)
	}
	if err := state.ValidName(name); err != nil {
		return Listener{}, err
	}
	if !h.Exists(name) {
		return Listener{}, fmt.Errorf("node %q does not exist; see ferry node list", name)
	}
	c := NewClient(h.SocketPath(name))
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, nodeLookupTimeout)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		if errors.Is(err, ErrNotRunning) {
			return Listener{}, fmt.Errorf("node %q is not running; start it with ferry node start %s", name, name)
		}
		return Listener{}, fmt.Errorf("node %q does not answer (%v); see ferry node show %s", name, err, name)
	}
	return PickListener(name, st.Listeners, transport, have)
}

// PickListener chooses among node name's listeners as ResolveNode does.
func PickListener(name string, ls []Listener, transport string, have []string) (Listener, error) {
	var cands []Listener
	for _, l := range ls {
		if transport == "" || l.Transport == transport {
			cands = append(cands, l)
		}
	}
	if len(cands) == 0 {
		if transport != "" {
			return Listener{}, fmt.Errorf("node %s has no %s listener to reach it by; create one with ferry listener create ADDRESS --transport %s --at %s", name, transport, transport, name)
		}
		return Listener{}, fmt.Errorf("node %s has no listener to reach it by; create one with ferry listener create ADDRESS --transport NAME --at %s", name, name)
	}
	rank := func(l Listener) int {
		r := 0
		if !slices.Contains(have, l.Transport) {
			r += 4
		}
		if !l.Default {
			r += 2
		}
		if !l.Up {
			r++
		}
		return r
	}
	slices.SortStableFunc(cands, func(a, b Listener) int { return rank(a) - rank(b) })
	return cands[0], nil
}
