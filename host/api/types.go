// Package api is the local control API a running node serves to the ferry
// command: HTTP+JSON over a Unix socket that only the owning user can open
// (mode 0600 inside a 0700 directory). The server side is a thin layer over
// a Backend; Client is what the command uses.
//
// Endpoints (all under /v1):
//
//	GET    /status                 Status
//	GET    /workers                []Worker
//	GET    /services               []Service
//	POST   /services               StartServiceRequest -> Service
//	POST   /messages               SendRequest -> SendReply
//	GET    /listeners              []Listener (every transport)
//	POST   /listeners              CreateRequest -> Listener
//	GET    /listeners/{id}         Listener, with properties and counters
//	DELETE /listeners/{id}
//	GET    /connections            []Connection (every transport)
//	POST   /connections            CreateRequest -> Connection
//	DELETE /connections/{id}
//	GET    /plugins                []Plugin
//	GET    /relays                 Relays
//	POST   /relays                 CreateRelayRequest -> relays.RegistrationInfo
//	DELETE /relays/{name}
//	GET    /tcp-inlets             []Portal
//	POST   /tcp-inlets             CreateInletRequest -> Portal
//	DELETE /tcp-inlets/{id}
//	GET    /tcp-outlets            []Portal
//	POST   /tcp-outlets            CreateOutletRequest -> Portal
//	DELETE /tcp-outlets/{id}
//	POST   /shutdown
//
// Errors are a JSON Error body with a 4xx/5xx status.
package api

import (
	"context"
	"time"

	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Status describes a running node.
type Status struct {
	Name        string       `json:"name"`
	Pid         int          `json:"pid"`
	Started     time.Time    `json:"started"`
	Listeners   []Listener   `json:"listeners"`
	Connections []Connection `json:"connections"`
	// Workers holds at most StatusListLimit workers; WorkersTotal counts
	// them all (worker list gives every one).
	Workers      []Worker  `json:"workers"`
	WorkersTotal int       `json:"workers_total"`
	Services     []Service `json:"services"`
	// Transports are the transport plugins bound to the node (started), by
	// plugin name; a /node/NAME hop prefers a listener of one of these.
	Transports []string `json:"transports"`
	// State is UP, or DEGRADED while a plugin the node started is not
	// running (crashed and restarting, or failing to restart); Reason says
	// which and why.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Plugins are the supervised plugins the node started.
	Plugins []PluginState `json:"plugins"`
	// Relays, Inlets and Outlets are filled by nodes that run them.
	Relays  *Relays  `json:"relays,omitempty"`
	Inlets  []Portal `json:"inlets,omitempty"`
	Outlets []Portal `json:"outlets,omitempty"`
}

// Worker is one running worker; addresses are in route text form.
type Worker struct {
	Addresses []string `json:"addresses"`
	Kind      string   `json:"kind"`
	Queued    int      `json:"queued"`
}

// Service is a running service worker.
type Service struct {
	Type    string `json:"type"`
	Address string `json:"address"`
	// Authorized, when set, are the only identities whose messages reach
	// the service, and only through a secure channel.
	Authorized []string `json:"authorized,omitempty"`
	// MaxRegistrations is a relay service's cap on names it holds.
	MaxRegistrations int `json:"max_registrations,omitempty"`
}

// StartServiceRequest starts service Type at Address (default: the type's
// conventional name).
type StartServiceRequest struct {
	Type    string `json:"type"`
	Address string `json:"address,omitempty"`
	// Authorized restricts the service to messages that arrive through a
	// secure channel from one of these identifiers (host/securechannel).
	Authorized []string `json:"authorized,omitempty"`
	// MaxRegistrations, for the relay service only, caps the names it
	// holds; a new name beyond it is refused. 0: the default,
	// relays.DefaultMaxRegistrations; at most state.MaxRegistrationsLimit.
	MaxRegistrations int `json:"max_registrations,omitempty"`
}

// SendRequest asks the node to send Payload along Route and wait for the
// first reply for at most Timeout.
type SendRequest struct {
	Route   string        `json:"route"`
	Payload []byte        `json:"payload"`
	Timeout time.Duration `json:"timeout"`
}

// SendReply is the reply the node received.
type SendReply struct {
	Payload []byte `json:"payload"`
	Return  string `json:"return_route"`
}

// CreateRequest creates a listener or connection of Transport (a transport
// plugin's name) at Address, written in that transport's own syntax
// (127.0.0.1:7000, a socket path, a device, a topic).
type CreateRequest struct {
	Transport string `json:"transport"`
	Address   string `json:"address"`
	// Allow lists the local addresses (echo, /service/echo, /worker/ID)
	// network input arriving over it may reach; empty: the node's network
	// services (NetworkAllow in the daemon package).
	Allow []string `json:"allow,omitempty"`
	// Settings configure the transport plugin; they apply to the whole
	// transport on the node, so they must match those it already runs with.
	Settings map[string]string `json:"settings,omitempty"`
}

// Listener is a transport listener; network input from it may reach only
// the Allow addresses.
type Listener struct {
	ID string `json:"id"`
	// Name is the listener's name in the topology file, if any.
	Name      string `json:"name,omitempty"`
	Transport string `json:"transport"`
	// AddressType is the route type the transport serves (/TYPE/ADDRESS).
	AddressType string   `json:"address_type"`
	Address     string   `json:"address"`
	Allow       []string `json:"allow"`
	// Requested is the address it was created with (a :0 port before it
	// was bound), when that differs from Address.
	Requested string `json:"requested,omitempty"`
	// Up is false while the listener is being re-opened (its plugin
	// restarting); State says the same in the words node status uses
	// (UP, DOWN).
	Up    bool   `json:"up"`
	State string `json:"state"`
	// Default marks the node's own listener (the first of node create),
	// the one /node/NAME routes from other nodes prefer.
	Default bool `json:"default"`
	// Properties the transport reports about the listener (a QUIC
	// certificate fingerprint), and its counters, when it has any.
	Properties map[string]string `json:"properties,omitempty"`
	Counters   map[string]uint64 `json:"counters,omitempty"`
}

// Route is the listener's address in route text, /TYPE/ADDRESS.
func (l Listener) Route() string {
	return routing.Route{{Type: typeOr(l.AddressType, l.Transport), Value: l.Address}}.String()
}

func typeOr(t, plugin string) string {
	if t != "" {
		return t
	}
	return plugin
}

// Connection is an outgoing transport connection. Worker is the local
// address (/worker/<hex>) to use in routes over it.
type Connection struct {
	ID string `json:"id"`
	// Name is the connection's name in the topology file, if any.
	Name        string   `json:"name,omitempty"`
	Transport   string   `json:"transport"`
	AddressType string   `json:"address_type"`
	Remote      string   `json:"remote_address"`
	Local       string   `json:"local_address,omitempty"`
	Worker      string   `json:"worker"`
	Allow       []string `json:"allow"`
	Up          bool     `json:"up"`
	State       string   `json:"state"` // UP or DOWN, as Up says
	// Accepted is true for links a listener accepted (not dialled here).
	Accepted bool `json:"accepted"`
}

// Node states, the same words in every command and in JSON.
const (
	StateUp       = "UP"
	StateDown     = "DOWN"
	StateDegraded = "DEGRADED"
)

// UpDown is StateUp or StateDown.
func UpDown(up bool) string {
	if up {
		return StateUp
	}
	return StateDown
}

// PluginState is a supervised plugin's state on a node.
type PluginState struct {
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	State     string    `json:"state"` // starting, running, restarting, degraded, stopped
	Pid       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
}

// Plugin describes a plugin binary the node's plugin manager knows.
type Plugin struct {
	// Kind is "transport" or "portal".
	Kind          string `json:"kind"`
	Name          string `json:"name"`
	Version       string `json:"version"`
	ProtocolMajor int    `json:"protocol_major"`
	ProtocolMinor int    `json:"protocol_minor"`
	Path          string `json:"path"`
	SHA256        string `json:"sha256"`
	Running       bool   `json:"running"`
	Pid           int    `json:"pid,omitempty"`
	// Error says why the plugin could not be queried (a broken binary).
	Error string `json:"error,omitempty"`
}

// Error is the body of a failed call.
type Error struct {
	Error string `json:"error"`
}

// StatusError carries the HTTP status a failed Backend call maps to; its
// message is what the user sees.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// NotFound marks err as "the thing named does not exist" (404).
func NotFound(err error) error { return &StatusError{Code: 404, Err: err} }

// BadRequest marks err as a mistake in the request (400).
func BadRequest(err error) error { return &StatusError{Code: 400, Err: err} }

// Unavailable marks err as "this node cannot do that now" (503).
func Unavailable(err error) error { return &StatusError{Code: 503, Err: err} }

// Backend is what the server exposes: a node process implements it.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Workers(ctx context.Context) ([]Worker, error)
	Services(ctx context.Context) ([]Service, error)
	StartService(ctx context.Context, req StartServiceRequest) (Service, error)
	// Send sends payload along route and returns the first reply.
	Send(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error)
	Listeners(ctx context.Context) ([]Listener, error)
	// Listener returns one listener (by id, bound address or route text)
	// with the properties and counters its transport reports.
	Listener(ctx context.Context, id string) (Listener, error)
	CreateListener(ctx context.Context, req CreateRequest) (Listener, error)
	DeleteListener(ctx context.Context, id string) error
	Connections(ctx context.Context) ([]Connection, error)
	CreateConnection(ctx context.Context, req CreateRequest) (Connection, error)
	DeleteConnection(ctx context.Context, id string) error
	Plugins(ctx context.Context) ([]Plugin, error)
	// Shutdown starts stopping the node; it must not wait for the API
	// server, which is still answering this call.
	Shutdown()
}

// Relays lists both ends of relays on one node: the registrations this node
// made at relay services elsewhere (relay create --to THIS) and the
// forwarders its own relay service runs for other nodes.
type Relays struct {
	Registrations []relays.RegistrationInfo `json:"registrations"`
	Forwarders    []relays.ForwarderInfo    `json:"forwarders"`
	// ForwardersTotal counts every forwarder. In a node's status Forwarders
	// holds at most StatusListLimit of them (relay list gives every one),
	// so a flood of registrations cannot make a status reply large.
	ForwardersTotal int `json:"forwarders_total"`
}

// StatusListLimit bounds each list a status reply carries; the totals say
// how many there are, and the list commands give them all.
const StatusListLimit = 100

// CreateRelayRequest registers forward_to_Name at the relay service reached
// by At (route text; the node resolves a leading /node/NAME through the
// ferry home, see the daemon package).
type CreateRelayRequest struct {
	Name string `json:"name"`
	At   string `json:"at"`
	// Wait, when positive, makes the call wait up to Wait for the relay's
	// first acknowledgement and fail (registering nothing) without one.
	Wait time.Duration `json:"wait,omitempty"`
	// Insecure registers without a secure channel to the relay node (the
	// name is then owned through the node's relay secret only, and what
	// the relay forwards to this node is not encrypted on that hop).
	Insecure bool `json:"insecure,omitempty"`
}

// Portal is a TCP inlet or outlet on a node: its state and counters.
type Portal struct {
	// ID names the portal on its node: the inlet's bound listen address or
	// the outlet's worker address in route text.
	ID string `json:"id"`
	// Name is the portal's name in the topology file, if any.
	Name string `json:"name,omitempty"`
	// SecureChannel is a secure inlet's channel (its address, the first hop
	// of Route) and ChannelRoute the route that channel takes to the
	// outlet's node's listener, as last opened.
	SecureChannel string `json:"secure_channel,omitempty"`
	ChannelRoute  string `json:"channel_route,omitempty"`
	portals.Status
}

// CreateInletRequest starts an inlet listening at Address with sessions
// along Route (route text).
type CreateInletRequest struct {
	Address string `json:"address"`
	Route   string `json:"route"`
	// Secure puts every session inside a secure channel to the outlet's
	// node: the channel goes to the route without its last address (the
	// outlet) followed by /service/api, and sessions go through the
	// channel to that last address.
	Secure bool `json:"secure,omitempty"`
	// SessionTimeout, when set ("30s"), is how long a session waits for a
	// broken path to come back before its client is closed; default
	// portals.DefaultSessionTimeout.
	SessionTimeout string `json:"session_timeout,omitempty"`
	// MaxSessions caps the inlet's open sessions (clients); one more is
	// reset at once. 0: portals.DefaultMaxSessions; at most
	// state.MaxSessionsLimit.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// CreateOutletRequest starts an outlet at the local Address (default
// /service/outlet) that dials Target for every session.
type CreateOutletRequest struct {
	Address string `json:"address,omitempty"`
	Target  string `json:"target"`
	// Secure makes the outlet accept sessions only through a secure
	// channel (from any identity); others are refused.
	Secure bool `json:"secure,omitempty"`
	// MaxSessions caps the outlet's open sessions (each dials the target);
	// one more is refused. 0: portals.DefaultMaxSessions; at most
	// state.MaxSessionsLimit.
	MaxSessions int `json:"max_sessions,omitempty"`
}

// PortalBackend is the part of a Backend that serves relays and portals;
// a Backend that does not implement it answers those endpoints with 501.
type PortalBackend interface {
	Relays(ctx context.Context) (Relays, error)
	CreateRelay(ctx context.Context, req CreateRelayRequest) (relays.RegistrationInfo, error)
	// DeleteRelay deletes this node's registration called name, or else
	// the forwarder called name on its relay service.
	DeleteRelay(ctx context.Context, name string) error
	Inlets(ctx context.Context) ([]Portal, error)
	CreateInlet(ctx context.Context, req CreateInletRequest) (Portal, error)
	DeleteInlet(ctx context.Context, id string) error
	Outlets(ctx context.Context) ([]Portal, error)
	CreateOutlet(ctx context.Context, req CreateOutletRequest) (Portal, error)
	DeleteOutlet(ctx context.Context, id string) error
}
