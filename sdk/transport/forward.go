package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	pb "github.com/ferryhq/ferry/internal/pluginpb/transportv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Forwarding rules (capability CAPABILITY_FORWARD_RULES). A relay node's
// forwarder rewrites routes between two links: what arrives on link A for
// the forwarder goes out on link B (the first hop of the route back to the
// registrant), and replies come back the other way. When both links belong
// to this plugin, the host hands the plugin that rewrite as a rule, and the
// packets it covers no longer cross into the host and back. Every plugin
// served with Serve gets this without code of its own.
//
// A rule reproduces the host's forwarder exactly or does nothing: any packet
// it is not sure about (an error report, a packet that does not decode, a
// route over the hop limit, a message over the size limit, a failed send)
// goes to the host unchanged, which handles it as it always did.

// fwdRule is one installed rule. Its links and addresses never change; the
// host replaces a rule by id to change it.
type fwdRule struct {
	id           uint64
	a, b         *serverLink
	addrA, addrB routing.Address
	fwd          routing.Address
	back         routing.Route
	errPrefix    []byte
	codec        routing.Codec
	stall        time.Duration

	forwarded    atomic.Uint64
	returned     atomic.Uint64
	lastReturned atomic.Int64
	active       atomic.Bool

	// Fences, one per direction (0: a → b, 1: b → a): a direction forwards
	// only once its fence came back round through the host (see
	// ForwardRule.fence in the protocol).
	fence [2]fenceState
}

// fenceState is one direction's fence.
type fenceState struct {
	payload []byte        // nil: no fence asked for
	pending atomic.Bool   // the direction still goes through the host
	emitted atomic.Bool   // the fence packet was sent to the host
	done    chan struct{} // closed when pending ends
	once    sync.Once
	fenced  atomic.Uint64 // fences that came back
}

// end ends the wait: the fence came back (or will not matter any more).
func (f *fenceState) end() {
	f.pending.Store(false)
	if f.done != nil {
		f.once.Do(func() { close(f.done) })
	}
}

// fenceAddr is where fence packets are addressed after the forwarder; a
// fence that escaped interception fails there harmlessly.
var fenceAddr = routing.Local("ferry-fence")

// fenceTimeout bounds the wait for a fence; a fence lost on its way (the
// forwarder stopped, a link failed) must not hold a link's reader.
const fenceTimeout = 5 * time.Second

func (r *fwdRule) counts() *pb.ForwardCounts {
	return &pb.ForwardCounts{
		RuleId:                r.id,
		Forwarded:             r.forwarded.Load(),
		Returned:              r.returned.Load(),
		LastReturnedUnixNanos: r.lastReturned.Load(),
		Active:                r.active.Load(),
		FencedForwarded:       r.fence[0].fenced.Load(),
		FencedReturned:        r.fence[1].fenced.Load(),
	}
}

// fencePacket is direction dir's fence as it would arrive on the link it
// comes from, addressed through the forwarder to the other link.
func (r *fwdRule) fencePacket(dir int) ([]byte, error) {
	m := routing.Message{Payload: r.fence[dir].payload}
	if dir == 0 {
		m.Onward = routing.Route{r.fwd, fenceAddr}
	} else {
		// From the registrant's side: the host puts b's address in front,
		// which makes the return route the route back.
		m.Onward = routing.Route{r.fwd, r.addrA, fenceAddr}
		m.Return = r.back[1:]
	}
	return r.codec.Encode(&m)
}

// forwarding holds the rules of one server.
type forwarding struct {
	mu       sync.Mutex
	rules    map[uint64]*fwdRule
	watching bool
}

// rulesFor returns the active rules that involve l, as a new slice (stored
// in l.rules, which the link's pump reads without a lock).
func rulesFor(all map[uint64]*fwdRule, l *serverLink) []*fwdRule {
	var out []*fwdRule
	for _, r := range all {
		if r.active.Load() && (r.a == l || r.b == l) {
			out = append(out, r)
		}
	}
	return out
}

// refresh recomputes the rule lists of the given links. Called holding f.mu.
func (f *forwarding) refresh(links ...*serverLink) {
	for _, l := range links {
		if rs := rulesFor(f.rules, l); len(rs) > 0 {
			l.rules.Store(&rs)
		} else {
			l.rules.Store(nil)
		}
	}
}

func (s *server) hasCap(c pluginv1.Capability) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hostCaps {
		if h == c {
			return true
		}
	}
	return false
}

func localAddr(v string) (routing.Address, error) {
	a := routing.Local(v)
	if err := a.Validate(); err != nil || v == "" {
		return routing.Address{}, fmt.Errorf("local address %q: %v", v, err)
	}
	return a, nil
}

// SetForwardRule installs or replaces a forwarding rule.
func (s *server) SetForwardRule(ctx context.Context, req *pb.ForwardRule) (*pb.Empty, error) {
	if !s.hasCap(pluginv1.Capability_CAPABILITY_FORWARD_RULES) {
		return nil, status.Error(codes.FailedPrecondition, "the host did not negotiate forwarding rules")
	}
	r := &fwdRule{id: req.RuleId, errPrefix: bytes.Clone(req.ErrorPrefix), stall: time.Duration(req.StallTimeoutNanos)}
	var err error
	if r.addrA, err = localAddr(req.AddressA); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "address_a: %v", err)
	}
	if r.addrB, err = localAddr(req.AddressB); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "address_b: %v", err)
	}
	if r.fwd, err = localAddr(req.Forwarder); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "forwarder: %v", err)
	}
	for _, h := range req.RouteBack {
		r.back = append(r.back, routing.Address{Type: h.Type, Value: h.Value})
	}
	if err := r.back.Validate(); err != nil || len(r.back) == 0 || !r.back[0].IsLocal() || r.back[0].Value != r.addrB.Value {
		return nil, status.Errorf(codes.InvalidArgument, "route_back %s must start with address_b %s (%v)", r.back, r.addrB, err)
	}
	if req.MaxMessageSize == 0 || req.LinkA == req.LinkB || req.RuleId == 0 {
		return nil, status.Error(codes.InvalidArgument, "a rule needs an id, two different links and a max message size")
	}
	r.codec = routing.Codec{MaxSize: int(req.MaxMessageSize)}
	if req.Fence {
		for dir := range r.fence {
			p := make([]byte, 0, pluginwire.FenceSize)
			p = append(p, pluginwire.FenceMagic...)
			p = binary.BigEndian.AppendUint64(p, r.id)
			p = binary.BigEndian.AppendUint64(p, rand.Uint64())
			r.fence[dir].payload = append(p, byte(dir))
			r.fence[dir].done = make(chan struct{})
			r.fence[dir].pending.Store(true)
		}
	}
	s.mu.Lock()
	a, b := s.links[req.LinkA], s.links[req.LinkB]
	if a == nil || b == nil || !a.streaming || !b.streaming || s.closed {
		s.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "links %d and %d must both be open and carrying data: %v", req.LinkA, req.LinkB, ErrClosed)
	}
	r.a, r.b = a, b
	r.active.Store(true)
	f := &s.fwd
	f.mu.Lock()
	// Under s.mu: a link that ends drops its rules after deleting itself
	// from s.links, so a rule made here cannot outlive its links.
	s.mu.Unlock()
	if old := f.rules[r.id]; old != nil {
		old.deactivate()
		f.refresh(old.a, old.b)
	}
	if f.rules == nil {
		f.rules = map[uint64]*fwdRule{}
	}
	f.rules[r.id] = r
	f.refresh(a, b)
	start := !f.watching && r.stall > 0
	if start {
		f.watching = true
	}
	f.mu.Unlock()
	if start {
		go s.watchStalls()
	}
	return &pb.Empty{}, nil
}

// RemoveForwardRule removes a rule and returns its final counts.
func (s *server) RemoveForwardRule(ctx context.Context, req *pb.ForwardRuleRef) (*pb.ForwardCounts, error) {
	f := &s.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rules[req.RuleId]
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "no forwarding rule %d", req.RuleId)
	}
	delete(f.rules, req.RuleId)
	r.deactivate()
	f.refresh(r.a, r.b)
	return r.counts(), nil
}

// ForwardCounters reports the counts of the rules asked for (all when none).
func (s *server) ForwardCounters(ctx context.Context, req *pb.ForwardCountersRequest) (*pb.ForwardCountersResponse, error) {
	f := &s.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &pb.ForwardCountersResponse{}
	if len(req.RuleIds) == 0 {
		for _, r := range f.rules {
			resp.Counts = append(resp.Counts, r.counts())
		}
		return resp, nil
	}
	for _, id := range req.RuleIds {
		if r := f.rules[id]; r != nil {
			resp.Counts = append(resp.Counts, r.counts())
		}
	}
	return resp, nil
}

// deactivate stops the rule and releases a pump waiting for its fence.
func (r *fwdRule) deactivate() {
	r.active.Store(false)
	for dir := range r.fence {
		r.fence[dir].end()
	}
}

// dropLinkRules deactivates every rule that involves l, which has ended;
// the rules stay (with their counts) until the host removes them.
func (s *server) dropLinkRules(l *serverLink) {
	f := &s.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	var touched []*serverLink
	for _, r := range f.rules {
		if r.a == l || r.b == l {
			r.deactivate()
			touched = append(touched, r.a, r.b)
		}
	}
	f.refresh(touched...)
	l.rules.Store(nil)
}

// watchStalls closes a link that a rule has been sending on without
// progress for longer than the rule's stall timeout, as the host closes a
// link whose peer does not read (it would otherwise hold the sending link's
// reader, and everything behind it, forever).
func (s *server) watchStalls() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		var stuck []*serverLink
		now := time.Now().UnixNano()
		for _, l := range s.links {
			if d := l.ruleDeadline.Load(); d != 0 && now > d {
				stuck = append(stuck, l)
			}
		}
		s.mu.Unlock()
		for _, l := range stuck {
			s.logger.Warn("closing a link that took nothing a forwarding rule sent for its stall timeout", "remote", l.RemoteAddr())
			l.Close()
		}
	}
}

// fwdScratch is one pump's reusable state for applying rules.
type fwdScratch struct {
	cur    []byte // the packet being decoded
	alloc  func(int) []byte
	arena  []byte
	items  []fwdItem
	state  []int8 // per packet: 0 to the host, 1 forwarded
	out    [][]byte
	host   [][]byte
	target []*serverLink
	fences [][]byte      // fence packets to send to the host after the batch
	wait   []*fenceState // fences to wait for once the batch went to the host
}

type fwdItem struct {
	idx        int
	r          *fwdRule
	toB        bool
	start, end int
}

func newFwdScratch() *fwdScratch {
	st := &fwdScratch{}
	// The payload is the packet's tail (DecodeAlloc checked its length):
	// decoding "into" it copies nothing new and allocates nothing.
	st.alloc = func(n int) []byte { return st.cur[len(st.cur)-n:] }
	return st
}

// fromRoute is the host forwarder's test that ret (a return route) comes
// from the registrant's side, whose route back is back.
func fromRoute(ret, back routing.Route) bool {
	return len(ret) >= len(back) && ret[:len(back)].Equal(back)
}

func sameAddr(a, b routing.Address) bool {
	return routing.Route{a}.Equal(routing.Route{b})
}

// rewrite applies r to m, which arrived on link from, as the host's link
// reader and forwarder would, and appends the packet to send to dst. ok is
// false when r does not apply exactly (the host must handle m).
func (r *fwdRule) rewrite(dst []byte, from *serverLink, m *routing.Message, size int) (out []byte, toB, ok bool) {
	if size > r.codec.MaxSize || len(m.Onward) < 2 || !sameAddr(m.Onward[0], r.fwd) {
		return dst, false, false
	}
	if len(r.errPrefix) > 0 && bytes.HasPrefix(m.Payload, r.errPrefix) {
		return dst, false, false
	}
	rest := m.Onward[1:]
	var onward, ret routing.Route
	var err error
	switch from {
	case r.a:
		// The link reader puts A's address in front of the return route;
		// the forwarder then sends towards the registrant.
		in, err := m.Return.Prepend(r.addrA)
		if err != nil || fromRoute(in, r.back) {
			return dst, false, false
		}
		if ret, err = in.Prepend(r.fwd); err != nil {
			return dst, false, false
		}
		onward = rest
		if !fromRoute(rest, r.back) {
			if onward, err = r.back.Concat(rest); err != nil {
				return dst, false, false
			}
		}
		// onward[0] is B's worker (route back's first hop), which steps
		// itself off and sends the rest on B.
		onward = onward[1:]
		toB = true
	case r.b:
		in, err := m.Return.Prepend(r.addrB)
		if err != nil || !fromRoute(in, r.back) || !sameAddr(rest[0], r.addrA) {
			return dst, false, false
		}
		// The forwarder steps off and passes it on to A's worker, which
		// steps off and sends the rest on A.
		if ret, err = in.Prepend(r.fwd); err != nil {
			return dst, false, false
		}
		onward = rest[1:]
	default:
		return dst, false, false
	}
	if len(onward) == 0 {
		return dst, false, false // the host reports a route ending at a link
	}
	start := len(dst)
	out, err = r.codec.Append(dst, &routing.Message{Onward: onward, Return: ret, Payload: m.Payload})
	if err != nil {
		return out[:start], false, false
	}
	return out, toB, true
}

// forwardBatch sends what the rules of link from forward out of packets,
// which arrived on from, and returns the rest, in order, for the host.
func (s *server) forwardBatch(from *serverLink, rules []*fwdRule, packets [][]byte, st *fwdScratch) [][]byte {
	st.arena, st.items, st.host = st.arena[:0], st.items[:0], st.host[:0]
	if cap(st.state) < len(packets) {
		st.state = make([]int8, len(packets))
	} else {
		st.state = st.state[:len(packets)]
		clear(st.state)
	}
	codec := routing.Codec{MaxSize: 0}
	for _, r := range rules {
		codec.MaxSize = max(codec.MaxSize, r.codec.MaxSize)
	}
	for i, p := range packets {
		st.cur = p
		m, err := codec.DecodeAlloc(p, st.alloc)
		st.cur = nil
		if err != nil {
			continue
		}
		for _, r := range rules {
			start := len(st.arena)
			var toB, ok bool
			st.arena, toB, ok = r.rewrite(st.arena, from, &m, len(p))
			if !ok {
				continue
			}
			dir := 1
			if toB {
				dir = 0
			}
			if fs := &r.fence[dir]; fs.pending.Load() {
				// Not yet: the host forwards this one, and a fence follows
				// everything the host got from this link so far.
				st.arena = st.arena[:start]
				if !fs.emitted.Swap(true) {
					if fp, err := r.fencePacket(dir); err == nil {
						st.fences = append(st.fences, fp)
						st.wait = append(st.wait, fs)
					} else {
						fs.end()
					}
				}
				break
			}
			st.items = append(st.items, fwdItem{idx: i, r: r, toB: toB, start: start, end: len(st.arena)})
			st.state[i] = 1
			break
		}
	}
	if len(st.items) > 0 {
		s.sendForwarded(st)
	}
	for i, p := range packets {
		if st.state[i] == 0 {
			st.host = append(st.host, p)
		}
	}
	st.host = append(st.host, st.fences...)
	st.fences = st.fences[:0]
	if cap(st.arena) > maxKeptArena {
		st.arena = nil // a burst of large packets: do not hold its buffer
	}
	return st.host
}

// maxKeptArena bounds the rewrite buffer a link's pump keeps between
// batches.
const maxKeptArena = 4 << 20

// sendForwarded sends the rewritten packets, one Send per target link; a
// batch whose send fails goes to the host instead (marked back to 0), which
// then reports the failure to its senders as it always did.
func (s *server) sendForwarded(st *fwdScratch) {
	st.target = st.target[:0]
	for _, it := range st.items {
		t := it.r.a
		if it.toB {
			t = it.r.b
		}
		if !containsLink(st.target, t) {
			st.target = append(st.target, t)
		}
	}
	for _, t := range st.target {
		st.out = st.out[:0]
		var stall time.Duration
		for _, it := range st.items {
			if (it.toB && it.r.b == t) || (!it.toB && it.r.a == t) {
				st.out = append(st.out, st.arena[it.start:it.end])
				stall = max(stall, it.r.stall)
			}
		}
		err := t.sendRule(st.out, stall)
		clear(st.out)
		now := time.Now().UnixNano()
		for _, it := range st.items {
			if !((it.toB && it.r.b == t) || (!it.toB && it.r.a == t)) {
				continue
			}
			switch {
			case err != nil:
				st.state[it.idx] = 0
			case it.toB:
				it.r.forwarded.Add(1)
			default:
				it.r.returned.Add(1)
				it.r.lastReturned.Store(now)
			}
		}
		if err != nil {
			s.logger.Debug("a forwarding rule could not send; the host handles the packets", "remote", t.RemoteAddr(), "error", err)
		}
	}
}

// awaitFences waits, after the batch that carried them went to the host,
// for the fences the batch emitted to come back round (bounded).
func (st *fwdScratch) awaitFences() {
	if len(st.wait) == 0 {
		return
	}
	t := time.NewTimer(fenceTimeout)
	defer t.Stop()
	for _, fs := range st.wait {
		select {
		case <-fs.done:
		case <-t.C:
			fs.end() // lost: forward from now on rather than hold the link
		}
	}
	clear(st.wait)
	st.wait = st.wait[:0]
}

// sendFromHost sends packets the host sent for link l, taking out a fence
// of a rule whose direction ends at l: what came before the fence goes out
// first, then the direction starts forwarding by itself.
func (l *serverLink) sendFromHost(ctx context.Context, packets [][]byte) error {
	rs := l.rules.Load()
	if rs == nil {
		return l.send(ctx, packets)
	}
	for i, p := range packets {
		for _, r := range *rs {
			for dir := range r.fence {
				fs := &r.fence[dir]
				into := r.b
				if dir == 1 {
					into = r.a
				}
				if into != l || !fs.pending.Load() || !bytes.HasSuffix(p, fs.payload) {
					continue
				}
				if i > 0 {
					if err := l.send(ctx, packets[:i]); err != nil {
						return err
					}
				}
				fs.fenced.Add(1)
				fs.end()
				return l.sendFromHost(ctx, packets[i+1:])
			}
		}
	}
	if len(packets) == 0 {
		return nil
	}
	return l.send(ctx, packets)
}

// send is Link.Send for the link's pump and the rules that target it,
// one at a time.
func (l *serverLink) send(ctx context.Context, packets [][]byte) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.Link.Send(ctx, packets)
}

// sendRule sends packets a rule forwarded. It waits as long as the link
// does not take them (backpressure on the link they came from), watched by
// watchStalls for at most stall.
func (l *serverLink) sendRule(packets [][]byte, stall time.Duration) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	if stall > 0 {
		l.ruleDeadline.Store(time.Now().Add(stall).UnixNano())
		defer l.ruleDeadline.Store(0)
	}
	return l.Link.Send(context.Background(), packets)
}

func containsLink(ls []*serverLink, l *serverLink) bool {
	for _, x := range ls {
		if x == l {
			return true
		}
	}
	return false
}
