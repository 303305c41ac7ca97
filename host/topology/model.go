// Package topology loads Ferry topology files: HCL documents that declare
// plugins, nodes and, per node, transport listeners and connections,
// services, relays, inlets and outlets.
//
// Loading checks everything that can be checked without starting anything:
// block and attribute names, types, route text, plugin names and settings,
// references between blocks and variables, and the dependency order of the
// nodes. Every problem is an hcl.Diagnostic with a source range and a
// sentence that says what to change.
//
// Listen ports may be ":0", so references to other nodes stay symbolic in
// the loaded model. An orchestrator starts the nodes in Order and, before
// starting each one, calls ResolveNode with a lookup that knows the
// addresses of the nodes already started; the result is a plain NodeSpec.
package topology

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Topology is a loaded topology file. Its references are symbolic; see
// ResolveNode.
type Topology struct {
	// Path is the file name as given to Load.
	Path      string
	Variables []*Variable
	Plugins   []*Plugin
	Nodes     []*Node

	files  map[string]*hcl.File
	order  []*Node
	byName map[string]*Node
	// relays maps a relay name to the node that registers it.
	relays  map[string]*Relay
	plugins map[string]*Plugin
	valid   bool
}

// Variable is a `variable "name" {}` block with its final value (the
// default or a LoadOptions.Vars override).
type Variable struct {
	Name        string
	Description string
	Type        cty.Type
	Value       cty.Value
	Range       hcl.Range `json:"-"`
}

// Plugin is a `plugin "name" {}` block, or a built-in plugin used without
// one.
type Plugin struct {
	Name string
	// Path is the plugin binary as an absolute path (a relative path in
	// the file is relative to the file's directory); empty means "find it
	// in the plugin directory".
	Path string
	// SHA256 pins the binary (lower-case hex); empty means not pinned.
	SHA256 string
	// AddressType is the route address type the plugin serves; it defaults
	// to the plugin's name, as for every built-in transport.
	AddressType string
	// Builtin reports whether Ferry ships the plugin.
	Builtin bool
	// Kind is "transport", "portal" or "" (a third-party plugin whose kind
	// is not known before it runs).
	Kind  string
	Range hcl.Range `json:"-"`
}

// Node is a `node "name" {}` block.
type Node struct {
	Name        string
	Listeners   []*Listener
	Connections []*Connection
	Services    []*Service
	Relays      []*Relay
	Inlets      []*Inlet
	Outlets     []*Outlet
	Range       hcl.Range `json:"-"`

	// deps are the references that make this node start after another.
	deps []*Ref
	// pluginSettings holds, per plugin the node uses explicitly, the merged
	// settings of its blocks with the schema's defaults filled in.
	pluginSettings map[string]map[string]string
	pluginOrder    []string
}

// Listener is a `transport "name" {}` block: the node listens there.
type Listener struct {
	Name    string
	Plugin  string
	Address string
	// Allow lists the local addresses (plain names such as "echo") that
	// network input arriving through this listener may reach.
	Allow    []string
	Settings map[string]string
	Range    hcl.Range `json:"-"`

	allowRng *hcl.Range
}

// Connection is a `connection "name" {}` block: the node dials out.
type Connection struct {
	Name   string
	Plugin string
	// To is the address dialled: a literal (Address) or a reference to
	// another node's listener (Ref).
	To       Target
	Allow    []string
	Settings map[string]string
	Range    hcl.Range `json:"-"`

	allowRng *hcl.Range
}

// Target is either a literal transport address or a reference.
type Target struct {
	Address string
	Ref     *Ref
}

func (t Target) String() string {
	if t.Ref != nil {
		return t.Ref.String()
	}
	return t.Address
}

// Service is a `service "type" {}` block: a built-in service started at
// Address (its conventional address by default).
type Service struct {
	Type    string
	Address string
	// MaxRegistrations (max_registrations, relay only) caps the names the
	// relay service holds; 0: its default.
	MaxRegistrations int       `json:",omitempty"`
	Range            hcl.Range `json:"-"`
}

// Relay is a `relay "name" {}` block: the node registers forward_to_NAME
// at the relay service reached by At and keeps the registration alive.
type Relay struct {
	Name string
	At   Route
	// Host is the node that hosts the forwarder when At names it directly
	// (a reference to its listener or to a connection to it); else "".
	Host string
	// Node is the node that declares (and registers) the relay.
	Node string
	// Secure registers through a secure channel to the relay node, which
	// binds the name to the registering node's identity.
	Secure bool      `json:",omitempty"`
	Range  hcl.Range `json:"-"`
}

// Inlet is an `inlet "name" {}` block: a local TCP listener whose
// connections become portal sessions to the outlet at the end of To.
type Inlet struct {
	Name     string
	Plugin   string
	Listen   string
	To       Route
	Settings map[string]string
	// Secure carries sessions inside a secure channel to the outlet's node.
	Secure bool `json:",omitempty"`
	// MaxSessions (max_sessions) caps open sessions; 0: the default.
	MaxSessions int       `json:",omitempty"`
	Range       hcl.Range `json:"-"`
}

// Outlet is an `outlet "name" {}` block: a worker at Address that dials
// Target for each portal session.
type Outlet struct {
	Name     string
	Plugin   string
	Address  string
	Target   string
	Settings map[string]string
	// Secure admits only sessions that came through a secure channel.
	Secure bool `json:",omitempty"`
	// MaxSessions (max_sessions) caps open sessions; 0: the default.
	MaxSessions int       `json:",omitempty"`
	Range       hcl.Range `json:"-"`
}

// Route is a route in a topology file: fixed route text and references,
// in order.
type Route []RouteElem

// RouteElem is one piece of a Route: either Text (valid route text) or Ref.
type RouteElem struct {
	Text string
	Ref  *Ref
}

func (r Route) String() string {
	parts := make([]string, len(r))
	for i, e := range r {
		if e.Ref != nil {
			parts[i] = e.Ref.String()
		} else {
			parts[i] = fmt.Sprintf("%q", e.Text)
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// RefKind says what a reference names.
type RefKind int

// Reference kinds.
const (
	// RefListener is node.N.transport.L: the bound address of a listener.
	RefListener RefKind = iota + 1
	// RefConnection is node.N.connection.C: the worker of a connection.
	RefConnection
	// RefRelay is node.N.relay.R: /service/forward_to_R on the relay node N.
	RefRelay
)

var refKindWords = map[RefKind]string{RefListener: "transport", RefConnection: "connection", RefRelay: "relay"}

// Ref is a reference to another block, as written in the file.
type Ref struct {
	Kind RefKind
	// Node is the node named in the reference; Name the block inside it.
	Node, Name string
	// From is the node whose block contains the reference.
	From  string
	Range hcl.Range `json:"-"`
}

// String prints the reference as written, e.g. node.n2.transport.public.
func (r Ref) String() string {
	return "node." + r.Node + "." + refKindWords[r.Kind] + "." + r.Name
}
