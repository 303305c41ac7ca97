package relays

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/logging"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Forwarder states reported by Service.List.
const (
	// ForwarderUp: the last message was forwarded, or the registrant
	// registered or pinged recently and nothing failed since.
	ForwarderUp = "up"
	// ForwarderDown: forwarding to the registrant failed; LastError says
	// why. It is up again after a successful forward, ping or registration
	// (a reconnecting registrant replaces the route).
	ForwarderDown = "down"
	// ForwarderStale: the registrant has not pinged for StaleChecks of its
	// check intervals (plus a second); its connection is probably gone.
	ForwarderStale = "stale"
)

// staleSlack is added to the stale threshold so a ping a little late (a
// loaded machine, a slow path) does not flip the state.
const staleSlack = time.Second

// DefaultStaleChecks is how many missed check intervals make a forwarder
// stale when ServiceConfig.StaleChecks is zero.
const DefaultStaleChecks = 3

// Defaults for the limits in ServiceConfig.
const (
	// DefaultMaxRegistrations bounds the names one relay service holds.
	DefaultMaxRegistrations = 1024
	// DefaultExpireChecks is how many missed check intervals remove a
	// forwarder whose registrant stopped checking in.
	DefaultExpireChecks = 6
	// DefaultMaxCheckInterval caps the check interval a registrant may
	// announce, for the purpose of expiry, so a registration cannot make
	// itself live for a day without a word.
	DefaultMaxCheckInterval = time.Minute
)

// ServiceConfig configures the relay service.
type ServiceConfig struct {
	// Address of the service; default ServiceAddress ("relay").
	Address string
	// Flows, when set, returns extra flows (listener flows) every forwarder
	// is allowed to receive from, besides the flow its registration arrived
	// on. It is consulted at each registration and each ping, so a listener
	// opened later serves existing forwarders within one check interval.
	// See ListenerFlows.
	Flows func() []string
	// StaleChecks is how many of the registrant's check intervals may pass
	// without a ping before its forwarder is reported stale; default
	// DefaultStaleChecks.
	StaleChecks int
	// MaxRegistrations bounds the forwarders the service holds; a new name
	// beyond it is refused. Default DefaultMaxRegistrations.
	MaxRegistrations int
	// ExpireChecks is how many of the registrant's check intervals may pass
	// without a registration, check or message from it before its
	// forwarder is removed; default DefaultExpireChecks. The interval
	// counted is the registrant's, at most MaxCheckInterval (default
	// DefaultMaxCheckInterval), or DefaultCheckInterval when it gave none.
	ExpireChecks     int
	MaxCheckInterval time.Duration
	// Registrants, when not empty, lists the identifiers of the identities
	// allowed to register: a registration must then arrive through a secure
	// channel (routing.LocalInfo.Identity) from one of them. Default
	// (empty): anyone may register. Whatever this says, a name registered
	// through a secure channel belongs to that identity (see owner.go).
	Registrants []string
	// Bindings, when set, returns the transport bindings whose plugins may
	// take forwarding rules: a forwarder passing messages between two links
	// of one plugin process then lets the plugin do it, so those messages
	// stop crossing into the node (see rules.go). nil: the node forwards
	// every message itself.
	Bindings func() []*transports.Binding
	// Logger; default the node's logger named "relay".
	Logger hclog.Logger

	now   func() time.Time // tests
	sweep time.Duration    // tests: how often expiry runs; default 1s
}

// Service is the relay service on a relay node: it accepts registrations and
// runs one forwarder per registered name.
type Service struct {
	n    *node.Node
	cfg  ServiceConfig
	log  hclog.Logger
	addr routing.Address

	limiter *logging.Limiter
	stop    chan struct{}
	swept   chan struct{} // closed when the expiry loop has returned

	mu     sync.Mutex
	fwd    map[string]*forwarder
	closed bool
}

// ForwarderInfo describes one forwarder for `relay list` on the relay node.
type ForwarderInfo struct {
	Name      string `json:"name"`
	Address   string `json:"address"`    // route text, e.g. /service/forward_to_n3
	RouteBack string `json:"route_back"` // route text of the path to the registrant
	Node      string `json:"node,omitempty"`
	// Identity is the identifier of the identity that owns the name, when
	// it was registered through a secure channel.
	Identity  string `json:"identity,omitempty"`
	State     string `json:"state"`
	LastError string `json:"last_error,omitempty"`
	// Created is when the name was first registered; Registered when it was
	// last (re)registered.
	Created       time.Time `json:"created"`
	Registered    time.Time `json:"registered"`
	LastSeen      time.Time `json:"last_seen"` // last registration, ping or message from the registrant
	Registrations uint64    `json:"registrations"`
	Forwarded     uint64    `json:"forwarded"` // messages sent to the registrant
	Returned      uint64    `json:"returned"`  // messages from the registrant passed on
	Errors        uint64    `json:"errors"`
	CheckInterval string    `json:"check_interval,omitempty"`
	// PluginForwarded and PluginReturned are the parts of Forwarded and
	// Returned that a transport plugin forwarded by itself under a
	// forwarding rule, without the node.
	PluginForwarded uint64 `json:"plugin_forwarded,omitempty"`
	PluginReturned  uint64 `json:"plugin_returned,omitempty"`
}

// StartService starts the relay service on n.
func StartService(n *node.Node, cfg ServiceConfig) (*Service, error) {
	if cfg.Address == "" {
		cfg.Address = ServiceAddress
	}
	if cfg.StaleChecks <= 0 {
		cfg.StaleChecks = DefaultStaleChecks
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.MaxRegistrations <= 0 {
		cfg.MaxRegistrations = DefaultMaxRegistrations
	}
	if cfg.ExpireChecks <= 0 {
		cfg.ExpireChecks = DefaultExpireChecks
	}
	if cfg.MaxCheckInterval <= 0 {
		cfg.MaxCheckInterval = DefaultMaxCheckInterval
	}
	if cfg.sweep <= 0 {
		cfg.sweep = time.Second
	}
	for _, id := range cfg.Registrants {
		if err := identity.ValidIdentifier(id); err != nil {
			return nil, fmt.Errorf("start relay service: registrant %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = n.Logger().Named("relay")
	}
	s := &Service{n: n, cfg: cfg, log: log, fwd: map[string]*forwarder{}, limiter: logging.NewLimiter(0, 0),
		stop: make(chan struct{}), swept: make(chan struct{})}
	addr, err := n.StartWorker(cfg.Address, (*serviceWorker)(s), node.WithKind("relay"))
	if err != nil {
		return nil, fmt.Errorf("start relay service: %w", err)
	}
	s.addr = addr
	go s.expireLoop()
	return s, nil
}

// expireLoop removes forwarders whose registrants went quiet.
func (s *Service) expireLoop() {
	defer close(s.swept)
	t := time.NewTicker(s.cfg.sweep)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.expire()
		case <-s.stop:
			return
		case <-s.n.Done():
			return
		}
	}
}

// expiry is how long a forwarder lives without hearing from its registrant.
func (s *Service) expiry(interval time.Duration) time.Duration {
	if interval <= 0 {
		interval = DefaultCheckInterval
	}
	interval = min(interval, s.cfg.MaxCheckInterval)
	return time.Duration(s.cfg.ExpireChecks)*interval + staleSlack
}

// expire removes every forwarder not heard from within its expiry.
func (s *Service) expire() {
	s.syncRules()
	now := s.cfg.now()
	var gone []*forwarder
	s.mu.Lock()
	for name, f := range s.fwd {
		f.mu.Lock()
		quiet := now.Sub(f.lastSeen)
		interval := f.interval
		f.mu.Unlock()
		if quiet > s.expiry(interval) {
			delete(s.fwd, name)
			gone = append(gone, f)
		}
	}
	s.mu.Unlock()
	for _, f := range gone {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := f.stop(ctx, s.n); err != nil {
			s.log.Warn("could not stop an expired relay", "name", f.name, "error", err)
		}
		cancel()
		s.limiter.Info(s.log, "relay expired", "relay expired: its registrant stopped checking in", "name", f.name)
	}
}

// syncRules adds what plugins forwarded to every forwarder's counters and
// returns the forwarders.
func (s *Service) syncRules() []*forwarder {
	s.mu.Lock()
	fs := make([]*forwarder, 0, len(s.fwd))
	for _, f := range s.fwd {
		fs = append(fs, f)
	}
	s.mu.Unlock()
	for _, f := range fs {
		f.syncRules()
	}
	return fs
}

// Registrants returns the identifiers allowed to register (empty: anyone).
func (s *Service) Registrants() []string { return slices.Clone(s.cfg.Registrants) }

// MaxRegistrations returns the most names the service holds.
func (s *Service) MaxRegistrations() int { return s.cfg.MaxRegistrations }

// Address returns the service's local address.
func (s *Service) Address() routing.Address { return s.addr }

// List describes every forwarder, sorted by name.
func (s *Service) List() []ForwarderInfo {
	fs := s.syncRules()
	now := s.cfg.now()
	out := make([]ForwarderInfo, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.info(now, s.cfg.StaleChecks))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get describes the forwarder for name.
func (s *Service) Get(name string) (ForwarderInfo, bool) {
	s.mu.Lock()
	f := s.fwd[name]
	s.mu.Unlock()
	if f == nil {
		return ForwarderInfo{}, false
	}
	f.syncRules()
	return f.info(s.cfg.now(), s.cfg.StaleChecks), true
}

// ErrUnknownRelay is returned for a name with no forwarder.
var ErrUnknownRelay = errors.New("no relay by that name")

// Delete stops the forwarder for name. A registrant still alive will notice
// at its next check and register again; close the registration on the
// registering node to remove a relay for good.
func (s *Service) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	f := s.fwd[name]
	delete(s.fwd, name)
	s.mu.Unlock()
	if f == nil {
		return fmt.Errorf("delete relay %q: %w", name, ErrUnknownRelay)
	}
	return f.stop(ctx, s.n)
}

// Close stops the service and every forwarder.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		close(s.stop)
	}
	s.closed = true
	fs := s.fwd
	s.fwd = map[string]*forwarder{}
	s.mu.Unlock()
	<-s.swept
	var errs []error
	if err := s.n.StopWorker(ctx, s.addr.Value); err != nil && !errors.Is(err, node.ErrNoRoute) {
		errs = append(errs, err)
	}
	for _, f := range fs {
		if err := f.stop(ctx, s.n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// serviceWorker is the Service seen as the node.Worker at /service/relay.
type serviceWorker Service

func (w *serviceWorker) HandleMessage(c *node.Context, m *routing.Message) error {
	s := (*Service)(w)
	req, err := decodeControl(m.Payload)
	if err != nil {
		s.log.Debug("ignored a message that is not a relay request", "error", err, "return", m.Return.String())
		return nil
	}
	if len(m.Return) == 0 {
		s.log.Debug("ignored a relay request without a return route", "kind", req.Kind.String())
		return nil
	}
	var resp control
	switch req.Kind {
	case kindRegister:
		resp = s.register(m, req)
	case kindPing:
		resp = s.ping(m, req)
	case kindDelete:
		resp = s.deleteOwn(c, m, req)
	default:
		resp = control{Kind: kindError, Error: fmt.Sprintf("the relay service does not accept %s messages", req.Kind)}
	}
	resp.Nonce = req.Nonce
	b, err := resp.encode()
	if err != nil {
		return err
	}
	if err := c.Reply(c, m, b); err != nil {
		s.log.Debug("could not answer a relay request", "kind", req.Kind.String(), "name", req.Name, "return", m.Return.String(), "error", err)
		return err
	}
	return nil
}

func (s *Service) register(m *routing.Message, req control) control {
	if err := ValidName(req.Name); err != nil {
		return control{Kind: kindError, Error: err.Error()}
	}
	back := m.Return.Clone()
	if err := back.Validate(); err != nil {
		return control{Kind: kindError, Error: fmt.Sprintf("route back %s: %v", back, err)}
	}
	if len(req.Proof) == 0 {
		return control{Kind: kindError, Error: "the registration carries no proof of its registrant; upgrade the registering node"}
	}
	id := m.Local.Identity
	if len(s.cfg.Registrants) > 0 && !slices.Contains(s.cfg.Registrants, id) {
		if id == "" {
			s.limiter.Warn(s.log, "relay registrant unknown", "relay registration refused: not through a secure channel, and this relay accepts only listed identities", "name", req.Name, "route_back", back.String())
			return control{Kind: kindError, Error: fmt.Sprintf("relay name %q: this relay accepts registrations only through a secure channel from its listed identities", req.Name)}
		}
		s.limiter.Warn(s.log, "relay registrant unknown", "relay registration refused: the identity is not allowed to register", "name", req.Name, "identity", id)
		return control{Kind: kindError, Error: fmt.Sprintf("relay name %q: identity %s is not allowed to register at this relay", req.Name, id)}
	}
	now := s.cfg.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return control{Kind: kindError, Error: "the relay service is stopping"}
	}
	addr := ForwarderAddress(req.Name)
	f := s.fwd[req.Name]
	if f != nil {
		if owner := f.owner(); owner != "" && owner != id {
			return s.refuseOwned(req.Name, "registration", owner, id)
		} else if owner == "" && !f.ownedBy(req.Proof) {
			s.limiter.Warn(s.log, "relay name taken", "relay registration refused: the name belongs to another registrant", "name", req.Name, "route_back", back.String())
			return control{Kind: kindError, Error: fmt.Sprintf("relay name %q is registered by another registrant; choose another name, or delete it on the relay node", req.Name)}
		}
		f.replace(back, req, now)
		// The route back may have changed: rules made for the old one go
		// (new ones are learned from the next messages).
		f.dropRules(false)
		if f.bind(id) {
			s.log.Info("relay name now owned by an identity", "name", req.Name, "identity", id)
		}
		// Rate-limited like the refusals: registrants re-register whenever
		// their path breaks, so a flapping path must not flood the log.
		s.limiter.Info(s.log, "relay re-registered", "relay registered again; route replaced", "name", req.Name, "route_back", back.String())
	} else {
		if len(s.fwd) >= s.cfg.MaxRegistrations {
			s.limiter.Warn(s.log, "relay service full", "relay registration refused: the service holds its maximum of registrations", "name", req.Name, "max", s.cfg.MaxRegistrations)
			return control{Kind: kindError, Error: fmt.Sprintf("relay name %q refused: the relay service holds its maximum of %d registrations; delete one on the relay node or raise its cap", req.Name, s.cfg.MaxRegistrations)}
		}
		f = newForwarder(s, req, back, now)
		f.identity = id
		if _, err := s.n.StartWorker(addr, f, node.WithKind("relay-forwarder")); err != nil {
			return control{Kind: kindError, Error: fmt.Sprintf("start forwarder %s: %v", routing.Local(addr), err)}
		}
		s.fwd[req.Name] = f
		// A flood of registrations (up to MaxRegistrations) writes the
		// first few lines per interval and then one line counting the
		// rest; relay list gives every name.
		s.limiter.Info(s.log, "relay registered", "relay registered", "name", req.Name, "route_back", back.String(), "identity", id)
	}
	s.allow(addr, m.Local.Flow)
	return control{Kind: kindRegistered, Name: req.Name, Status: statusOK, Forwarder: routing.Local(addr).String()}
}

// refuseOwned refuses a registration or delete of a name that belongs to
// another identity (or to an identity, when the request came through no
// secure channel), logs it rate-limited and says why to the requester.
func (s *Service) refuseOwned(name, what, owner, id string) control {
	from := id
	if from == "" {
		from = "a registrant without a secure channel"
	}
	s.limiter.Warn(s.log, "relay name owned", "relay "+what+" refused: the name belongs to another identity", "name", name, "owner", owner, "from", from)
	return control{Kind: kindError, Name: name, Error: fmt.Sprintf("relay name %q is owned by identity %s and registered by another registrant; %s from %s refused", name, owner, what, from)}
}

// allow makes the forwarder at addr reachable from wherever its registrant
// reached the service (network input reaches only allowed consumers) and
// from the flows cfg.Flows names. AllowConsumer is idempotent.
func (s *Service) allow(addr, flow string) {
	if flow != "" {
		s.n.AllowConsumer(flow, addr)
	}
	if s.cfg.Flows != nil {
		for _, f := range s.cfg.Flows() {
			s.n.AllowConsumer(f, addr)
		}
	}
}

func (s *Service) ping(m *routing.Message, req control) control {
	s.mu.Lock()
	f := s.fwd[req.Name]
	s.mu.Unlock()
	if f == nil {
		return control{Kind: kindPong, Name: req.Name, Status: statusUnknown}
	}
	if !f.ownedByRequest(m.Local.Identity, req.Proof) || !f.owns(m.Return) {
		return control{Kind: kindPong, Name: req.Name, Status: statusMoved}
	}
	f.seen(s.cfg.now())
	// Listeners opened since the registration pick the forwarder up here.
	s.allow(f.addr, m.Local.Flow)
	return control{Kind: kindPong, Name: req.Name, Status: statusOK}
}

// deleteOwn removes a forwarder on its registrant's request; only the
// registrant that currently owns the name may delete it, so a stale
// registrant closing late cannot remove its successor. The path may have
// changed since the registration (a re-dialled connection), so the
// registrant is recognised by its own address, the last hop of the route.
func (s *Service) deleteOwn(c *node.Context, m *routing.Message, req control) control {
	s.mu.Lock()
	f := s.fwd[req.Name]
	if f == nil {
		s.mu.Unlock()
		return control{Kind: kindDeleted, Name: req.Name, Status: statusUnknown}
	}
	if owner := f.owner(); owner != "" && owner != m.Local.Identity {
		s.mu.Unlock()
		return s.refuseOwned(req.Name, "delete", owner, m.Local.Identity)
	}
	if back := f.route(); !f.ownedByRequest(m.Local.Identity, req.Proof) || !sameRegistrant(m.Return, back) {
		s.mu.Unlock()
		return control{Kind: kindDeleted, Name: req.Name, Status: statusMoved}
	}
	delete(s.fwd, req.Name)
	s.mu.Unlock()
	if err := f.stop(c, s.n); err != nil {
		return control{Kind: kindError, Name: req.Name, Error: err.Error()}
	}
	s.log.Info("relay deleted by its registrant", "name", req.Name)
	return control{Kind: kindDeleted, Name: req.Name, Status: statusOK}
}

// forwarder is the worker at forward_to_NAME. Its state is read by List
// while it handles messages, hence the mutex.
type forwarder struct {
	s     *Service
	name  string
	addr  string
	proof string // the owner's proof, fixed at the first registration

	mu            sync.Mutex
	identity      string // the owning identity's identifier once bound; never changes after
	back          routing.Route
	node          string
	interval      time.Duration
	created       time.Time
	registered    time.Time
	lastSeen      time.Time
	registrations uint64
	forwarded     uint64
	returned      uint64
	byPlugin      [2]uint64 // of forwarded, returned: by forwarding rules
	errors        uint64
	down          bool
	lastErr       string

	// Forwarding rules installed in transport plugins (rules.go). ruleMu
	// is held across calls into a plugin; never take it holding mu.
	ruleMu     sync.Mutex
	rules      map[ruleKey]*installedRule
	ruleFailed map[ruleKey]time.Time
	stopped    bool
}

func newForwarder(s *Service, req control, back routing.Route, now time.Time) *forwarder {
	f := &forwarder{s: s, name: req.Name, addr: ForwarderAddress(req.Name), proof: req.Proof, created: now}
	f.replace(back, req, now)
	return f
}

func (f *forwarder) replace(back routing.Route, req control, now time.Time) {
	f.mu.Lock()
	f.back = back
	f.node = req.Node
	f.interval = req.Interval
	f.registered = now
	f.lastSeen = now
	f.registrations++
	f.down = false
	f.mu.Unlock()
}

// seen records a ping that came over the route back, which proves that route
// works again.
func (f *forwarder) seen(now time.Time) {
	f.mu.Lock()
	f.lastSeen = now
	f.down = false
	f.mu.Unlock()
}

func (f *forwarder) route() routing.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.back
}

// owner returns the identifier of the identity that owns the name, empty
// while the name is owned by its registrant secret only.
func (f *forwarder) owner() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.identity
}

// bind makes id (when not empty) the owner of a name owned by its secret
// only, which the caller has just proved; it reports whether it did.
func (f *forwarder) bind(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" || f.identity != "" {
		return false
	}
	f.identity = id
	return true
}

// ownedByRequest reports whether a request that arrived with identity id (empty:
// not through a secure channel) and carries proof comes from the owner: the
// owning identity once the name is bound to one, else the secret's holder.
func (f *forwarder) ownedByRequest(id, proof string) bool {
	if owner := f.owner(); owner != "" {
		return owner == id
	}
	return f.ownedBy(proof)
}

// ownedBy reports whether proof is the owner's.
func (f *forwarder) ownedBy(proof string) bool {
	return subtle.ConstantTimeCompare([]byte(f.proof), []byte(proof)) == 1
}

// owns reports whether ret (a request's return route) is this forwarder's
// route back, i.e. the request came from the current registrant.
func (f *forwarder) owns(ret routing.Route) bool { return f.route().Equal(ret) }

// fromRoute reports whether a message with return route ret comes from the
// registrant's side. It cannot be forged from elsewhere: a link puts its own
// worker first on the return route of whatever arrives on it, and local hops
// put themselves in front of that, so only messages that came in over the
// registrant's own path (from the registrant's node) match back.
func sameRegistrant(ret, back routing.Route) bool {
	return len(ret) > 0 && len(back) > 0 && ret[len(ret)-1:].Equal(back[len(back)-1:])
}

func fromRoute(ret, back routing.Route) bool {
	return len(ret) >= len(back) && ret[:len(back)].Equal(back)
}

func (f *forwarder) stop(ctx context.Context, n *node.Node) error {
	// Rules first: a plugin must not forward for a forwarder that is gone.
	f.dropRules(true)
	err := n.StopWorker(ctx, f.addr)
	// Whatever replaces this forwarder is granted its flows afresh; a
	// deleted one must not leave forward_to_NAME open to the network.
	n.ForgetConsumer(f.addr)
	if err != nil && !errors.Is(err, node.ErrNoRoute) {
		return fmt.Errorf("stop relay %q: %w", f.name, err)
	}
	return nil
}

func (f *forwarder) HandleMessage(c *node.Context, m *routing.Message) error {
	back := f.route()
	_, rest, err := m.Onward.Step()
	if err != nil {
		return err
	}
	if node.IsErrorPayload(m.Payload) && len(rest) > 0 {
		// An error travelling back along a return route that came through
		// this forwarder: pass it on like a hop, whichever side it is from.
		return c.Forward(c, m)
	}
	// A forwarding rule's fence on its way round is forwarded like the
	// messages ahead of it, but neither counted nor taken as a sign of
	// life from the registrant (its plugin made it).
	fence := pluginwire.IsFence(m.Payload)
	count := func(toRegistrant bool, err error, deadRoute bool) {
		if !fence {
			f.count(toRegistrant, err, deadRoute)
		}
	}
	if fromRoute(m.Return, back) {
		// A reply (or a request) from the registrant's side on its way on.
		if !fence {
			f.mu.Lock()
			f.lastSeen = f.s.cfg.now()
			f.mu.Unlock()
		}
		if len(rest) == 0 {
			return fmt.Errorf("relay %q: a message from the registrant has nowhere to go (return %s)", f.name, m.Return)
		}
		if err := c.Forward(c, m); err != nil {
			count(false, err, false)
			return err
		}
		count(false, nil, false)
		if !fence && m.Local.Flow != "" && len(m.Return) > 0 && m.Return[0].IsLocal() && rest[0].IsLocal() {
			f.learn(c, m.Return[0].Value, m.Local.Flow, rest[0].Value, back[0].Value, back)
		}
		return nil
	}
	ret, err := m.Return.Prepend(c.Address())
	if err == nil {
		// A sender that answers along a return route which came through
		// this forwarder (a portal session replying to "opened", say)
		// already carries the route back: send it as it is rather than
		// doubling it.
		onward := rest
		if !fromRoute(rest, back) {
			onward, err = back.Concat(rest)
		}
		if err == nil {
			err = c.SendMessage(c, &routing.Message{Onward: onward, Return: ret, Payload: m.Payload, Local: routing.LocalInfo{Origin: m.Local.Origin}})
			if err != nil {
				// The route to the registrant is the problem: report it.
				count(true, err, true)
				return err
			}
			count(true, nil, false)
			if !fence && m.Local.Flow != "" && len(m.Return) > 0 && m.Return[0].IsLocal() && back[0].IsLocal() {
				f.learn(c, m.Return[0].Value, m.Local.Flow, m.Return[0].Value, back[0].Value, back)
			}
			return nil
		}
	}
	count(true, err, false)
	return err
}

// count records one message. deadRoute marks the forwarder down until the
// next successful forward or registration.
func (f *forwarder) count(toRegistrant bool, err error, deadRoute bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.errors++
		f.lastErr = err.Error()
		if deadRoute && !f.down {
			f.down = true
			f.s.log.Warn("relay cannot reach its registrant; reported down until the registrant is heard from again", "name", f.name, "route_back", f.back.String(), "error", err)
		}
		return
	}
	if toRegistrant {
		f.forwarded++
		f.down = false
	} else {
		f.returned++
	}
}

func (f *forwarder) info(now time.Time, staleChecks int) ForwarderInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi := ForwarderInfo{
		Name:          f.name,
		Address:       routing.Local(f.addr).String(),
		RouteBack:     f.back.String(),
		Node:          f.node,
		Identity:      f.identity,
		State:         ForwarderUp,
		LastError:     f.lastErr,
		Created:       f.created,
		Registered:    f.registered,
		LastSeen:      f.lastSeen,
		Registrations: f.registrations,
		Forwarded:     f.forwarded,
		Returned:      f.returned,
		Errors:        f.errors,

		PluginForwarded: f.byPlugin[0],
		PluginReturned:  f.byPlugin[1],
	}
	if f.interval > 0 {
		fi.CheckInterval = f.interval.String()
	}
	switch {
	case f.down:
		fi.State = ForwarderDown
	case f.interval > 0 && now.Sub(f.lastSeen) > time.Duration(staleChecks)*f.interval+staleSlack:
		fi.State = ForwarderStale
	}
	return fi
}
