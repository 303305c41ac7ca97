package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/logging"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/host/topology"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/routing"
)

// PortalPlugin is the plugin that carries TCP portals.
const PortalPlugin = "portal-tcp"

// Portals is implemented by Transports that can also start portal plugins
// (as subprocesses, for the ferry command). Without it a node runs no
// inlets or outlets.
type Portals interface {
	// Portal starts (or returns) the portal plugin called name.
	Portal(ctx context.Context, name string) (portal.Portal, error)
}

type inletEntry struct {
	in   *portals.Inlet
	name string
	ch   *securechannel.Kept // the inlet's secure channel, when it has one
	sec  *secure
}

// close stops the inlet and then its secure channel.
func (e *inletEntry) close(ctx context.Context) error {
	err := e.in.Close()
	if e.ch != nil {
		if cerr := e.sec.closeKept(ctx, e.ch); cerr != nil && err == nil && !errors.Is(cerr, securechannel.ErrClosed) {
			err = cerr
		}
	}
	return err
}

type outletEntry struct {
	out  *portals.Outlet
	name string
}

// startRelayService starts the relay service once; its forwarders are
// reachable through every listener that allows the relay service. With
// registrants (identifiers) only those identities may register, through a
// secure channel; a running service that admits anyone is replaced by the
// restricted one (its forwarders go: their registrants register again,
// if they may).
//
// maxRegistrations (0: the default) caps the names it holds; a running
// service with another cap is replaced likewise. A restricted or capped
// service is replaced only when asked for one that differs: given neither,
// the running service is kept as it is.
func (r *runtime) startRelayService(addr string, registrants []string, maxRegistrations int) error {
	for _, id := range registrants { // before a running service is replaced
		if err := identity.ValidIdentifier(id); err != nil {
			return api.BadRequest(fmt.Errorf("relay registrant: %w", err))
		}
	}
	if err := state.CheckCap("relay max registrations", maxRegistrations, state.MaxRegistrationsLimit); err != nil {
		return api.BadRequest(err)
	}
	r.relay.mu.Lock()
	defer r.relay.mu.Unlock()
	if old := r.relay.svc; old != nil {
		sameCap := maxRegistrations == 0 || old.MaxRegistrations() == maxRegistrations
		sameRegistrants := len(registrants) == 0 || slices.Equal(old.Registrants(), registrants)
		if sameCap && sameRegistrants {
			return nil
		}
		if len(registrants) == 0 { // a new cap keeps the restriction
			registrants = old.Registrants()
		}
		if maxRegistrations == 0 {
			maxRegistrations = old.MaxRegistrations()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := old.Close(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("replace the relay service: %w", err)
		}
		r.relay.svc = nil
		if addr == "" {
			addr = old.Address().Value
		}
	}
	svc, err := relays.StartService(r.n, relays.ServiceConfig{Address: addr, Registrants: registrants, MaxRegistrations: maxRegistrations, Flows: r.relayFlows, Bindings: r.relayBindings, Logger: r.log.Named("relay")})
	if err != nil {
		return api.BadRequest(err)
	}
	// Registrations through a secure channel reach it through the node's
	// listener (a relay service at its own address too).
	r.secure.lis.Allow(svc.Address().Value)
	r.relay.svc = svc
	return nil
}

// relayBindings lists every transport the node has bound, whose plugins may
// take the relay's forwarding rules.
func (r *runtime) relayBindings() []*transports.Binding {
	var out []*transports.Binding
	for _, b := range r.links.all() {
		out = append(out, b.b)
	}
	return out
}

// relayFlows names the flows of every listener that allows the relay
// service, across every transport the node has bound (bindings may be added
// later, so it is evaluated at each call).
func (r *runtime) relayFlows() []string {
	addr := relays.ServiceAddress
	r.relay.mu.Lock()
	if r.relay.svc != nil {
		addr = r.relay.svc.Address().Value
	}
	r.relay.mu.Unlock()
	var out []string
	for _, b := range r.links.all() {
		out = append(out, relays.ListenerFlows(addr, b.b)()...)
	}
	return out
}

// resolveNodes rewrites /node/NAME hops to an address of one of NAME's
// listeners (api.ResolveNode), asking NAME's control socket in the ferry
// home. It runs before every registration attempt, so a relay node that
// comes back on another port is found again.
func (r *runtime) resolveNodes(ctx context.Context, route routing.Route) (routing.Route, error) {
	out := make(routing.Route, 0, len(route))
	for _, hop := range route {
		if hop.Type == api.NodeType {
			a, err := api.ResolveNode(ctx, r.home, hop.Value, "", r.links.plugins())
			if err != nil {
				return nil, err
			}
			hop = a
		}
		out = append(out, hop)
	}
	return out, nil
}

// register registers name at the relay service reached by at. With wait 0
// it returns at once and keeps trying in the background (a restored or
// declared relay whose relay node is not up yet).
//
// Unless insecure, the registration goes through a secure channel from this
// node's identity to the relay node's secure channel listener (at's route
// with /service/api in place of the relay service), kept open under one
// address and re-opened when the relay node restarts: the relay node binds
// forward_to_NAME to this node's identity (host/relays owner.go), and what
// it forwards reaches this node encrypted. An insecure registration owns its
// name through the node's relay secret only.
func (r *runtime) register(ctx context.Context, name string, at routing.Route, wait time.Duration, insecure bool) (*relays.Registration, error) {
	opts := relays.Options{Logger: r.log.Named("relay"), NoWait: wait <= 0}
	resolve := func(ctx context.Context) (routing.Route, error) { return at, nil }
	if slices.ContainsFunc(at, func(a routing.Address) bool { return a.Type == api.NodeType }) {
		at := at.Clone()
		resolve = func(ctx context.Context) (routing.Route, error) { return r.resolveNodes(ctx, at) }
		opts.Route = resolve
	}
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	if insecure {
		return r.regs.Register(ctx, r.n, at, name, opts)
	}
	svc := at[len(at)-1]
	if !svc.IsLocal() {
		return nil, api.BadRequest(fmt.Errorf("relay route %s: want it to end at the relay service, such as /service/relay", at))
	}
	if r.relayChannel(name) != nil {
		return nil, api.BadRequest(fmt.Errorf("register relay %q: %w; delete it first", name, relays.ErrExists))
	}
	k, err := r.secure.keep(ctx, func(ctx context.Context) (routing.Route, error) {
		rt, err := resolve(ctx)
		if err != nil {
			return nil, err
		}
		return append(rt[:len(rt)-1].Clone(), routing.Local(securechannel.DefaultListenerAddress)), nil
	}, nil, wait <= 0, "relay "+name)
	if err != nil {
		return nil, fmt.Errorf("register relay %q: open a secure channel to the relay node: %w", name, err)
	}
	opts.Route = nil // the channel finds the relay node; its address stays
	reg, err := r.regs.Register(ctx, r.n, routing.Route{k.Address(), svc}, name, opts)
	if err != nil {
		_ = r.secure.closeKept(context.Background(), k)
		return nil, err
	}
	r.relay.mu.Lock()
	if r.relay.chans == nil {
		r.relay.chans = map[string]*securechannel.Kept{}
	}
	r.relay.chans[name] = k
	r.relay.mu.Unlock()
	return reg, nil
}

// relayChannel returns the secure channel registration name goes through.
func (r *runtime) relayChannel(name string) *securechannel.Kept {
	r.relay.mu.Lock()
	defer r.relay.mu.Unlock()
	return r.relay.chans[name]
}

// closeRelayChannel closes the secure channel of registration name, if
// it had one, after the registration is gone.
func (r *runtime) closeRelayChannel(ctx context.Context, name string) {
	r.relay.mu.Lock()
	k := r.relay.chans[name]
	delete(r.relay.chans, name)
	r.relay.mu.Unlock()
	if k != nil {
		if err := r.secure.closeKept(ctx, k); err != nil {
			r.log.Debug("close a relay's secure channel", "relay", name, "error", err)
		}
	}
}

func (r *runtime) Relays(context.Context) (api.Relays, error) {
	out := api.Relays{Registrations: r.regs.List(), Forwarders: []relays.ForwarderInfo{}}
	for i := range out.Registrations {
		r.withChannel(&out.Registrations[i])
	}
	r.relay.mu.Lock()
	svc := r.relay.svc
	r.relay.mu.Unlock()
	if svc != nil {
		out.Forwarders = svc.List()
	}
	out.ForwardersTotal = len(out.Forwarders)
	return out, nil
}

func (r *runtime) CreateRelay(ctx context.Context, req api.CreateRelayRequest) (relays.RegistrationInfo, error) {
	if err := relays.ValidName(req.Name); err != nil {
		return relays.RegistrationInfo{}, api.BadRequest(err)
	}
	at, err := routing.ParseRoute(req.At)
	if err != nil || len(at) == 0 {
		return relays.RegistrationInfo{}, api.BadRequest(fmt.Errorf("relay route %q: want a route to a relay service such as /node/n2/service/relay or /tcp/HOST:PORT/service/relay", req.At))
	}
	reg, err := r.register(ctx, req.Name, at, req.Wait, req.Insecure)
	if err != nil {
		var se *api.StatusError
		switch {
		case errors.As(err, &se):
			return relays.RegistrationInfo{}, err
		case errors.Is(err, relays.ErrExists):
			return relays.RegistrationInfo{}, api.BadRequest(err)
		}
		return relays.RegistrationInfo{}, api.Unavailable(err)
	}
	info := reg.Info()
	r.withChannel(&info)
	return info, nil
}

// withChannel adds the secure channel a registration goes through.
func (r *runtime) withChannel(info *relays.RegistrationInfo) {
	if k := r.relayChannel(info.Name); k != nil {
		ci := k.Info()
		info.SecureChannel, info.RelayIdentifier = ci.Address, ci.PeerIdentifier
	}
}

func (r *runtime) DeleteRelay(ctx context.Context, name string) error {
	if _, ok := r.regs.Get(name); ok {
		err := r.regs.Delete(ctx, name)
		r.closeRelayChannel(ctx, name)
		return err
	}
	r.relay.mu.Lock()
	svc := r.relay.svc
	r.relay.mu.Unlock()
	if svc != nil {
		if err := svc.Delete(ctx, name); err == nil || !errors.Is(err, relays.ErrUnknownRelay) {
			return err
		}
	}
	return api.NotFound(fmt.Errorf("node %s has no relay %q; see ferry relay list --at %s", r.name, name, r.name))
}

// portal returns the portal plugin called name, starting it on first use.
func (r *runtime) portal(ctx context.Context, name string) (portal.Portal, error) {
	if name == "" {
		name = PortalPlugin
	}
	p, ok := r.tr.(Portals)
	if r.tr == nil || !ok {
		return nil, api.Unavailable(fmt.Errorf("this node runs without plugins, so it cannot use %s", name))
	}
	pt, err := p.Portal(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("start the %s portal plugin: %w", name, err)
	}
	return pt, nil
}

func portalInfo(id, name string, st portals.Status) api.Portal {
	return api.Portal{ID: id, Name: name, Status: st}
}

func (r *runtime) Inlets(context.Context) ([]api.Portal, error) {
	r.portals.mu.Lock()
	defer r.portals.mu.Unlock()
	out := []api.Portal{}
	for id, e := range r.portals.inlets {
		p := portalInfo(id, e.name, e.in.Status())
		if e.ch != nil {
			p.SecureChannel, p.ChannelRoute = e.ch.Address().String(), e.ch.Info().Route
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b api.Portal) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (r *runtime) CreateInlet(ctx context.Context, req api.CreateInletRequest) (api.Portal, error) {
	timeout, err := sessionTimeout(req.SessionTimeout)
	if err != nil {
		return api.Portal{}, api.BadRequest(err)
	}
	if err := state.CheckCap("inlet max sessions", req.MaxSessions, state.MaxSessionsLimit); err != nil {
		return api.Portal{}, api.BadRequest(err)
	}
	return r.startInlet(ctx, "", PortalPlugin, req.Address, req.Route, nil, inletSettings{secure: req.Secure, sessionTimeout: timeout, maxSessions: req.MaxSessions}, false)
}

// sessionTimeout parses an inlet's session timeout; "" is the default (0).
func sessionTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("session timeout %q: want a positive duration such as 30s or 2m", s)
	}
	return d, nil
}

// inletSettings are an inlet's settings besides its address and route.
type inletSettings struct {
	secure         bool
	sessionTimeout time.Duration // 0: portals.DefaultSessionTimeout
	maxSessions    int           // 0: portals.DefaultMaxSessions
}

// startInlet starts an inlet; route is route text unless resolved is set.
// A secure inlet first opens a secure channel to the outlet's node (see
// secureRoute) and sends its sessions through it.
func (r *runtime) startInlet(ctx context.Context, name, plugin, address, route string, resolved routing.Route, set inletSettings, restoring bool) (api.Portal, error) {
	secure := set.secure
	if _, _, err := net.SplitHostPort(address); err != nil {
		return api.Portal{}, api.BadRequest(fmt.Errorf("inlet address %q: want host:port such as 127.0.0.1:6000", address))
	}
	rt := resolved
	given := resolved // the route as given, /node/NAME hops unresolved
	if rt == nil {
		var err error
		if given, err = routing.ParseRoute(route); err != nil || len(given) == 0 {
			return api.Portal{}, api.BadRequest(fmt.Errorf("inlet route %q: want a route to an outlet such as /worker/<conn>/service/forward_to_n3/service/outlet", route))
		}
		if rt, err = r.resolveNodes(ctx, given); err != nil && !(secure && restoring) {
			return api.Portal{}, api.BadRequest(err)
		}
	}
	p, err := r.portal(ctx, plugin)
	if err != nil {
		return api.Portal{}, err
	}
	var ch *securechannel.Kept
	if secure {
		if ch, rt, err = r.secureRoute(ctx, given, restoring, "tcp inlet "+address); err != nil {
			return api.Portal{}, err
		}
	}
	in, err := portals.NewInlet(ctx, r.n, portals.InletOptions{ListenAddress: address, Route: rt, Portal: p, Logger: r.log, MaxSessions: set.maxSessions, Session: portals.SessionOptions{SessionTimeout: set.sessionTimeout}})
	if err != nil {
		if ch != nil {
			_ = r.secure.closeKept(ctx, ch)
		}
		return api.Portal{}, api.BadRequest(err)
	}
	e := &inletEntry{in: in, name: name, ch: ch, sec: r.secure}
	r.portals.mu.Lock()
	defer r.portals.mu.Unlock()
	if _, dup := r.portals.inlets[in.Addr()]; dup {
		// The plugin bound the same address twice; keep the first.
		_ = e.close(ctx)
		return api.Portal{}, api.BadRequest(fmt.Errorf("an inlet already listens at %s; see ferry tcp-inlet list --at %s", in.Addr(), r.name))
	}
	r.portals.inlets[in.Addr()] = e
	info := portalInfo(in.Addr(), name, in.Status())
	if ch != nil {
		info.SecureChannel, info.ChannelRoute = ch.Address().String(), ch.Info().Route
	}
	return info, nil
}

// secureRoute opens a secure channel to the node of the outlet at the end of
// rt (its last address; the channel goes to the route before it plus
// /service/api, that node's secure channel listener) and returns the channel
// and the route through it to the outlet. The channel is kept: when the
// outlet's node restarts (or the channel dies otherwise) it is opened again
// under the same address, /node/NAME hops resolved again, so the inlet's
// new sessions work without recreating it. With noWait (an inlet restored
// at node start) it opens in the background: the outlet's node may not be
// up yet.
func (r *runtime) secureRoute(ctx context.Context, rt routing.Route, noWait bool, owner string) (*securechannel.Kept, routing.Route, error) {
	last := rt[len(rt)-1]
	if !last.IsLocal() {
		return nil, nil, api.BadRequest(fmt.Errorf("secure inlet route %s: want it to end at the outlet's local address, such as /service/outlet", rt))
	}
	to := append(rt[:len(rt)-1].Clone(), routing.Local(securechannel.DefaultListenerAddress))
	route := func(ctx context.Context) (routing.Route, error) { return r.resolveNodes(ctx, to) }
	k, err := r.secure.keep(ctx, route, nil, noWait, owner)
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			return nil, nil, &api.StatusError{Code: se.Code, Err: fmt.Errorf("secure inlet: open a secure channel to %s: %w", to, err)}
		}
		return nil, nil, api.Unavailable(fmt.Errorf("secure inlet: open a secure channel to %s: %w", to, err))
	}
	return k, routing.Route{k.Address(), last}, nil
}

func (r *runtime) DeleteInlet(ctx context.Context, id string) error {
	r.portals.mu.Lock()
	e := r.portals.inlets[id]
	delete(r.portals.inlets, id)
	r.portals.mu.Unlock()
	if e == nil {
		return api.NotFound(fmt.Errorf("node %s has no tcp inlet %q; see ferry tcp-inlet list --at %s", r.name, id, r.name))
	}
	return e.close(ctx)
}

func (r *runtime) Outlets(context.Context) ([]api.Portal, error) {
	r.portals.mu.Lock()
	defer r.portals.mu.Unlock()
	out := []api.Portal{}
	for id, e := range r.portals.outlets {
		out = append(out, portalInfo(id, e.name, e.out.Status()))
	}
	slices.SortFunc(out, func(a, b api.Portal) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (r *runtime) CreateOutlet(ctx context.Context, req api.CreateOutletRequest) (api.Portal, error) {
	if err := state.CheckCap("outlet max sessions", req.MaxSessions, state.MaxSessionsLimit); err != nil {
		return api.Portal{}, api.BadRequest(err)
	}
	return r.startOutlet(ctx, "", PortalPlugin, req.Address, req.Target, req.Secure, req.MaxSessions)
}

// localAddr accepts "outlet" or "/service/outlet".
func localAddr(what, a string) (string, error) {
	if a == "" || a[0] != '/' {
		return a, nil
	}
	addr, err := routing.ParseAddress(a)
	if err != nil || !addr.IsLocal() {
		return "", fmt.Errorf("%s address %q: want a local address such as /service/outlet", what, a)
	}
	return addr.Value, nil
}

// startOutlet starts an outlet, reachable also through the node's secure
// channel listener; a secure one is reachable only that way.
// maxSessions 0 is portals.DefaultMaxSessions.
func (r *runtime) startOutlet(ctx context.Context, name, plugin, address, target string, secure bool, maxSessions int) (api.Portal, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return api.Portal{}, api.BadRequest(fmt.Errorf("outlet target %q: want host:port such as 127.0.0.1:9000", target))
	}
	addr, err := localAddr("outlet", address)
	if err != nil {
		return api.Portal{}, api.BadRequest(err)
	}
	p, err := r.portal(ctx, plugin)
	if err != nil {
		return api.Portal{}, err
	}
	opts := portals.OutletOptions{Address: addr, Target: target, Portal: p, Logger: r.log, MaxSessions: maxSessions}
	if secure {
		opts.Wrap = func(w node.Worker) node.Worker { return &channelOnly{w: w, limiter: logging.NewLimiter(0, 0)} }
	}
	o, err := portals.NewOutlet(r.n, opts)
	if err != nil {
		return api.Portal{}, api.BadRequest(fmt.Errorf("%w; see ferry worker list --at %s", err, r.name))
	}
	r.secure.lis.Allow(o.Address().Value)
	id := o.Address().String()
	r.portals.mu.Lock()
	r.portals.outlets[id] = &outletEntry{out: o, name: name}
	r.portals.mu.Unlock()
	return portalInfo(id, name, o.Status()), nil
}

func (r *runtime) DeleteOutlet(_ context.Context, id string) error {
	if v, err := localAddr("outlet", id); err == nil && v != "" {
		id = routing.Local(v).String()
	}
	r.portals.mu.Lock()
	e := r.portals.outlets[id]
	delete(r.portals.outlets, id)
	r.portals.mu.Unlock()
	if e == nil {
		return api.NotFound(fmt.Errorf("node %s has no tcp outlet %q; see ferry tcp-outlet list --at %s", r.name, id, r.name))
	}
	return e.out.Close()
}

// restore starts the relays, outlets and inlets a node's configuration
// saved. Relays register in the background; a failure of one item is logged
// and does not stop the node (its state shows in node show).
func (r *runtime) restore(ctx context.Context, cfg state.NodeConfig) {
	for _, o := range cfg.Outlets {
		if _, err := r.startOutlet(ctx, "", PortalPlugin, o.Address, o.Target, o.Secure, o.MaxSessions); err != nil {
			r.log.Error("restore tcp outlet", "address", o.Address, "target", o.Target, "error", err)
		}
	}
	for _, rl := range cfg.Relays {
		at, err := routing.ParseRoute(rl.At)
		if err == nil {
			_, err = r.register(ctx, rl.Name, at, 0, rl.Insecure)
		}
		if err != nil {
			r.log.Error("restore relay", "name", rl.Name, "at", rl.At, "error", err)
		}
	}
	for _, sc := range cfg.SecureChannels {
		if err := r.restoreChannel(ctx, sc); err != nil {
			r.log.Error("restore secure channel", "address", sc.Address, "route", sc.Route, "error", err)
		}
	}
	for _, in := range cfg.Inlets {
		timeout, _ := sessionTimeout(in.SessionTimeout) // checked when it was created
		set := inletSettings{secure: in.Secure, sessionTimeout: timeout, maxSessions: in.MaxSessions}
		if _, err := r.startInlet(ctx, "", PortalPlugin, in.Address, in.Route, nil, set, true); err != nil {
			r.log.Error("restore tcp inlet", "address", in.Address, "route", in.Route, "error", err)
		}
	}
}

// restoreChannel keeps a saved secure channel under its saved address,
// opening it in the background: the far node may start after this one.
func (r *runtime) restoreChannel(ctx context.Context, sc state.SecureChannel) error {
	addr, err := routing.ParseAddress(sc.Address)
	if err != nil || !addr.IsLocal() || !routing.IsWorkerID(addr.Value) {
		return fmt.Errorf("saved secure channel address %q: want /worker/<id>", sc.Address)
	}
	to, err := routing.ParseRoute(sc.Route)
	if err != nil || len(to) == 0 {
		return fmt.Errorf("saved secure channel route %q: want a route to a secure channel listener", sc.Route)
	}
	_, err = r.secure.keepAt(ctx, addr.Value, to, sc.Authorized, 0, true)
	return err
}

// closePortals stops inlets, outlets and relay registrations (before the
// node and the plugins stop, so sessions end with a reason).
func (r *runtime) closePortals(ctx context.Context) {
	r.portals.mu.Lock()
	ins, outs := r.portals.inlets, r.portals.outlets
	r.portals.inlets, r.portals.outlets = map[string]*inletEntry{}, map[string]*outletEntry{}
	r.portals.mu.Unlock()
	for _, e := range ins {
		_ = e.close(ctx)
	}
	for _, e := range outs {
		e.out.Close()
	}
	if err := r.regs.Close(ctx); err != nil {
		r.log.Debug("close relay registrations", "error", err)
	}
}

// startSpecPortals starts the outlets, relays and inlets a topology file
// declares for this node, in that order (an inlet's route may lead through
// a relay). Relays register in the background: the relay node may start
// after this one.
func (r *runtime) startSpecPortals(ctx context.Context, spec *topology.NodeSpec) error {
	conn := func(name string) (routing.Address, error) {
		if w, ok := r.links.connectionWorker(name); ok {
			return w, nil
		}
		return routing.Address{}, fmt.Errorf("node %s has no connection %q", spec.Name, name)
	}
	for _, o := range spec.Outlets {
		if _, err := r.startOutlet(ctx, o.Name, o.Plugin, o.Address, o.Target, o.Secure, o.MaxSessions); err != nil {
			return fmt.Errorf("node %s: outlet %s: %w", spec.Name, o.Name, err)
		}
	}
	for _, rl := range spec.Relays {
		at, err := rl.At.Resolve(conn)
		if err != nil {
			return fmt.Errorf("node %s: relay %s: %w", spec.Name, rl.Name, err)
		}
		at = RelayServiceRoute(at)
		if _, err := r.register(ctx, rl.Name, at, 0, !rl.Secure); err != nil {
			return fmt.Errorf("node %s: relay %s: %w", spec.Name, rl.Name, err)
		}
	}
	for _, in := range spec.Inlets {
		rt, err := in.To.Resolve(conn)
		if err != nil {
			return fmt.Errorf("node %s: inlet %s: %w", spec.Name, in.Name, err)
		}
		if _, err := r.startInlet(ctx, in.Name, in.Plugin, in.Listen, "", rt, inletSettings{secure: in.Secure, maxSessions: in.MaxSessions}, true); err != nil {
			return fmt.Errorf("node %s: inlet %s: %w", spec.Name, in.Name, err)
		}
	}
	return nil
}

// RelayServiceRoute completes a route to a relay node into a route to its
// relay service: when the route ends at a node, a transport address or a
// connection's worker, /service/relay is appended; a route that already
// ends at a service is kept.
func RelayServiceRoute(at routing.Route) routing.Route {
	if len(at) == 0 {
		return at
	}
	last := at[len(at)-1]
	if !last.IsLocal() || routing.IsWorkerID(last.Value) {
		return append(at.Clone(), routing.Local(relays.ServiceAddress))
	}
	return at
}

// usesPortal reports whether a declared inlet or outlet uses plugin name:
// a portal plugin, not a transport to bind.
func usesPortal(spec *topology.NodeSpec, name string) bool {
	for _, in := range spec.Inlets {
		if in.Plugin == name {
			return true
		}
	}
	for _, o := range spec.Outlets {
		if o.Plugin == name {
			return true
		}
	}
	return name == PortalPlugin
}

// channelOnly admits to a worker (a secure outlet) only messages that came
// through a secure channel; others are refused and the sender told why.
type channelOnly struct {
	w       node.Worker
	limiter *logging.Limiter
}

// errNeedsChannel is the refusal a secure outlet sends back.
var errNeedsChannel = fmt.Errorf("this outlet accepts sessions only through a secure channel (tcp-inlet create --secure): %w", node.ErrAccessDenied)

func (g *channelOnly) HandleMessage(c *node.Context, m *routing.Message) error {
	if m.Local.Identity == "" {
		g.limiter.Info(c.Node().Logger(), "outlet needs channel", "session refused: the outlet accepts sessions only through a secure channel", "outlet", c.Address().String(), "return", m.Return.String())
		c.ReportUndeliverable(m, errNeedsChannel)
		return nil
	}
	return g.w.HandleMessage(c, m)
}

func (g *channelOnly) Initialize(c *node.Context) error {
	if i, ok := g.w.(node.Initializer); ok {
		return i.Initialize(c)
	}
	return nil
}

func (g *channelOnly) Shutdown(c *node.Context) error {
	if s, ok := g.w.(node.ShutdownHook); ok {
		return s.Shutdown(c)
	}
	return nil
}
