package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
)

// links is the component that owns the node's transports: one binding per
// transport plugin, started on first use, and the listeners and
// connections on them. Its lock guards its maps only; a plugin starts
// with no lock held (concurrent users of the same plugin wait for the one
// start).
type links struct {
	n   *node.Node
	log hclog.Logger
	tr  Transports

	mu        sync.Mutex
	closed    bool
	bindings  map[string]*binding    // by plugin name
	starting  map[string]*attachCall // plugin starts in flight
	names     map[string]string      // listener/connection id -> name in the topology file
	requested map[string]string      // listener id -> the address it was created with
	defaultID string                 // the node's own listener, listed first
}

type binding struct {
	plugin   string
	b        *transports.Binding
	unwatch  func()
	settings map[string]string
}

type attachCall struct {
	done chan struct{}
	b    *binding
	err  error
}

func newLinks(n *node.Node, log hclog.Logger, tr Transports) *links {
	return &links{n: n, log: log, tr: tr, bindings: map[string]*binding{}, starting: map[string]*attachCall{},
		names: map[string]string{}, requested: map[string]string{}}
}

// attach starts plugin and binds it to the node, once per plugin. settings
// apply to the whole transport: a second user with other settings is
// refused with the reason, not silently given the first ones.
func (l *links) attach(ctx context.Context, plugin string, settings map[string]string) (*transports.Binding, error) {
	if l.tr == nil {
		return nil, api.Unavailable(fmt.Errorf("this node runs without transports, so it cannot use %s", plugin))
	}
	if plugin == "" {
		return nil, api.BadRequest(errors.New("no transport named; say which with --transport NAME (see ferry plugin list)"))
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, api.Unavailable(errors.New("the node is stopping"))
	}
	if b := l.bindings[plugin]; b != nil {
		l.mu.Unlock()
		if len(settings) > 0 && !maps.Equal(settings, b.settings) {
			return nil, api.BadRequest(fmt.Errorf("the %s transport already runs on this node with settings %s; settings apply to the whole transport, so give the same ones or none", plugin, settingsText(b.settings)))
		}
		return b.b, nil
	}
	call := l.starting[plugin]
	if call == nil {
		call = &attachCall{done: make(chan struct{})}
		l.starting[plugin] = call
		l.mu.Unlock()
		call.b, call.err = l.start(ctx, plugin, settings)
		l.mu.Lock()
		delete(l.starting, plugin)
		if call.err == nil {
			if l.closed {
				call.b.unwatch()
				call.b.b.Close()
				call.b, call.err = nil, api.Unavailable(errors.New("the node is stopping"))
			} else {
				l.bindings[plugin] = call.b
			}
		}
		l.mu.Unlock()
		close(call.done)
		if call.err != nil {
			return nil, call.err
		}
		return call.b.b, nil
	}
	l.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the %s transport plugin to start: %w", plugin, ctx.Err())
	}
	if call.err != nil {
		return nil, call.err
	}
	return l.attach(ctx, plugin, settings)
}

func (l *links) start(ctx context.Context, plugin string, settings map[string]string) (*binding, error) {
	t, err := l.tr.Transport(ctx, plugin)
	if err != nil {
		return nil, fmt.Errorf("start the %s transport plugin: %w", plugin, err)
	}
	if settings == nil {
		settings = map[string]string{}
	}
	b, err := transports.Attach(l.n, t, transports.Options{Logger: l.log.Named(plugin), Settings: settings})
	if err != nil {
		return nil, api.BadRequest(fmt.Errorf("attach the %s transport: %w", plugin, err))
	}
	return &binding{plugin: plugin, b: b, unwatch: l.tr.Watch(t, b.Reconnect), settings: maps.Clone(settings)}, nil
}

func settingsText(s map[string]string) string {
	if len(s) == 0 {
		return "(none)"
	}
	keys := slices.Sorted(maps.Keys(s))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s[k]
	}
	return strings.Join(parts, " ")
}

// all returns the bindings sorted by plugin name.
func (l *links) all() []*binding {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*binding, 0, len(l.bindings))
	for _, b := range l.bindings {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *binding) int { return strings.Compare(a.plugin, b.plugin) })
	return out
}

// plugins names the bound transports.
func (l *links) plugins() []string {
	out := []string{}
	for _, b := range l.all() {
		out = append(out, b.plugin)
	}
	return out
}

func (l *links) close() {
	l.mu.Lock()
	l.closed = true
	bs := l.bindings
	l.bindings = map[string]*binding{}
	l.mu.Unlock()
	for _, b := range bs {
		b.unwatch()
		b.b.Close()
	}
}

func (l *links) nameOf(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.names[id]
}

// withDefaultAllow gives a request from the command without --allow the
// node's network services.
func withDefaultAllow(req api.CreateRequest) api.CreateRequest {
	if len(req.Allow) == 0 {
		req.Allow = NetworkAllow
	}
	return req
}

// listen opens a listener; name is its name in a topology file (or empty).
// Network input may reach exactly req.Allow (none if empty).
func (l *links) listen(ctx context.Context, name string, req api.CreateRequest, isDefault bool) (api.Listener, error) {
	if req.Address == "" {
		return api.Listener{}, api.BadRequest(fmt.Errorf("%s listener address is empty; give an address in that transport's syntax", req.Transport))
	}
	b, err := l.attach(ctx, req.Transport, req.Settings)
	if err != nil {
		return api.Listener{}, err
	}
	li, err := b.Listen(ctx, req.Address, req.Allow...)
	if err != nil {
		return api.Listener{}, api.BadRequest(fmt.Errorf("%s listener at %s: %w", req.Transport, req.Address, err))
	}
	l.mu.Lock()
	if name != "" {
		l.names[li.ID] = name
	}
	if li.Address != req.Address {
		l.requested[li.ID] = req.Address
	}
	if isDefault && l.defaultID == "" {
		l.defaultID = li.ID
	}
	l.mu.Unlock()
	return l.listenerInfo(b, req.Transport, li, false), nil
}

func (l *links) listenerInfo(b *transports.Binding, plugin string, li transports.ListenerInfo, details bool) api.Listener {
	l.mu.Lock()
	al := api.Listener{ID: li.ID, Name: l.names[li.ID], Transport: plugin, AddressType: b.Transport().Info().AddressType,
		Address: li.Address, Requested: l.requested[li.ID], Up: li.Up, State: api.UpDown(li.Up), Default: li.ID == l.defaultID, Allow: []string{}}
	l.mu.Unlock()
	for _, a := range li.Allowed {
		al.Allow = append(al.Allow, addrText(a))
	}
	if details {
		al.Properties, al.Counters, _ = b.ListenerDetails(li.ID)
	}
	return al
}

// listeners lists every listener, the node's own first; details asks each
// transport for its properties and counters.
func (l *links) listeners(details bool) []api.Listener {
	out := []api.Listener{}
	for _, b := range l.all() {
		for _, li := range b.b.Listeners() {
			out = append(out, l.listenerInfo(b.b, b.plugin, li, details))
		}
	}
	slices.SortStableFunc(out, func(a, b api.Listener) int {
		switch {
		case a.Default == b.Default:
			return 0
		case a.Default:
			return -1
		}
		return 1
	})
	return out
}

func (l *links) closeListener(ctx context.Context, id string) error {
	for _, b := range l.all() {
		err := b.b.CloseListener(ctx, id)
		if err == nil {
			l.mu.Lock()
			delete(l.names, id)
			delete(l.requested, id)
			l.mu.Unlock()
			return nil
		}
		if !errors.Is(err, transports.ErrNotFound) {
			return err
		}
	}
	return api.NotFound(fmt.Errorf("no listener %q; see ferry listener list", id))
}

func (l *links) connInfo(b *binding, c transports.ConnectionInfo) api.Connection {
	ac := api.Connection{ID: c.ID, Name: l.nameOf(c.ID), Transport: b.plugin, AddressType: b.b.Transport().Info().AddressType,
		Remote: c.Remote, Local: c.Local, Worker: c.Worker.String(), Up: c.Up, State: api.UpDown(c.Up), Accepted: c.Listener != "", Allow: []string{}}
	for _, a := range c.Allowed {
		ac.Allow = append(ac.Allow, addrText(a))
	}
	return ac
}

func (l *links) connections() []api.Connection {
	out := []api.Connection{}
	for _, b := range l.all() {
		for _, c := range b.b.Connections() {
			out = append(out, l.connInfo(b, c))
		}
	}
	return out
}

// connect dials a connection; with id set it takes that worker id (a
// restored connection keeps the /worker/ID routes name).
func (l *links) connect(ctx context.Context, name, id string, req api.CreateRequest) (api.Connection, error) {
	if req.Address == "" {
		return api.Connection{}, api.BadRequest(fmt.Errorf("%s connection address is empty; give the address of another node's listener", req.Transport))
	}
	b, err := l.attach(ctx, req.Transport, req.Settings)
	if err != nil {
		return api.Connection{}, err
	}
	var c transports.ConnectionInfo
	if id != "" {
		c, err = b.ConnectAs(ctx, id, req.Address, req.Allow...)
	} else {
		c, err = b.Connect(ctx, req.Address, req.Allow...)
	}
	if err != nil {
		return api.Connection{}, api.BadRequest(fmt.Errorf("%s connection to %s: %w", req.Transport, req.Address, err))
	}
	if name != "" {
		l.mu.Lock()
		l.names[c.ID] = name
		l.mu.Unlock()
	}
	l.mu.Lock()
	bd := l.bindings[req.Transport]
	l.mu.Unlock()
	if bd == nil {
		bd = &binding{plugin: req.Transport, b: b}
	}
	return l.connInfo(bd, c), nil
}

func (l *links) closeConnection(ctx context.Context, id string) error {
	for _, b := range l.all() {
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
	return api.NotFound(fmt.Errorf("no connection %q; see ferry connection list", id))
}

// connectionWorker returns the worker of the connection a topology file
// calls name.
func (l *links) connectionWorker(name string) (routing.Address, bool) {
	l.mu.Lock()
	var ids []string
	for id, n := range l.names {
		if n == name {
			ids = append(ids, id)
		}
	}
	l.mu.Unlock()
	for _, b := range l.all() {
		for _, c := range b.b.Connections() {
			if slices.Contains(ids, c.ID) {
				return c.Worker, true
			}
		}
	}
	return routing.Address{}, false
}

// restoreConnection dials a saved connection at its old worker id. The
// peer may be down while this node starts, so the first dial is retried in
// the background with capped backoff; after that the binding re-dials by
// itself.
func (l *links) restoreConnection(ctx context.Context, c state.Connection) {
	req := withDefaultAllow(api.CreateRequest{Transport: c.Transport, Address: c.Address, Allow: c.Allow, Settings: c.Settings})
	try := func(ctx context.Context) error {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := l.connect(dctx, "", c.ID, req)
		return err
	}
	err := try(ctx)
	if err == nil {
		return
	}
	l.log.Warn("restore connection; retrying in the background", "transport", c.Transport, "worker", routing.Local(c.ID).String(), "address", c.Address, "error", err)
	life := l.n.Context()
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
					l.log.Info("connection restored", "transport", c.Transport, "worker", routing.Local(c.ID).String(), "address", c.Address)
				}
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}
