// Package daemon is the node process behind `ferry node run`: a node with
// the default services, the TCP transport bound to it with a listener whose
// network input reaches only the services meant for it, and the control API
// on the node's Unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/host/topology"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// DefaultServices start on every node the ferry command runs.
var DefaultServices = []string{services.EchoAddress, services.UppercaseAddress}

// NetworkAllow are the local addresses network input may reach on the
// node's listeners and connections: the services meant for remote callers.
var NetworkAllow = []string{services.EchoAddress, services.UppercaseAddress, services.HopAddress, "relay", securechannel.DefaultListenerAddress}

// serviceTypes are the types service start takes, sorted.
func serviceTypes() []string {
	out := slices.Clone(serviceKinds)
	slices.Sort(out)
	return slices.Compact(out)
}

// serviceKinds are the worker kinds listed as services.
var serviceKinds = append(services.Names(), "relay", "secure-channel-listener")

// Transports provides the node's transports; the ferry command backs it
// with the plugin manager (plugins as subprocesses), tests may use an
// in-process transport.
type Transports interface {
	// Transport starts (or returns) the transport plugin called name.
	Transport(ctx context.Context, name string) (transport.Transport, error)
	// Plugins lists the plugins available to the node.
	Plugins(ctx context.Context) ([]api.Plugin, error)
	// Watch calls restarted whenever the process behind t is running again
	// after a crash; it returns a function that stops watching.
	Watch(t transport.Transport, restarted func()) (cancel func())
	// Close stops every plugin.
	Close() error
}

// Options configure Run.
type Options struct {
	Config     state.NodeConfig
	Home       *state.Home
	Logger     hclog.Logger
	Transports Transports
	// Spec, when set, is the node as a topology file declares it (with
	// references resolved): exactly its plugins, listeners, connections
	// and services, instead of the command's defaults.
	Spec *topology.NodeSpec
	// Ready is called once the control API answers, with the status.
	Ready func(api.Status)
}

// Run runs the node until ctx ends or the control API asks it to shut down.
// An error before Ready was called means the node never served.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Info})
	}
	cfg := o.Config
	if err := o.Home.CheckSocketPath(cfg.Name); err != nil {
		return err
	}
	n, err := node.New(node.Config{Name: cfg.Name, Logger: log})
	if err != nil {
		return fmt.Errorf("start node %s: %w", cfg.Name, err)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	r := &runtime{n: n, log: log, name: cfg.Name, stop: stop, started: time.Now(), tr: o.Transports, home: o.Home,
		links: newLinks(n, log, o.Transports), portals: portalComp{inlets: map[string]*inletEntry{}, outlets: map[string]*outletEntry{}}}
	if o.Home != nil { // relay names stay this node's across restarts (host/relays owner.go)
		r.regs.SecretFile = filepath.Join(o.Home.NodeDir(cfg.Name), "relay.secret")
	}
	defer r.teardown()
	if r.secure, err = startSecure(n, log, o.Home, cfg); err != nil {
		return err
	}
	if o.Home != nil {
		r.secure.resolve = r.resolveNodes
	}
	if r.tr != nil {
		n.SetFallbackResolver(node.ResolverFunc(r.resolveByPlugin))
	}

	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if o.Spec != nil {
		err = r.startSpec(tctx, o.Spec)
		if err == nil {
			err = r.startSaved(tctx, cfg)
		}
	} else {
		err = r.startDefault(tctx, cfg)
	}
	cancel()
	if err != nil {
		return err
	}
	srv, err := api.Listen(o.Home.SocketPath(cfg.Name), r, log.Named("api"))
	if err != nil {
		return err
	}
	pid := os.Getpid()
	if err := o.Home.WritePid(cfg.Name, pid); err != nil {
		srv.Close(context.Background())
		return err
	}
	defer o.Home.RemovePid(cfg.Name, pid)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	st, _ := r.Status(ctx)
	log.Info("node serving", "pid", pid, "socket", o.Home.SocketPath(cfg.Name), "listeners", len(st.Listeners))
	if o.Ready != nil {
		o.Ready(st)
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		if err != nil {
			log.Error("control API stopped", "error", err)
		}
	case <-n.Done():
	}
	log.Info("node stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Close(sctx)
}

type runtime struct {
	n       *node.Node
	log     hclog.Logger
	name    string
	stop    context.CancelFunc
	started time.Time
	tr      Transports
	home    *state.Home
	regs    relays.Set
	links   *links
	secure  *secure

	// The runtime's components, each with its own lock: transports with
	// their listeners and connections, the relay service, portals. No
	// lock is held while a plugin starts, and none across components.
	relay   relayComp
	portals portalComp
}

// relayComp is the node's relay service (forwarders for other nodes); the
// registrations this node made elsewhere are in regs, which locks itself.
type relayComp struct {
	mu  sync.Mutex
	svc *relays.Service
	// chans are the secure channels this node's registrations go through,
	// by relay name.
	chans map[string]*securechannel.Kept
}

// portalComp holds the node's TCP inlets and outlets.
type portalComp struct {
	mu      sync.Mutex
	inlets  map[string]*inletEntry  // by bound listen address
	outlets map[string]*outletEntry // by worker address (route text)
}

// resolveByPlugin serves routes whose address type no attached transport
// serves yet: the plugin named after the type is started and bound on first
// use, so a third-party transport dropped into the plugin directory works
// in routes (/unix/...) without being declared anywhere.
func (r *runtime) resolveByPlugin(ctx context.Context, a routing.Address) (routing.Address, error) {
	b, err := r.links.attach(ctx, a.Type, nil)
	if err != nil {
		return routing.Address{}, fmt.Errorf("no transport serves /%s/ routes on this node: %w", a.Type, err)
	}
	if served := b.Transport().Info().AddressType; served != a.Type {
		return routing.Address{}, fmt.Errorf("plugin %s serves /%s/ routes, not /%s/ ones; name the plugin in a topology file's plugin block (address_type) or use /%s/", a.Type, served, a.Type, served)
	}
	return b.Resolve(ctx, a)
}

// startDefault starts a node the ferry command created: the default
// services and the relay service, then what it saved.
func (r *runtime) startDefault(ctx context.Context, cfg state.NodeConfig) error {
	for _, s := range DefaultServices {
		if _, err := services.Start(r.n, s, ""); err != nil {
			return fmt.Errorf("start service %s: %w", s, err)
		}
	}
	// The relay service as saved (restricted to registrants), or the
	// default one.
	var relayAddr string
	var registrants []string
	var maxRegistrations int
	for _, s := range cfg.Services {
		if s.Type == "relay" {
			relayAddr, registrants, maxRegistrations = s.Address, s.Authorized, s.MaxRegistrations
		}
	}
	if err := r.startRelayService(relayAddr, registrants, maxRegistrations); err != nil {
		return err
	}
	return r.startSaved(ctx, cfg)
}

// startSaved starts what the node's saved configuration holds: the
// services, listeners and connections made with the command (none: the
// node opens no socket and starts no transport plugin), then its relays
// and portals. A topology-started node gets these on top of its file, so
// a change made with the command lasts across stop and start either way.
func (r *runtime) startSaved(ctx context.Context, cfg state.NodeConfig) error {
	for _, s := range cfg.Services {
		if slices.Contains(DefaultServices, s.Address) && s.Address == s.Type {
			continue
		}
		if s.Type == "relay" {
			if err := r.startRelayService(s.Address, s.Authorized, s.MaxRegistrations); err != nil {
				return err
			}
			continue
		}
		if _, err := r.secure.startService(s.Type, s.Address, s.Authorized); err != nil {
			if errors.Is(err, node.ErrAddressInUse) {
				continue // declared by the topology file as well
			}
			return fmt.Errorf("start service %s at %s: %w", s.Type, s.Address, err)
		}
	}
	if r.tr == nil {
		return nil
	}
	for _, l := range cfg.Listeners {
		req := withDefaultAllow(api.CreateRequest{Transport: l.Transport, Address: l.Address, Allow: l.Allow, Settings: l.Settings})
		if _, err := r.links.listen(ctx, "", req, l.Default); err != nil {
			return err
		}
	}
	for _, c := range cfg.Connections {
		r.links.restoreConnection(ctx, c)
	}
	r.restore(ctx, cfg)
	return nil
}

// startSpec starts the node a topology file declares.
func (r *runtime) startSpec(ctx context.Context, spec *topology.NodeSpec) error {
	for _, p := range spec.Plugins {
		if usesPortal(spec, p.Name) {
			continue // started on first use by an inlet or outlet
		}
		if _, err := r.links.attach(ctx, p.Name, p.Settings); err != nil {
			return fmt.Errorf("node %s: %w", spec.Name, err)
		}
	}
	for _, s := range spec.Services {
		if s.Type == "relay" {
			if err := r.startRelayService(s.Address, nil, s.MaxRegistrations); err != nil {
				return fmt.Errorf("node %s: %w", spec.Name, err)
			}
			continue
		}
		if _, err := services.Start(r.n, s.Type, s.Address); err != nil {
			return fmt.Errorf("node %s: service %s: %w", spec.Name, s.Type, err)
		}
	}
	for i, l := range spec.Listeners {
		req := api.CreateRequest{Transport: l.Plugin, Address: l.Address, Allow: l.Allow}
		if _, err := r.links.listen(ctx, l.Name, req, i == 0); err != nil {
			return fmt.Errorf("node %s: listener %s: %w", spec.Name, l.Name, err)
		}
	}
	for _, c := range spec.Connections {
		req := api.CreateRequest{Transport: c.Plugin, Address: c.Address, Allow: c.Allow}
		if _, err := r.links.connect(ctx, c.Name, "", req); err != nil {
			return fmt.Errorf("node %s: connection %s to %s: %w", spec.Name, c.Name, c.Address, err)
		}
	}
	return r.startSpecPortals(ctx, spec)
}

func (r *runtime) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.closePortals(ctx)
	if r.secure != nil {
		r.secure.close(ctx)
	}
	r.links.close()
	if err := r.n.Shutdown(ctx); err != nil {
		r.log.Warn("node shutdown", "error", err)
	}
	if r.tr != nil {
		if err := r.tr.Close(); err != nil {
			r.log.Warn("stop plugins", "error", err)
		}
	}
}

func (r *runtime) Status(ctx context.Context) (api.Status, error) {
	st := api.Status{Name: r.name, Pid: os.Getpid(), Started: r.started}
	st.Listeners, _ = r.Listeners(ctx)
	st.Connections, _ = r.Connections(ctx)
	st.Workers, _ = r.Workers(ctx)
	st.WorkersTotal = len(st.Workers)
	if len(st.Workers) > api.StatusListLimit {
		st.Workers = st.Workers[:api.StatusListLimit]
	}
	st.Services, _ = r.Services(ctx)
	st.Transports = r.links.plugins()
	st.State, st.Plugins = api.StateUp, r.pluginStates()
	for _, p := range st.Plugins {
		if p.State != string(plugins.StateRunning) && p.State != string(plugins.StateStarting) && p.State != string(plugins.StateStopped) {
			st.State = api.StateDegraded
			reason := fmt.Sprintf("%s plugin %s is %s", p.Kind, p.Name, p.State)
			if p.LastError != "" {
				reason += ": " + p.LastError
			}
			st.Reason = strings.TrimPrefix(st.Reason+"; "+reason, "; ")
		}
	}
	rl, _ := r.Relays(ctx)
	if len(rl.Forwarders) > api.StatusListLimit {
		rl.Forwarders = rl.Forwarders[:api.StatusListLimit]
	}
	st.Relays = &rl
	st.Inlets, _ = r.Inlets(ctx)
	st.Outlets, _ = r.Outlets(ctx)
	return st, nil
}

// PluginStatuses is implemented by a Transports whose plugins are
// supervised (the ferry command's): status output shows a node DEGRADED
// while one of them is not running.
type PluginStatuses interface {
	PluginStatuses() []plugins.Status
}

func (r *runtime) pluginStates() []api.PluginState {
	out := []api.PluginState{}
	ps, ok := r.tr.(PluginStatuses)
	if !ok {
		return out
	}
	for _, s := range ps.PluginStatuses() {
		out = append(out, api.PluginState{Kind: string(s.Kind), Name: s.Name, State: string(s.State), Pid: s.Pid,
			Restarts: s.Restarts, LastError: s.LastError, Since: s.Since})
	}
	return out
}

func addrText(a string) string { return routing.Local(a).String() }

func (r *runtime) Workers(context.Context) ([]api.Worker, error) {
	ws := r.n.Workers()
	out := make([]api.Worker, 0, len(ws))
	for _, w := range ws {
		aw := api.Worker{Kind: w.Kind, Queued: w.Queued}
		for _, a := range w.Addresses {
			aw.Addresses = append(aw.Addresses, addrText(a))
		}
		out = append(out, aw)
	}
	return out, nil
}

func (r *runtime) Services(context.Context) ([]api.Service, error) {
	out := []api.Service{}
	for _, w := range r.n.Workers() {
		if slices.Contains(serviceKinds, w.Kind) {
			s := api.Service{Type: w.Kind, Address: addrText(w.Addresses[0]), Authorized: r.secure.authorized(w.Addresses[0])}
			if w.Kind == "relay" {
				r.relay.mu.Lock()
				if r.relay.svc != nil && r.relay.svc.Address().Value == w.Addresses[0] {
					s.Authorized = r.relay.svc.Registrants()
					s.MaxRegistrations = r.relay.svc.MaxRegistrations()
				}
				r.relay.mu.Unlock()
			}
			out = append(out, s)
		}
	}
	return out, nil
}

func (r *runtime) StartService(_ context.Context, req api.StartServiceRequest) (api.Service, error) {
	if req.Type != "relay" && req.MaxRegistrations != 0 {
		return api.Service{}, api.BadRequest(fmt.Errorf("max registrations applies to the relay service only, not %q", req.Type))
	}
	if req.Type == "relay" {
		addr, err := localAddr("service", req.Address)
		if err != nil {
			return api.Service{}, api.BadRequest(err)
		}
		r.relay.mu.Lock()
		running := r.relay.svc != nil
		r.relay.mu.Unlock()
		if running && len(req.Authorized) == 0 && req.MaxRegistrations == 0 {
			return api.Service{}, api.BadRequest(errors.New("this node already runs the relay service; see ferry service list (with --authorized IDENTIFIER it is restricted to those registrants instead, with --max-registrations N capped at N names)"))
		}
		if err := r.startRelayService(addr, req.Authorized, req.MaxRegistrations); err != nil {
			return api.Service{}, err
		}
		r.relay.mu.Lock()
		svc := r.relay.svc
		r.relay.mu.Unlock()
		return api.Service{Type: "relay", Address: svc.Address().String(), Authorized: svc.Registrants(), MaxRegistrations: svc.MaxRegistrations()}, nil
	}
	if _, err := services.New(req.Type); err != nil {
		return api.Service{}, api.BadRequest(fmt.Errorf("unknown service type %q; the types are: %s", req.Type, strings.Join(serviceTypes(), ", ")))
	}
	addr := req.Address
	if addr != "" && addr[0] == '/' {
		a, err := routing.ParseAddress(addr)
		if err != nil || !a.IsLocal() {
			return api.Service{}, api.BadRequest(fmt.Errorf("service address %q: want a local address such as /service/NAME", req.Address))
		}
		addr = a.Value
	}
	a, err := r.secure.startService(req.Type, addr, req.Authorized)
	if err != nil {
		if errors.Is(err, node.ErrAddressInUse) {
			return api.Service{}, api.BadRequest(fmt.Errorf("%w; see ferry service list", err))
		}
		return api.Service{}, err
	}
	return api.Service{Type: req.Type, Address: a.String(), Authorized: req.Authorized}, nil
}

func (r *runtime) Send(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error) {
	if next, _ := route.Next(); next.Type == api.NodeType {
		return nil, api.BadRequest(fmt.Errorf("route %s names a node; the ferry command resolves /node/NAME before sending", route))
	}
	m, err := r.n.SendAndReceive(ctx, route, payload)
	if err != nil {
		var re *node.RemoteError
		switch {
		case errors.As(err, &re) && re.Node != r.name:
			// Another node on the way could not deliver and said why:
			// its words are the answer (502: the failure is past us).
			return nil, &api.StatusError{Code: http.StatusBadGateway, Err: re}
		case errors.Is(err, node.ErrNoRoute):
			return nil, api.NotFound(fmt.Errorf("%w; see ferry worker list", err))
		case errors.Is(err, node.ErrUnknownTranspt):
			return nil, api.BadRequest(err)
		}
		return nil, err
	}
	return m, nil
}

func (r *runtime) Listeners(context.Context) ([]api.Listener, error) {
	return r.links.listeners(false), nil
}

// Listener returns one listener, by id or bound address, with what its
// transport reports about it.
func (r *runtime) Listener(_ context.Context, id string) (api.Listener, error) {
	for _, l := range r.links.listeners(true) {
		if l.ID == id || l.Address == id || l.Route() == id {
			return l, nil
		}
	}
	return api.Listener{}, api.NotFound(fmt.Errorf("node %s has no listener %q; see ferry listener list --at %s", r.name, id, r.name))
}

func (r *runtime) CreateListener(ctx context.Context, req api.CreateRequest) (api.Listener, error) {
	return r.links.listen(ctx, "", withDefaultAllow(req), false)
}

func (r *runtime) DeleteListener(ctx context.Context, id string) error {
	return r.links.closeListener(ctx, id)
}

func (r *runtime) Connections(context.Context) ([]api.Connection, error) {
	return r.links.connections(), nil
}

func (r *runtime) CreateConnection(ctx context.Context, req api.CreateRequest) (api.Connection, error) {
	return r.links.connect(ctx, "", "", withDefaultAllow(req))
}

func (r *runtime) DeleteConnection(ctx context.Context, id string) error {
	return r.links.closeConnection(ctx, id)
}

func (r *runtime) Plugins(ctx context.Context) ([]api.Plugin, error) {
	if r.tr == nil {
		return nil, nil
	}
	return r.tr.Plugins(ctx)
}

func (r *runtime) Shutdown() { r.stop() }
