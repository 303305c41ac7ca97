package topology

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/hashicorp/hcl/v2"
)

// order sorts the nodes so that each starts after the nodes it refers to,
// keeping declaration order among independent nodes, and reports a cycle
// at the reference that closes it.
func (l *loader) order() {
	nodes := l.t.Nodes
	index := map[string]int{}
	for i, n := range nodes {
		index[n.Name] = i
	}
	// Relay references are soft: the forwarder appears when the relay is
	// registered, and inlets wait for their path, so only the relay's host
	// must be up. decodeRoute recorded that as the dependency already.
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(nodes))
	var out []*Node
	var stack []*Ref
	var visit func(i int) bool
	visit = func(i int) bool {
		color[i] = grey
		for _, ref := range nodes[i].deps {
			j := index[ref.Node]
			switch color[j] {
			case grey:
				// The cycle is ref.Node → ... → ref.From → ref.Node; the
				// stack holds the edges from the DFS root to ref.From.
				path := []string{ref.Node}
				k := -1
				for x, r := range stack {
					if r.From == ref.Node {
						k = x
						break
					}
				}
				if k >= 0 {
					for _, r := range stack[k:] {
						path = append(path, r.Node)
					}
				} else {
					path = append(path, ref.From)
				}
				path = append(path, ref.Node)
				l.errorf(rp(ref.Range), "Dependency cycle",
					"nodes start in dependency order, but %s depend on each other (%s refers to %s). A connection carries messages both ways, so only one side needs to connect: remove one of these references.",
					strings.Join(path, " → "), ref.From, ref)
				return false
			case white:
				stack = append(stack, ref)
				ok := visit(j)
				stack = stack[:len(stack)-1]
				if !ok {
					return false
				}
			}
		}
		color[i] = black
		out = append(out, nodes[i])
		return true
	}
	for i := range nodes {
		if color[i] == white && !visit(i) {
			return
		}
	}
	l.t.order = out
}

// Order returns the nodes in the order they must start: a node that refers
// to another (connects to it, routes through it) comes after it.
func (t *Topology) Order() ([]*Node, error) {
	if !t.valid {
		return nil, errors.New("topology: the file has errors; check it with ferry validate")
	}
	return append([]*Node(nil), t.order...), nil
}

// Node returns the node called name, or nil.
func (t *Topology) Node(name string) *Node { return t.byName[name] }

// Dependencies lists the nodes n must start after, in order of first
// reference.
func (n *Node) Dependencies() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range n.deps {
		if !seen[r.Node] {
			seen[r.Node] = true
			out = append(out, r.Node)
		}
	}
	return out
}

// Summary counts what the file declares, e.g. "3 nodes, 2 listeners, 2
// connections, 4 services, 0 relays, 0 inlets, 0 outlets".
func (t *Topology) Summary() string {
	var ls, cs, ss, rs, is, os int
	for _, n := range t.Nodes {
		ls += len(n.Listeners)
		cs += len(n.Connections)
		ss += len(n.Services)
		rs += len(n.Relays)
		is += len(n.Inlets)
		os += len(n.Outlets)
	}
	return fmt.Sprintf("%s, %s, %s, %s, %s, %s, %s",
		plural(len(t.Nodes), "node"), plural(ls, "listener"), plural(cs, "connection"),
		plural(ss, "service"), plural(rs, "relay"), plural(is, "inlet"), plural(os, "outlet"))
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// NodeSpec is one node of a topology with every reference to other nodes
// resolved: what an orchestrator creates, in field order (plugins,
// listeners, connections, services, outlets, relays, inlets).
type NodeSpec struct {
	Name        string           `json:"name"`
	Plugins     []PluginSpec     `json:"plugins,omitempty"`
	Listeners   []ListenerSpec   `json:"listeners,omitempty"`
	Connections []ConnectionSpec `json:"connections,omitempty"`
	Services    []ServiceSpec    `json:"services,omitempty"`
	Outlets     []OutletSpec     `json:"outlets,omitempty"`
	Relays      []RelaySpec      `json:"relays,omitempty"`
	Inlets      []InletSpec      `json:"inlets,omitempty"`
}

// PluginSpec is a plugin the node uses, with its settings (defaults filled
// in when the plugin's schema was known at load time).
type PluginSpec struct {
	Name string `json:"name"`
	// Path and SHA256 come from the file's plugin block, if any.
	Path        string            `json:"path,omitempty"`
	SHA256      string            `json:"sha256,omitempty"`
	AddressType string            `json:"address_type"`
	Settings    map[string]string `json:"settings,omitempty"`
}

// ListenerSpec is a listener to open; Allow lists the local addresses
// network input arriving through it may reach.
type ListenerSpec struct {
	Name    string   `json:"name"`
	Plugin  string   `json:"plugin"`
	Address string   `json:"address"`
	Allow   []string `json:"allow"`
}

// ConnectionSpec is a connection to dial, at a resolved address.
type ConnectionSpec struct {
	Name    string   `json:"name"`
	Plugin  string   `json:"plugin"`
	Address string   `json:"address"`
	Allow   []string `json:"allow"`
}

// ServiceSpec is a built-in service to start.
type ServiceSpec struct {
	Type    string `json:"type"`
	Address string `json:"address"`
	// MaxRegistrations caps a relay service's names; 0: the default.
	MaxRegistrations int `json:"max_registrations,omitempty"`
}

// OutletSpec is a portal outlet: a worker at Address dialling Target.
type OutletSpec struct {
	Name     string            `json:"name"`
	Plugin   string            `json:"plugin"`
	Address  string            `json:"address"`
	Target   string            `json:"target"`
	Settings map[string]string `json:"settings,omitempty"`
	Secure   bool              `json:"secure,omitempty"`
	// MaxSessions caps open sessions; 0: portals.DefaultMaxSessions.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// RelaySpec registers forward_to_Name at the relay service reached by At.
type RelaySpec struct {
	Name string    `json:"name"`
	At   RouteSpec `json:"at"`
	// Secure registers through a secure channel (see topology Relay).
	Secure bool `json:"secure,omitempty"`
}

// InletSpec is a portal inlet listening at Listen with sessions to To.
type InletSpec struct {
	Name     string            `json:"name"`
	Plugin   string            `json:"plugin"`
	Listen   string            `json:"listen"`
	To       RouteSpec         `json:"to"`
	Settings map[string]string `json:"settings,omitempty"`
	Secure   bool              `json:"secure,omitempty"`
	// MaxSessions caps open sessions; 0: portals.DefaultMaxSessions.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// RouteSpec is a route whose only unresolved parts are the node's own
// connections: their worker addresses exist once the node has dialled
// them, so the node (or the orchestrator, after creating the connections)
// finishes it with Resolve.
type RouteSpec []RoutePart

// RoutePart is fixed route text or the name of one of the node's own
// connections.
type RoutePart struct {
	Route      string `json:"route,omitempty"`
	Connection string `json:"connection,omitempty"`
}

// Resolve returns the complete route, asking conn for the worker address
// of each of the node's own connections it names.
func (r RouteSpec) Resolve(conn func(name string) (routing.Address, error)) (routing.Route, error) {
	var out routing.Route
	for _, p := range r {
		var hops routing.Route
		if p.Connection != "" {
			if conn == nil {
				return nil, fmt.Errorf("route %s: the worker of connection %q is not known", r, p.Connection)
			}
			a, err := conn(p.Connection)
			if err != nil {
				return nil, fmt.Errorf("route %s: connection %q: %w", r, p.Connection, err)
			}
			hops = routing.Route{a}
		} else {
			var err error
			if hops, err = routing.ParseRoute(p.Route); err != nil {
				return nil, fmt.Errorf("route %s: %w", r, err)
			}
		}
		var err error
		if out, err = out.Concat(hops); err != nil {
			return nil, fmt.Errorf("route %s: %w", r, err)
		}
	}
	if out == nil {
		out = routing.Route{}
	}
	return out, out.Validate()
}

// String prints the route text with {connection.NAME} for each of the
// node's own connections.
func (r RouteSpec) String() string {
	var b strings.Builder
	for _, p := range r {
		if p.Connection != "" {
			b.WriteString("{connection." + p.Connection + "}")
		} else if p.Route != "/" {
			b.WriteString(p.Route)
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// Lookup resolves a reference to another node, given the nodes started so
// far. For RefListener it returns the listener's bound address in the
// transport's syntax ("127.0.0.1:41234"); for RefConnection the
// connection's worker address in route text ("/worker/7f3a..."). Relay
// references never reach it (they are /service/forward_to_NAME).
type Lookup func(ref Ref) (string, error)

// ResolveNode returns the node's specification with every reference to
// another node resolved through lookup. References to the node's own
// connections stay in RouteSpec parts (see RouteSpec.Resolve).
func (t *Topology) ResolveNode(name string, lookup Lookup) (*NodeSpec, error) {
	if !t.valid {
		return nil, errors.New("topology: the file has errors; check it with ferry validate")
	}
	n := t.byName[name]
	if n == nil {
		return nil, fmt.Errorf("topology %s declares no node %q", t.Path, name)
	}
	spec := &NodeSpec{Name: n.Name}
	plugins := append([]string(nil), n.pluginOrder...)
	usePlugin := func(p string) {
		for _, q := range plugins {
			if q == p {
				return
			}
		}
		plugins = append(plugins, p)
	}
	for _, ls := range n.Listeners {
		spec.Listeners = append(spec.Listeners, ListenerSpec{Name: ls.Name, Plugin: ls.Plugin, Address: ls.Address, Allow: clone(ls.Allow)})
	}
	for _, c := range n.Connections {
		addr := c.To.Address
		if c.To.Ref != nil {
			a, err := lookupRef(lookup, *c.To.Ref)
			if err != nil {
				return nil, fmt.Errorf("node %s: connection %s: %w", n.Name, c.Name, err)
			}
			addr = a
		}
		spec.Connections = append(spec.Connections, ConnectionSpec{Name: c.Name, Plugin: c.Plugin, Address: addr, Allow: clone(c.Allow)})
	}
	for _, s := range n.Services {
		spec.Services = append(spec.Services, ServiceSpec{Type: s.Type, Address: s.Address, MaxRegistrations: s.MaxRegistrations})
	}
	for _, o := range n.Outlets {
		spec.Outlets = append(spec.Outlets, OutletSpec{Name: o.Name, Plugin: o.Plugin, Address: o.Address, Target: o.Target, Settings: cloneMap(o.Settings), Secure: o.Secure, MaxSessions: o.MaxSessions})
	}
	for _, r := range n.Relays {
		rs, err := t.resolveRoute(n, r.At, lookup, usePlugin)
		if err != nil {
			return nil, fmt.Errorf("node %s: relay %s: %w", n.Name, r.Name, err)
		}
		spec.Relays = append(spec.Relays, RelaySpec{Name: r.Name, At: rs, Secure: r.Secure})
	}
	for _, in := range n.Inlets {
		rs, err := t.resolveRoute(n, in.To, lookup, usePlugin)
		if err != nil {
			return nil, fmt.Errorf("node %s: inlet %s: %w", n.Name, in.Name, err)
		}
		spec.Inlets = append(spec.Inlets, InletSpec{Name: in.Name, Plugin: in.Plugin, Listen: in.Listen, To: rs, Settings: cloneMap(in.Settings), Secure: in.Secure, MaxSessions: in.MaxSessions})
	}
	for _, p := range plugins {
		ps := PluginSpec{Name: p, AddressType: t.addressType(p), Settings: cloneMap(n.pluginSettings[p])}
		if pb := t.plugins[p]; pb != nil {
			ps.Path, ps.SHA256 = pb.Path, pb.SHA256
		}
		spec.Plugins = append(spec.Plugins, ps)
	}
	return spec, nil
}

func lookupRef(lookup Lookup, ref Ref) (string, error) {
	if lookup == nil {
		return "", fmt.Errorf("%s: no lookup to resolve it", ref)
	}
	s, err := lookup(ref)
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	if s == "" {
		return "", fmt.Errorf("%s: resolved to an empty address", ref)
	}
	return s, nil
}

func (t *Topology) addressType(plugin string) string {
	if p := t.plugins[plugin]; p != nil && p.AddressType != "" {
		return p.AddressType
	}
	return plugin
}

func (t *Topology) resolveRoute(n *Node, r Route, lookup Lookup, usePlugin func(string)) (RouteSpec, error) {
	var out RouteSpec
	var fixed routing.Route
	flush := func() {
		if len(fixed) > 0 {
			out = append(out, RoutePart{Route: fixed.String()})
			fixed = nil
		}
	}
	add := func(hops routing.Route) error {
		var err error
		fixed, err = fixed.Concat(hops)
		return err
	}
	for _, e := range r {
		if e.Ref == nil {
			hops, err := routing.ParseRoute(e.Text)
			if err != nil {
				return nil, err
			}
			if err := add(hops); err != nil {
				return nil, err
			}
			continue
		}
		ref := *e.Ref
		switch ref.Kind {
		case RefRelay:
			if err := add(routing.Route{routing.Local("forward_to_" + ref.Name)}); err != nil {
				return nil, err
			}
		case RefConnection:
			if ref.Node == n.Name {
				flush()
				out = append(out, RoutePart{Connection: ref.Name})
				continue
			}
			s, err := lookupRef(lookup, ref)
			if err != nil {
				return nil, err
			}
			a, err := routing.ParseAddress(s)
			if err != nil || !a.IsLocal() {
				return nil, fmt.Errorf("%s: lookup returned %q, want a worker address such as /worker/<id>", ref, s)
			}
			if err := add(routing.Route{a}); err != nil {
				return nil, err
			}
		case RefListener:
			s, err := lookupRef(lookup, ref)
			if err != nil {
				return nil, err
			}
			ls := t.listenerOf(ref)
			a, err := routing.NewAddress(t.addressType(ls.Plugin), s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			usePlugin(ls.Plugin)
			if err := add(routing.Route{a}); err != nil {
				return nil, err
			}
		}
	}
	flush()
	if len(out) == 0 {
		out = RouteSpec{{Route: "/"}}
	}
	return out, nil
}

func (t *Topology) listenerOf(ref Ref) *Listener {
	for _, ls := range t.byName[ref.Node].Listeners {
		if ls.Name == ref.Name {
			return ls
		}
	}
	return nil
}

// StaticLookup resolves references from the file alone: a listener with a
// fixed port resolves to its configured address. It is the lookup for
// `ferry node create NAME --config FILE`, where the other nodes may run on
// other machines. Wildcard hosts (":7000", "0.0.0.0:7000") cannot be
// dialled and are reported.
func (t *Topology) StaticLookup(ref Ref) (string, error) {
	switch ref.Kind {
	case RefListener:
		ls := t.listenerOf(ref)
		if ls == nil {
			return "", fmt.Errorf("no such listener")
		}
		if !hostPortPlugins[ls.Plugin] {
			return ls.Address, nil
		}
		host, port, err := net.SplitHostPort(ls.Address)
		if err != nil {
			return "", err
		}
		if port == "0" {
			return "", fmt.Errorf("node %s listens on port 0, so its address is known only once it runs; give the listener a fixed port to use this file across machines", ref.Node)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return "", fmt.Errorf("node %s listens on all interfaces (%s), which names no host to dial; give the listener a concrete host", ref.Node, ls.Address)
		}
		return ls.Address, nil
	case RefConnection:
		return "", fmt.Errorf("the worker of node %s's connection %s exists only once %s runs; route through a listener instead", ref.Node, ref.Name, ref.Node)
	}
	return "", fmt.Errorf("%s cannot be resolved statically", ref)
}

// Files returns the parsed source files, for hcl.NewDiagnosticTextWriter.
func (t *Topology) Files() map[string]*hcl.File { return t.files }

func clone(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
