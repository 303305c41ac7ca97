package node

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ferryhq/ferry/sdk/routing"
)

// Errors travel back: when a node cannot deliver a message that it routes
// on someone else's behalf (it arrived from a network, or a hop, relay or
// other worker passed it on), it sends a small error message along the
// message's return route, so the sender fails at once with the cause
// instead of waiting for a reply that will never come.
//
// The error message is an ordinary routing message (the wire codec is
// unchanged) whose payload starts with a reserved prefix:
//
//	magic    ErrorMagic (14 bytes: 0x00 0xFF "ferry-error" 0x00)
//	version  1 byte (1)
//	code     1 byte  ErrorCode
//	node     uvarint length + UTF-8, at most 255 bytes: the reporting node's name
//	address  uvarint length + route text, at most 1024 bytes: what could not be reached
//	cause    uvarint length + UTF-8, at most 1024 bytes: the reason, for people
//
// Bytes after the cause are ignored, so later versions can add fields. The
// error message's own return route starts empty, and a node never answers an
// error message with another one, so errors cannot loop. Errors are
// rate-limited per source (Config.ErrorsPerSecond) and per node, so a peer
// cannot use them to amplify traffic.

// ErrorMagic starts the payload of every error message.
const ErrorMagic = "\x00\xffferry-error\x00"

const errorVersion byte = 1

// Limits on the text fields of an error message.
const (
	maxErrNode  = 255
	maxErrAddr  = 1024
	maxErrCause = 1024
	// MaxErrorPayload bounds an encoded error payload.
	MaxErrorPayload = len(ErrorMagic) + 2 + 3*binary.MaxVarintLen16 + maxErrNode + maxErrAddr + maxErrCause
)

// ErrorCode says why a message was not delivered.
type ErrorCode byte

// Error codes. Unknown codes decode as CodeOther's kind of error with the
// code kept.
const (
	CodeOther        ErrorCode = 0
	CodeNoWorker     ErrorCode = 1 // no worker at that address
	CodeNoTransport  ErrorCode = 2 // no transport for that address type
	CodeAccessDenied ErrorCode = 3 // the destination does not accept messages from that network
	CodeDeadLink     ErrorCode = 4 // the link on the way is down
	CodeHopLimit     ErrorCode = 5 // a route grew past routing.MaxHops (a loop)
	CodeNoDial       ErrorCode = 6 // network input may not make this node dial out
	CodeTooLarge     ErrorCode = 7 // a link on the way takes no message that large
)

func (c ErrorCode) String() string {
	switch c {
	case CodeNoWorker:
		return "no worker"
	case CodeNoTransport:
		return "no transport"
	case CodeAccessDenied:
		return "access denied"
	case CodeDeadLink:
		return "dead link"
	case CodeHopLimit:
		return "hop limit"
	case CodeNoDial:
		return "dial refused"
	case CodeTooLarge:
		return "too large"
	case CodeOther:
		return "error"
	}
	return fmt.Sprintf("error %d", byte(c))
}

// ErrHopLimit is returned when a route would grow past routing.MaxHops,
// which is how a routing loop ends.
var ErrHopLimit = errors.New("hop limit reached (a routing loop?)")

// ErrDialRefused is returned when a message that came from a network would
// make the node dial an address it has no link to and that
// Config.NetworkDialAllow does not name.
var ErrDialRefused = errors.New("network input may not make this node dial out")

// RemoteError is a delivery failure reported by another node (or by this
// node on behalf of a worker) through an error message. SendAndReceive and
// Request return it; test with errors.As, or with errors.Is against
// ErrNoRoute, ErrUnknownTranspt, ErrAccessDenied, ErrWorkerStopped,
// ErrHopLimit, ErrDialRefused and routing.ErrTooLarge (a link on the way
// takes no message that large; transports wrap it in their
// transport.ErrTooLarge errors).
type RemoteError struct {
	Code    ErrorCode
	Node    string // the node that reported it; may be empty for an unnamed node
	Address string // route text of what could not be reached
	Cause   string
}

func (e *RemoteError) Error() string {
	who := e.Node
	if who == "" {
		who = "a node"
	} else {
		who = "node " + who
	}
	if e.Address != "" {
		return fmt.Sprintf("%s could not deliver to %s: %s", who, e.Address, e.Cause)
	}
	return fmt.Sprintf("%s could not deliver: %s", who, e.Cause)
}

// Is maps the code to the node's sentinel errors.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case CodeNoWorker:
		return target == ErrNoRoute
	case CodeNoTransport:
		return target == ErrUnknownTranspt
	case CodeAccessDenied:
		return target == ErrAccessDenied
	case CodeDeadLink:
		return target == ErrWorkerStopped
	case CodeHopLimit:
		return target == ErrHopLimit
	case CodeNoDial:
		return target == ErrDialRefused
	case CodeTooLarge:
		return target == routing.ErrTooLarge
	}
	return false
}

// IsErrorPayload reports whether p is an error message's payload.
func IsErrorPayload(p []byte) bool {
	return len(p) >= len(ErrorMagic) && string(p[:len(ErrorMagic)]) == ErrorMagic
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// EncodeError returns the payload of an error message for e. Over-long
// fields are cut to their limits.
func EncodeError(e *RemoteError) []byte {
	node, addr, cause := clip(e.Node, maxErrNode), clip(e.Address, maxErrAddr), clip(e.Cause, maxErrCause)
	b := make([]byte, 0, len(ErrorMagic)+2+9+len(node)+len(addr)+len(cause))
	b = append(b, ErrorMagic...)
	b = append(b, errorVersion, byte(e.Code))
	for _, f := range []string{node, addr, cause} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// DecodeError parses an error message's payload.
func DecodeError(p []byte) (*RemoteError, error) {
	if !IsErrorPayload(p) {
		return nil, errors.New("not an error message")
	}
	if len(p) > MaxErrorPayload {
		return nil, fmt.Errorf("error message of %d bytes, the limit is %d", len(p), MaxErrorPayload)
	}
	b := p[len(ErrorMagic):]
	if len(b) < 2 {
		return nil, errors.New("error message truncated")
	}
	if b[0] != errorVersion {
		return nil, fmt.Errorf("error message version %d, this node speaks %d", b[0], errorVersion)
	}
	e := &RemoteError{Code: ErrorCode(b[1])}
	b = b[2:]
	var fields [3]string
	for i, limit := range []int{maxErrNode, maxErrAddr, maxErrCause} {
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("error message field %d: bad length", i+1)
		}
		b = b[k:]
		if n > uint64(limit) || n > uint64(len(b)) {
			return nil, fmt.Errorf("error message field %d: %d bytes (limit %d, %d left)", i+1, n, limit, len(b))
		}
		fields[i] = string(b[:n])
		b = b[n:]
	}
	e.Node, e.Address, e.Cause = fields[0], fields[1], fields[2]
	return e, nil
}

// codeOf classifies a delivery error.
func codeOf(err error) ErrorCode {
	switch {
	case errors.Is(err, ErrHopLimit):
		return CodeHopLimit
	case errors.Is(err, ErrDialRefused):
		return CodeNoDial
	case errors.Is(err, routing.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrAccessDenied):
		return CodeAccessDenied
	case errors.Is(err, ErrUnknownTranspt):
		return CodeNoTransport
	case errors.Is(err, ErrNoRoute):
		return CodeNoWorker
	case errors.Is(err, ErrWorkerStopped):
		return CodeDeadLink
	}
	return CodeOther
}

// AsRemoteError returns the error a message carries when it is an error
// message.
func AsRemoteError(m *routing.Message) (*RemoteError, bool) {
	if m == nil || !IsErrorPayload(m.Payload) {
		return nil, false
	}
	e, err := DecodeError(m.Payload)
	if err != nil {
		return &RemoteError{Code: CodeOther, Cause: "malformed error message: " + err.Error()}, true
	}
	return e, true
}
