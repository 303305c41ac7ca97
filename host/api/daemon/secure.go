package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/sdk/routing"
)

// VaultDir is where a ferry home keeps identities.
func VaultDir(h *state.Home) string { return filepath.Join(h.Dir, "vault") }

// secure is the daemon's secure channel component: the node's identity, its
// secure channel listener at /service/api and the channels created from
// this node. It has its own lock.
type secure struct {
	n   *node.Node
	log hclog.Logger
	id  *identity.Identity
	lis *securechannel.Listener

	mu      sync.Mutex
	chans   map[string]*securechannel.Channel // by worker address value
	kept    map[string]*securechannel.Kept    // channels that re-open themselves, by worker address value
	owners  map[string]string                 // what a kept channel is part of ("relay n3"), by address value
	guarded map[string]*securechannel.Policy  // services restricted to identities, by address value

	// resolve rewrites /node/NAME hops (the runtime's resolveNodes); nil
	// leaves routes as they are.
	resolve func(context.Context, routing.Route) (routing.Route, error)
}

// startSecure loads the node's identity (cfg.Identity, or one named after
// the node, created on first start) and starts the listener. Messages its
// channels decrypt may reach what network input may reach (NetworkAllow).
func startSecure(n *node.Node, log hclog.Logger, h *state.Home, cfg state.NodeConfig) (*secure, error) {
	v, err := identity.OpenVault(VaultDir(h))
	if err != nil {
		return nil, err
	}
	var id *identity.Identity
	if cfg.Identity != "" {
		id, err = v.Get(cfg.Identity)
	} else {
		id, err = v.GetOrCreate(cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
	}
	log = log.Named("securechannel")
	var allow []string
	for _, a := range NetworkAllow {
		if a != securechannel.DefaultListenerAddress {
			allow = append(allow, a)
		}
	}
	lis, err := securechannel.Listen(n, securechannel.DefaultListenerAddress, securechannel.ListenerConfig{
		Config: securechannel.Config{Identity: id, Logger: log},
		Allow:  allow,
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
	}
	log.Info("secure channel listener", "address", lis.Address().String(), "identity", id.Name, "identifier", id.Identifier)
	return &secure{n: n, log: log, id: id, lis: lis, chans: map[string]*securechannel.Channel{}, kept: map[string]*securechannel.Kept{}, owners: map[string]string{}, guarded: map[string]*securechannel.Policy{}}, nil
}

func (s *secure) identity() api.NodeIdentity {
	return api.NodeIdentity{Name: s.id.Name, Identifier: s.id.Identifier, Listener: s.lis.Address().String()}
}

func (s *secure) create(ctx context.Context, req api.CreateSecureChannelRequest) (securechannel.Info, error) {
	to, err := routing.ParseRoute(req.Route)
	if err != nil {
		return securechannel.Info{}, api.BadRequest(fmt.Errorf("route: %w", err))
	}
	if len(to) == 0 {
		return securechannel.Info{}, api.BadRequest(errors.New("the route is empty; give the route to a secure channel listener, e.g. /worker/<connection>/service/api"))
	}
	for _, a := range req.Authorized {
		if err := identity.ValidIdentifier(a); err != nil {
			return securechannel.Info{}, api.BadRequest(err)
		}
	}
	k, err := s.keepAt(ctx, "", to, req.Authorized, req.Timeout, false)
	if err != nil {
		return securechannel.Info{}, err
	}
	return k.Info(), nil
}

// keepAt keeps a channel at address (a new one when empty) to the listener
// at the end of to, whose /node/NAME hops are resolved again before every
// open: a channel made with secure-channel create, or restored from the
// node's saved state (noWait: the far node may not be up yet).
func (s *secure) keepAt(ctx context.Context, address string, to routing.Route, authorized []string, timeout time.Duration, noWait bool) (*securechannel.Kept, error) {
	to = to.Clone()
	route := func(ctx context.Context) (routing.Route, error) {
		if s.resolve == nil {
			return to, nil
		}
		return s.resolve(ctx, to)
	}
	cfg := securechannel.KeepConfig{
		Config:  securechannel.Config{Identity: s.id, Authorized: authorized, HandshakeTimeout: timeout, Logger: s.log},
		Address: address,
		Route:   route,
		NoWait:  noWait,
	}
	return s.keepConfig(ctx, cfg, "")
}

// keep opens a channel from this node's identity to the listener route
// leads to (called before every open) and keeps it open under one address
// until closed (securechannel.Keep); the node lists it with the others.
// With noWait it returns at once and opens in the background. owner, when
// set, names what the channel is part of (it is deleted with it, not alone).
func (s *secure) keep(ctx context.Context, route func(context.Context) (routing.Route, error), authorized []string, noWait bool, owner string) (*securechannel.Kept, error) {
	return s.keepConfig(ctx, securechannel.KeepConfig{
		Config: securechannel.Config{Identity: s.id, Authorized: authorized, Logger: s.log},
		Route:  route,
		NoWait: noWait,
	}, owner)
}

func (s *secure) keepConfig(ctx context.Context, cfg securechannel.KeepConfig, owner string) (*securechannel.Kept, error) {
	k, err := securechannel.Keep(ctx, s.n, cfg)
	if err != nil {
		if errors.Is(err, securechannel.ErrNotAuthorized) || errors.Is(err, securechannel.ErrRefused) {
			return nil, &api.StatusError{Code: 403, Err: err}
		}
		return nil, err
	}
	s.mu.Lock()
	s.kept[k.Address().Value] = k
	if owner != "" {
		s.owners[k.Address().Value] = owner
	}
	s.mu.Unlock()
	return k, nil
}

// closeKept closes a kept channel and forgets it.
func (s *secure) closeKept(ctx context.Context, k *securechannel.Kept) error {
	s.mu.Lock()
	delete(s.kept, k.Address().Value)
	delete(s.owners, k.Address().Value)
	s.mu.Unlock()
	return k.Close(ctx)
}

// list returns the open channels, the ones this node created first; it
// forgets created channels whose workers stopped (closed by the peer).
func (s *secure) list() api.SecureChannels {
	out := api.SecureChannels{Identity: s.identity(), Listener: s.lis.Stats()}
	s.mu.Lock()
	for k, ch := range s.chans {
		inf := ch.Info()
		if !inf.Open {
			delete(s.chans, k)
			continue
		}
		out.Channels = append(out.Channels, inf)
	}
	for _, k := range s.kept {
		out.Channels = append(out.Channels, k.Info())
	}
	s.mu.Unlock()
	sort.Slice(out.Channels, func(i, j int) bool { return out.Channels[i].Address < out.Channels[j].Address })
	out.Channels = append(out.Channels, s.lis.Channels()...)
	if out.Channels == nil {
		out.Channels = []securechannel.Info{}
	}
	return out
}

func (s *secure) remove(ctx context.Context, id string) error {
	key := id
	if strings.HasPrefix(id, "/") {
		a, err := routing.ParseAddress(id)
		if err != nil || !a.IsLocal() {
			return api.BadRequest(fmt.Errorf("secure channel %q: want its address, /worker/<id>", id))
		}
		key = a.Value
	}
	s.mu.Lock()
	if owner := s.owners[key]; owner != "" {
		s.mu.Unlock()
		return api.BadRequest(fmt.Errorf("secure channel %s belongs to %s; delete that instead", id, owner))
	}
	ch := s.chans[key]
	delete(s.chans, key)
	k := s.kept[key]
	delete(s.kept, key)
	s.mu.Unlock()
	if ch != nil {
		return ch.Close(ctx)
	}
	if k != nil {
		return k.Close(ctx)
	}
	for _, inf := range s.lis.Channels() {
		if inf.Address == routing.Local(key).String() {
			if err := s.n.StopWorker(ctx, key); err != nil && !errors.Is(err, node.ErrNoRoute) {
				return err
			}
			return nil
		}
	}
	return api.NotFound(fmt.Errorf("no secure channel %s on this node; see ferry secure-channel list", id))
}

func (s *secure) close(ctx context.Context) {
	s.mu.Lock()
	chs := make([]*securechannel.Channel, 0, len(s.chans))
	for _, ch := range s.chans {
		chs = append(chs, ch)
	}
	s.chans = map[string]*securechannel.Channel{}
	kept := s.kept
	s.kept = map[string]*securechannel.Kept{}
	s.mu.Unlock()
	for _, ch := range chs {
		_ = ch.Close(ctx)
	}
	for _, k := range kept {
		_ = k.Close(ctx)
	}
	if err := s.lis.Close(ctx); err != nil {
		s.log.Debug("close secure channel listener", "error", err)
	}
}

// The runtime serves api.SecureBackend through the component.

func (r *runtime) Identity(context.Context) (api.NodeIdentity, error) {
	return r.secure.identity(), nil
}

func (r *runtime) SecureChannels(context.Context) (api.SecureChannels, error) {
	return r.secure.list(), nil
}

func (r *runtime) CreateSecureChannel(ctx context.Context, req api.CreateSecureChannelRequest) (securechannel.Info, error) {
	return r.secure.create(ctx, req)
}

func (r *runtime) DeleteSecureChannel(ctx context.Context, id string) error {
	return r.secure.remove(ctx, id)
}

// startService starts a built-in service; with identifiers it is guarded by
// a securechannel.Policy (only messages through a secure channel from one of
// them reach it) and reachable through the node's secure channel listener.
func (s *secure) startService(typ, addr string, ids []string) (routing.Address, error) {
	if len(ids) == 0 {
		return services.Start(s.n, typ, addr)
	}
	p, err := securechannel.NewPolicy(ids...)
	if err != nil {
		return routing.Address{}, api.BadRequest(fmt.Errorf("--authorized: %w", err))
	}
	w, err := services.New(typ)
	if err != nil {
		return routing.Address{}, api.BadRequest(err)
	}
	if addr == "" {
		addr = typ
	}
	a, err := s.n.StartWorker(addr, p.Wrap(w), node.WithKind(typ))
	if err != nil {
		return routing.Address{}, err
	}
	s.lis.Allow(addr)
	s.mu.Lock()
	s.guarded[addr] = p
	s.mu.Unlock()
	return a, nil
}

// authorized returns the identifiers a guarded service admits.
func (s *secure) authorized(addr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.guarded[addr]; p != nil {
		return p.Identifiers()
	}
	return nil
}
