package relays

import (
	"context"
	"errors"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins/transportclient"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Forwarding rules (issue 8): when a forwarder passes a message between two
// links of one transport plugin, it hands the plugin its rewrite as a rule
// (transports.Binding.InstallForward), and the messages that follow pass
// through the plugin without crossing into this node. The rule is learned
// from a message the node itself let through, so it never opens the
// forwarder to a flow the node would refuse; it is removed when the
// registration changes or the forwarder stops, and it lapses in the plugin
// when either link closes (a plugin restart closes them all). What the
// plugin forwarded is added to the forwarder's counters whenever they are
// read (relay list) and at each expiry sweep.

// ruleCallTimeout bounds one call into a plugin about a rule.
const ruleCallTimeout = 2 * time.Second

// ruleRetry is how long a pair of links whose rule could not be installed
// (the call failed) is left to the host before trying again.
const ruleRetry = 10 * time.Second

type ruleKey struct{ a, b string }

type installedRule struct {
	fw   *transports.Forward
	last transportclient.ForwardCounts // counts already added to the forwarder
}

// learn installs the rule for the links a (the other side) and b (the
// first hop of back) after the forwarder passed a message between them
// that arrived on link in with flow.
func (f *forwarder) learn(c *node.Context, in, flow, a, b string, back routing.Route) {
	bindings := f.s.cfg.Bindings
	if bindings == nil || flow == "" || a == b {
		return
	}
	key := ruleKey{a, b}
	f.ruleMu.Lock()
	defer f.ruleMu.Unlock()
	if f.stopped || !f.route().Equal(back) {
		return
	}
	if r := f.rules[key]; r != nil {
		if r.fw.Current() {
			return // the message came to the host for a reason of its own
		}
		f.dropRule(key, r)
	}
	if t, ok := f.ruleFailed[key]; ok && time.Since(t) < ruleRetry {
		return
	}
	spec := transports.ForwardSpec{A: a, B: b, In: in, Flow: flow, Forwarder: f.addr,
		RouteBack: back.Clone(), ErrorPrefix: []byte(node.ErrorMagic)}
	for _, bd := range bindings() {
		ctx, cancel := context.WithTimeout(c, ruleCallTimeout)
		fw, err := bd.InstallForward(ctx, spec)
		cancel()
		if errors.Is(err, transports.ErrNotForwardable) {
			continue
		}
		if err != nil {
			f.s.log.Debug("could not install a forwarding rule; the node forwards", "name", f.name, "error", err)
			if f.ruleFailed == nil {
				f.ruleFailed = map[ruleKey]time.Time{}
			}
			f.ruleFailed[key] = time.Now()
			return
		}
		if f.rules == nil {
			f.rules = map[ruleKey]*installedRule{}
		}
		f.rules[key] = &installedRule{fw: fw}
		delete(f.ruleFailed, key)
		f.s.log.Debug("forwarding rule installed", "name", f.name, "link_a", a, "link_b", b)
		return
	}
}

// dropRule removes one rule, adding its final counts. Called holding ruleMu.
func (f *forwarder) dropRule(key ruleKey, r *installedRule) {
	delete(f.rules, key)
	ctx, cancel := context.WithTimeout(context.Background(), ruleCallTimeout)
	defer cancel()
	if c, err := r.fw.Remove(ctx); err == nil {
		f.fold(r, c)
	}
}

// dropRules removes every rule: the registration changed or the forwarder
// stops. stop also keeps new ones from being learned.
func (f *forwarder) dropRules(stop bool) {
	f.ruleMu.Lock()
	defer f.ruleMu.Unlock()
	if stop {
		f.stopped = true
	}
	for k, r := range f.rules {
		f.dropRule(k, r)
	}
	clear(f.ruleFailed)
}

// syncRules adds what the plugins forwarded since the last call to the
// counters, and removes rules whose links have closed.
func (f *forwarder) syncRules() {
	f.ruleMu.Lock()
	defer f.ruleMu.Unlock()
	for k, r := range f.rules {
		ctx, cancel := context.WithTimeout(context.Background(), ruleCallTimeout)
		c, err := r.fw.Counts(ctx)
		cancel()
		if err == nil {
			f.fold(r, c)
		}
		if err != nil || !c.Active || !r.fw.Current() {
			// Remove makes sure the plugin stops (it closes the links
			// when it cannot tell the plugin); a plugin that is gone
			// took its rule and the counts since the last sync with it.
			f.dropRule(k, r)
		}
	}
}

// fold adds counts c of rule r beyond what was added before. (Fences the
// rule sent through this node were never counted here: see
// pluginwire.IsFence.)
func (f *forwarder) fold(r *installedRule, c transportclient.ForwardCounts) {
	delta := func(now, before uint64) uint64 { return now - min(now, before) }
	fwd, ret := delta(c.Forwarded, r.last.Forwarded), delta(c.Returned, r.last.Returned)
	r.last = c
	if fwd == 0 && ret == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forwarded += fwd
	f.returned += ret
	f.byPlugin[0] += fwd
	f.byPlugin[1] += ret
	if fwd > 0 {
		f.down = false
	}
	if ret > 0 && c.LastReturned.After(f.lastSeen) {
		f.lastSeen = c.LastReturned
	}
}

// hasRules reports whether any rule is installed (tests).
func (f *forwarder) ruleCount() int {
	f.ruleMu.Lock()
	defer f.ruleMu.Unlock()
	return len(f.rules)
}
