// Package portal is what a portal plugin implements and serves.
//
// A portal carries byte streams (TCP connections, for portal-tcp) between
// the outside world and a Ferry node. It has two halves: a Listener accepts
// streams from local clients (the inlet side) and Dial opens a stream to a
// target (the outlet side). The node moves the bytes over routes; the portal
// itself never sees routes or messages, only streams.
//
// The same Portal value works in-process (an embedding program hands it to
// host/portals directly) and as a plugin (main calls Serve; the host drives it
// over gRPC through HashiCorp go-plugin), so the session logic in the host is
// identical for both.
package portal

import (
	"context"
	"errors"
	"io"
)

// ErrClosed is returned by operations on a closed Listener or Portal.
var ErrClosed = errors.New("portal: closed")

// Stream is one bidirectional byte stream, such as a TCP connection.
//
// Read and Write may be called concurrently with each other (one reader, one
// writer). Close unblocks a pending Read or Write.
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite half-closes the stream: the peer reads EOF after the bytes
	// already written, and this side can still Read.
	CloseWrite() error
	// Close closes both directions and releases the stream.
	Close() error
}

// Listener accepts streams from local clients.
type Listener interface {
	// Addr is the bound address, with a real port when ":0" was asked.
	Addr() string
	// Accept waits for the next stream; it returns ErrClosed after Close.
	// Cancelling ctx may close the listener (a TCP accept cannot be
	// interrupted otherwise), so pass a context that lives as long as the
	// listener is wanted.
	Accept(ctx context.Context) (Stream, error)
	// Close stops accepting; streams already accepted stay open.
	Close() error
}

// Portal is implemented by a portal plugin.
type Portal interface {
	// Info describes the plugin.
	Info() Info
	// Listen starts accepting streams at address (for example
	// "127.0.0.1:0").
	Listen(ctx context.Context, address string) (Listener, error)
	// Dial opens a stream to address.
	Dial(ctx context.Context, address string) (Stream, error)
	// Close closes every listener and stream and releases the portal.
	Close() error
}

// Info describes a portal plugin.
type Info struct {
	// Name is the plugin's name, its binary's file name (e.g. "portal-tcp").
	Name string
	// Version is the plugin's own release version, e.g. "0.1.0".
	Version string
	// Protocol names what the streams carry, e.g. "tcp".
	Protocol string
}
