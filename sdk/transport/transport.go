// Package transport is what a transport plugin implements and serves.
//
// A transport moves packets (each one encoded routing.Message, opaque to the
// transport) between nodes. The node's side of every link is a worker: when
// a packet arrives on a link, the node puts that worker's address at the
// front of the message's return route, so a reply goes back over the same
// link. The transport itself never looks inside packets.
//
// The same Transport value works in-process (an embedding program hands it
// to the node directly) and as a plugin (main calls Serve, and the host
// drives it over gRPC through HashiCorp go-plugin).
//
// # How each shipped transport maps onto the interface
//
//   - TCP and QUIC are connection-oriented streams. Listen binds host:port
//     and Accept returns one Link per accepted connection (QUIC: per
//     connection, one bidirectional stream carrying frames). Dial opens one
//     connection. Packets are framed with a version byte and a length prefix;
//     the maximum frame size is enforced before allocating.
//   - UDP has no connections. Listen binds host:port and Accept returns one
//     Link per remote peer address seen (a demultiplexer keyed by source
//     address); Dial uses a connected socket. Packets larger than a datagram
//     are fragmented and reassembled; loss is possible and a packet with a
//     missing fragment is dropped whole, never delivered partially.
//   - Serial is one point-to-point line with no listener/dialer distinction.
//     Dial(device) and Listen(device) both open the line; such a listener's
//     Accept returns the one Link for the line, and again after it was
//     closed and reopened. Frames carry a checksum; a corrupted frame is
//     dropped, not delivered.
//   - Kafka has no connections: a node's inbound topic is its address.
//     Listen(topic) consumes that topic, and Accept returns one Link per
//     sender topic (named in a record header), so replies go to the
//     sender's topic. Dial(topic) produces to topic, stamping the node's own
//     inbound topic (a setting) in every record.
//
// # Plugin protocol
//
// Serve runs a Transport as a go-plugin gRPC server (AutoMTLS, gRPC only,
// the one handshake every Ferry plugin kind shares). The host first calls
// the base Hello every plugin answers (kind, name, version, protocol
// minor, typed capabilities both ways, settings schema), then the
// transport's control calls (configure, listen, accept, dial, close,
// status, counters) as unary RPCs; each link's packets travel on one
// bidirectional stream, many packets per gRPC message, in order, with gRPC
// flow control carrying backpressure both ways. Settings are checked
// against the schema before Configure (see Apply and SettingsConfigurer);
// the answer to Configure tells the host the largest packet the configured
// transport takes (see MaxMessageSizer), so a larger send fails with
// ErrTooLarge on the host's side and the link stays up.
// Listener and link extras, Counters and Properties, cross the boundary
// as they are in-process. Errors keep their identity across the boundary
// (errors.Is works for ErrClosed, ErrTooLarge, context errors), and calls
// into a plugin whose process died fail with ErrUnavailable.
//
// Forwarding rules (capability forward_rules): when a relay on the host
// forwards between two links of the same plugin process, the host hands
// the plugin the forwarder's route rewrite, and Serve applies it to
// arriving packets itself, so bytes that only pass through the node stop
// crossing into the host and back. A transport needs no code for it; its
// Link.Send may then be called from two goroutines, one at a time. A
// packet a rule cannot handle exactly goes to the host as before, and a
// rule starts forwarding in each direction only after a fence packet sent
// through the host has come back, so nothing the host still holds is
// overtaken.
//
// The host side of the protocol is not part of this package: it lives in
// the Ferry host (host/plugins), which a plugin author never imports.
//
// # Versions
//
// The major protocol version is go-plugin's handshake version; a host and a
// plugin with different majors refuse each other. Minor versions add
// features: each side announces its minor and capabilities at Hello and
// uses only what both support.
package transport

import (
	"context"
	"errors"
)

// ProtocolMajor is the plugin protocol major version (go-plugin's
// ProtocolVersion). Changing it breaks every plugin.
const ProtocolMajor = 1

// ProtocolMinor is the highest additive protocol revision this SDK speaks.
const ProtocolMinor = 1

// ErrClosed is returned by operations on a closed Link or Listener.
var ErrClosed = errors.New("transport: closed")

// ErrTooLarge is returned by Link.Send for a packet above the transport's
// maximum message size; the link stays usable.
var ErrTooLarge = errors.New("transport: packet exceeds the maximum message size")

// Transport is implemented by a transport plugin.
type Transport interface {
	// Info describes the plugin: its name, version, the route address type
	// it serves, its settings schema and limits. It is called before
	// Configure and must not depend on settings.
	Info() Info
	// Configure applies settings, already checked against Info().Settings
	// by the host (defaults filled in). It is called once, before Listen
	// or Dial.
	Configure(ctx context.Context, settings map[string]string) error
	// Listen starts accepting links at address (for example
	// "127.0.0.1:0"). The listener reports the bound address.
	Listen(ctx context.Context, address string) (Listener, error)
	// Dial opens a link to address.
	Dial(ctx context.Context, address string) (Link, error)
	// Close closes every listener and link and releases the transport.
	Close() error
}

// Listener accepts inbound links.
type Listener interface {
	// Addr is the bound address, with a real port when ":0" was asked.
	Addr() string
	// Accept waits for the next link; it returns ErrClosed after Close.
	Accept(ctx context.Context) (Link, error)
	// Close stops accepting; links already accepted stay open.
	Close() error
}

// Link carries packets both ways between two nodes, in order.
type Link interface {
	// LocalAddr and RemoteAddr describe the two ends, in the transport's
	// address syntax (host:port, a topic, a device path).
	LocalAddr() string
	RemoteAddr() string
	// Send writes packets in order. It blocks while the link cannot take
	// more (backpressure) until ctx ends. A packet over the maximum size
	// fails the call with ErrTooLarge before anything of it is sent.
	Send(ctx context.Context, packets [][]byte) error
	// Recv returns the next packets in order. The slices are valid until the
	// next Recv call. It returns io.EOF when the peer closed the link
	// cleanly and another error when the link broke.
	Recv(ctx context.Context) ([][]byte, error)
	// Close closes the link; a blocked Recv returns.
	Close() error
}

// Info describes a transport plugin.
type Info struct {
	// Name is the plugin's name, as in its binary name (ferry-transport-NAME).
	Name string
	// Version is the plugin's own release version, e.g. "0.1.0".
	Version string
	// AddressType is the route address type the transport serves, e.g.
	// "tcp" for routes like /tcp/127.0.0.1:4000.
	AddressType string
	// MaxMessageSize is the largest packet the transport carries, in bytes.
	MaxMessageSize int
	// Unreliable declares that a link may lose, duplicate or reorder
	// packets (UDP, a serial line without retransmission). Reliable
	// transports (the zero value: TCP, QUIC, Kafka) deliver every packet
	// once, in order, until the link breaks. Protocols above routing
	// (portal sessions, secure channels) provide end-to-end reliability;
	// the conformance suite checks an unreliable transport against the
	// matching profile.
	Unreliable bool
	// Settings declares the settings Configure accepts, so the host and
	// topology files can check them before the plugin starts.
	Settings []Setting
	// Capabilities lists free-form features the transport itself declares
	// (shown by the host, for example in `ferry plugin list`). Protocol
	// capabilities (counters, properties, ...) are negotiated by the SDK
	// and need not be listed.
	Capabilities []string
}

// Counters is implemented by a Listener or Link that counts what it did
// (datagrams, bytes, dropped frames, ...). The host shows the counters in
// `ferry node show`; names are short snake_case words and values only grow.
// It is optional: a transport that counts nothing does not implement it.
type Counters interface {
	Counters() map[string]uint64
}

// SettingType is the type of a setting's value.
type SettingType string

// Setting types. Values are carried as strings and parsed by the host to
// check them: "42", "true", "1.5s".
const (
	String   SettingType = "string"
	Int      SettingType = "int"
	Bool     SettingType = "bool"
	Duration SettingType = "duration"
)

// Setting is one entry of a plugin's settings schema.
type Setting struct {
	Name        string
	Type        SettingType
	Default     string // empty: no default
	Required    bool
	Description string
}
