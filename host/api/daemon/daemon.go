// Package daemon is the node process behind `ferry node run`: a node with
// the default services, the TCP transport bound to it with a listener whose
// network input reaches only the services meant for it, and the control API
// on the node's Unix socket.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/host/topology"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// DefaultServices start on every node the ferry command runs.
var DefaultServices = []string{services.EchoAddress, services.UppercaseAddress}

// NetworkAllow are the local addresses network input may reach on the
// node's listeners and connections: the services meant for remote callers.
var NetworkAllow = []string{services.EchoAddress, services.UppercaseAddress, services.HopAddress, "relay"}

// serviceKinds are the worker kinds listed as services.
var serviceKinds = append(services.Names(), "relay")

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
		bindings: map[string]*binding{}, names: map[string]string{},
		inlets: map[string]*inletEntry{}, outlets: map[string]*outletEntry{}}
	defer r.teardown()
	if r.tr != nil {
		n.SetFallbackResolver(node.ResolverFunc(r.resolveByPlugin))
	}

	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if o.Spec != nil {
		err = r.startSpec(tctx, o.Spec)
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

	mu        sync.Mutex
	bindings  map[string]*binding // by plugin name
	names     map[string]string   // listener/connection id -> name in the topology file
	defaultID string              // the node's own listener, listed first
	relaySvc  *relays.Service
	inlets    map[string]*inletEntry  // by bound listen address
	outlets   map[string]*outletEntry // by worker address (route text)
}

type binding struct {
	plugin  string
	b       *transports.Binding
	unwatch func()
}

// attach starts plugin and binds it to the node (once per plugin).
func (r *runtime) attach(ctx context.Context, plugin string, settings map[string]string) (*transports.Binding, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.bindings[plugin]; b != nil {
		return b.b, nil
	}
	if r.tr == nil {
		return nil, api.Unavailable(fmt.Errorf("this node runs without transports, so it cannot use %s", plugin))
	}
	t, err := r.tr.Transport(ctx, plugin)
	if err != nil {
		return nil, fmt.Errorf("start the %s transport plugin: %w", plugin, err)
	}
	if settings == nil {
		settings = map[string]string{}
	}
	b, err := transports.Attach(r.n, t, transports.Options{Logger: r.log.Named(plugin), Settings: settings})
	if err != nil {
		return nil, fmt.Errorf("attach the %s transport: %w", plugin, err)
	}
	r.bindings[plugin] = &binding{plugin: plugin, b: b, unwatch: r.tr.Watch(t, b.Reconnect)}
	return b, nil
}

// resolveByPlugin serves routes whose address type no attached transport
// serves yet: the plugin named after the type is started and bound on first
// use, so a third-party transport dropped into the plugin directory works
// in routes (/unix/...) without being declared anywhere.
func (r *runtime) resolveByPlugin(ctx context.Context, a routing.Address) (routing.Address, error) {
	b, err := r.attach(ctx, a.Type, nil)
	if err != nil {
		return routing.Address{}, fmt.Errorf("no transport serves /%s/ routes on this node: %w", a.Type, err)
	}
	if served := b.Transport().Info().AddressType; served != a.Type {
		return routing.Address{}, fmt.Errorf("plugin %s serves /%s/ routes, not /%s/ ones; name the plugin in a topology file's plugin block (address_type) or use /%s/", a.Type, served, a.Type, served)
	}
	return b.Resolve(ctx, a)
}

// startDefault starts what every node the ferry command creates has: the
// default services and a TCP listener open to the network services.
func (r *runtime) startDefault(ctx context.Context, cfg state.NodeConfig) error {
	for _, s := range DefaultServices {
		if _, err := services.Start(r.n, s, ""); err != nil {
			return fmt.Errorf("start service %s: %w", s, err)
		}
	}
	for _, s := range cfg.Services {
		if slices.Contains(DefaultServices, s.Address) && s.Address == s.Type {
			continue
		}
		if _, err := services.Start(r.n, s.Type, s.Address); err != nil {
			return fmt.Errorf("start service %s at %s: %w", s.Type, s.Address, err)
		}
	}
	if err := r.startRelayService(""); err != nil {
		return err
	}
	if r.tr == nil {
		return nil
	}
	b, err := r.attach(ctx, "tcp", nil)
	if err != nil {
		return err
	}
	addr := cfg.TCPListenerAddress
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	li, err := b.Listen(ctx, addr, NetworkAllow...)
	if err != nil {
		return fmt.Errorf("tcp listener at %s (--tcp-listener-address): %w", addr, err)
	}
	r.defaultID = li.ID
	for _, a := range cfg.Listeners {
		if _, err := b.Listen(ctx, a, NetworkAllow...); err != nil {
			return fmt.Errorf("tcp listener at %s: %w", a, err)
		}
	}
	for _, c := range cfg.Connections {
		r.restoreConnection(ctx, b, c)
	}
	r.restore(ctx, cfg)
	return nil
}

// restoreConnection dials a saved connection at its old worker id. The
// peer may be down while this node starts, so the first dial is retried in
// the background with capped backoff; after that the binding re-dials by
// itself.
func (r *runtime) restoreConnection(ctx context.Context, b *transports.Binding, c state.Connection) {
	try := func(ctx context.Context) error {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := b.ConnectAs(dctx, c.ID, c.Address, NetworkAllow...)
		return err
	}
	err := try(ctx)
	if err == nil {
		return
	}
	r.log.Warn("restore tcp connection; retrying in the background", "worker", routing.Local(c.ID).String(), "address", c.Address, "error", err)
	life := r.n.Context()
	go func() {
		backoff := 100 * time.Millisecond
		for {
			t := time.NewTimer(backoff)
			select {
			case <-life.Done():
				t.Stop()
				return
			case <-t.C:
			}
			err := try(life)
			if err == nil || errors.Is(err, node.ErrAddressInUse) || life.Err() != nil {
				if err == nil {
					r.log.Info("tcp connection restored", "worker", routing.Local(c.ID).String(), "address", c.Address)
				}
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

// startSpec starts the node a topology file declares.
func (r *runtime) startSpec(ctx context.Context, spec *topology.NodeSpec) error {
	for _, p := range spec.Plugins {
		if usesPortal(spec, p.Name) {
			continue // started on first use by an inlet or outlet
		}
		if _, err := r.attach(ctx, p.Name, p.Settings); err != nil {
			return fmt.Errorf("node %s: %w", spec.Name, err)
		}
	}
	for _, s := range spec.Services {
		if s.Type == "relay" {
			if err := r.startRelayService(s.Address); err != nil {
				return fmt.Errorf("node %s: %w", spec.Name, err)
			}
			continue
		}
		if _, err := services.Start(r.n, s.Type, s.Address); err != nil {
			return fmt.Errorf("node %s: service %s: %w", spec.Name, s.Type, err)
		}
	}
	for _, l := range spec.Listeners {
		b, err := r.attach(ctx, l.Plugin, nil)
		if err != nil {
			return fmt.Errorf("node %s: listener %s: %w", spec.Name, l.Name, err)
		}
		li, err := b.Listen(ctx, l.Address, l.Allow...)
		if err != nil {
			return fmt.Errorf("node %s: listener %s: %w", spec.Name, l.Name, err)
		}
		r.mu.Lock()
		r.names[li.ID] = l.Name
		if r.defaultID == "" && l.Plugin == "tcp" {
			r.defaultID = li.ID
		}
		r.mu.Unlock()
	}
	for _, c := range spec.Connections {
		b, err := r.attach(ctx, c.Plugin, nil)
		if err != nil {
			return fmt.Errorf("node %s: connection %s: %w", spec.Name, c.Name, err)
		}
		ci, err := b.Connect(ctx, c.Address, c.Allow...)
		if err != nil {
			return fmt.Errorf("node %s: connection %s to %s: %w", spec.Name, c.Name, c.Address, err)
		}
		r.mu.Lock()
		r.names[ci.ID] = c.Name
		r.mu.Unlock()
	}
	return r.startSpecPortals(ctx, spec)
}

func (r *runtime) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.closePortals(ctx)
	r.mu.Lock()
	bs := r.bindings
	r.bindings = map[string]*binding{}
	r.mu.Unlock()
	for _, b := range bs {
		b.unwatch()
		b.b.Close()
	}
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
	st.Services, _ = r.Services(ctx)
	rl, _ := r.Relays(ctx)
	st.Relays = &rl
	st.Inlets, _ = r.Inlets(ctx)
	st.Outlets, _ = r.Outlets(ctx)
	return st, nil
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
	var out []api.Service
	for _, w := range r.n.Workers() {
		if slices.Contains(serviceKinds, w.Kind) {
			out = append(out, api.Service{Type: w.Kind, Address: addrText(w.Addresses[0])})
		}
	}
	return out, nil
}

func (r *runtime) StartService(_ context.Context, req api.StartServiceRequest) (api.Service, error) {
	if req.Type == "relay" {
		addr, err := localAddr("service", req.Address)
		if err != nil {
			return api.Service{}, api.BadRequest(err)
		}
		r.mu.Lock()
		running := r.relaySvc != nil
		r.mu.Unlock()
		if running {
			return api.Service{}, api.BadRequest(errors.New("this node already runs the relay service; see ferry service list"))
		}
		if err := r.startRelayService(addr); err != nil {
			return api.Service{}, err
		}
		return api.Service{Type: "relay", Address: r.relaySvc.Address().String()}, nil
	}
	if _, err := services.New(req.Type); err != nil {
		return api.Service{}, api.BadRequest(err)
	}
	addr := req.Address
	if addr != "" && addr[0] == '/' {
		a, err := routing.ParseAddress(addr)
		if err != nil || !a.IsLocal() {
			return api.Service{}, api.BadRequest(fmt.Errorf("service address %q: want a local address such as /service/NAME", req.Address))
		}
		addr = a.Value
	}
	a, err := services.Start(r.n, req.Type, addr)
	if err != nil {
		if errors.Is(err, node.ErrAddressInUse) {
			return api.Service{}, api.BadRequest(fmt.Errorf("%w; see ferry service list", err))
		}
		return api.Service{}, err
	}
	return api.Service{Type: req.Type, Address: a.String()}, nil
}

func (r *runtime) Send(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error) {
	if next, _ := route.Next(); next.Type == "node" {
		return nil, api.BadRequest(fmt.Errorf("route %s names a node; the ferry command resolves /node/NAME before sending", route))
	}
	m, err := r.n.SendAndReceive(ctx, route, payload)
	if err != nil {
		switch {
		case errors.Is(err, node.ErrNoRoute):
			return nil, api.NotFound(fmt.Errorf("%w; see ferry worker list", err))
		case errors.Is(err, node.ErrUnknownTranspt):
			return nil, api.BadRequest(err)
		}
		return nil, err
	}
	return m, nil
}

// tcp returns the TCP binding the tcp-listener and tcp-connection
// endpoints use, starting the plugin if this node has not yet.
func (r *runtime) tcp(ctx context.Context) (*transports.Binding, error) {
	return r.attach(ctx, "tcp", nil)
}

func (r *runtime) all() []*binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*binding, 0, len(r.bindings))
	for _, b := range r.bindings {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *binding) int { return strings.Compare(a.plugin, b.plugin) })
	return out
}

func (r *runtime) nameOf(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[id]
}

func (r *runtime) listenerInfo(plugin string, l transports.ListenerInfo) api.Listener {
	r.mu.Lock()
	al := api.Listener{ID: l.ID, Name: r.names[l.ID], Transport: plugin, Address: l.Address, Default: l.ID == r.defaultID}
	r.mu.Unlock()
	for _, a := range l.Allowed {
		al.Allow = append(al.Allow, addrText(a))
	}
	return al
}

func (r *runtime) Listeners(context.Context) ([]api.Listener, error) {
	out := []api.Listener{}
	for _, b := range r.all() {
		for _, l := range b.b.Listeners() {
			out = append(out, r.listenerInfo(b.plugin, l))
		}
	}
	// The node's own listener first: /node/NAME routes resolve to it.
	slices.SortStableFunc(out, func(a, b api.Listener) int {
		switch {
		case a.Default == b.Default:
			return 0
		case a.Default:
			return -1
		}
		return 1
	})
	return out, nil
}

func (r *runtime) CreateListener(ctx context.Context, address string) (api.Listener, error) {
	if address == "" {
		return api.Listener{}, api.BadRequest(errors.New("listener address is empty; give host:port such as 127.0.0.1:0"))
	}
	b, err := r.tcp(ctx)
	if err != nil {
		return api.Listener{}, err
	}
	l, err := b.Listen(ctx, address, NetworkAllow...)
	if err != nil {
		return api.Listener{}, api.BadRequest(err)
	}
	return r.listenerInfo("tcp", l), nil
}

func (r *runtime) DeleteListener(ctx context.Context, id string) error {
	for _, b := range r.all() {
		err := b.b.CloseListener(ctx, id)
		if err == nil || !errors.Is(err, transports.ErrNotFound) {
			return err
		}
	}
	return api.NotFound(fmt.Errorf("no listener %q; see ferry tcp-listener list", id))
}

func (r *runtime) connInfo(plugin string, c transports.ConnectionInfo) api.Connection {
	ac := api.Connection{ID: c.ID, Name: r.nameOf(c.ID), Transport: plugin, Remote: c.Remote, Local: c.Local,
		Worker: c.Worker.String(), Up: c.Up, Accepted: c.Listener != ""}
	for _, a := range c.Allowed {
		ac.Allow = append(ac.Allow, addrText(a))
	}
	return ac
}

func (r *runtime) Connections(context.Context) ([]api.Connection, error) {
	out := []api.Connection{}
	for _, b := range r.all() {
		for _, c := range b.b.Connections() {
			out = append(out, r.connInfo(b.plugin, c))
		}
	}
	return out, nil
}

func (r *runtime) CreateConnection(ctx context.Context, address string) (api.Connection, error) {
	if address == "" {
		return api.Connection{}, api.BadRequest(errors.New("connection address is empty; give host:port"))
	}
	b, err := r.tcp(ctx)
	if err != nil {
		return api.Connection{}, err
	}
	c, err := b.Connect(ctx, address, NetworkAllow...)
	if err != nil {
		return api.Connection{}, api.BadRequest(err)
	}
	return r.connInfo("tcp", c), nil
}

func (r *runtime) DeleteConnection(ctx context.Context, id string) error {
	for _, b := range r.all() {
		// Accept the worker address too: it is what users copy.
		cid := id
		for _, c := range b.b.Connections() {
			if c.Worker.String() == id || c.Worker.Value == id {
				cid = c.ID
			}
		}
		err := b.b.CloseConnection(ctx, cid)
		if err == nil || !errors.Is(err, transports.ErrNotFound) {
			return err
		}
	}
	return api.NotFound(fmt.Errorf("no connection %q; see ferry tcp-connection list", id))
}

func (r *runtime) Plugins(ctx context.Context) ([]api.Plugin, error) {
	if r.tr == nil {
		return nil, nil
	}
	return r.tr.Plugins(ctx)
}

func (r *runtime) Shutdown() { r.stop() }
