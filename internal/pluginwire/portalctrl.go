package pluginwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A portal plugin of protocol minor PortalCtrlMinor or later serves a
// control stream on its data channel when the host opens id PortalCtrlID:
// dial and accept requests and their answers travel there as small
// messages, one per DATA frame, instead of as a gRPC call per stream (a
// unary call cost each new connection a round trip through HTTP/2 and TLS
// on both sides). Listen, close and the rest stay on gRPC.
//
// A message is op u8 | request u64 | the op's fields:
//
//	CtrlDial   (host)   timeout ms u32 | address
//	CtrlAccept (host)   listener u64
//	CtrlCancel (host)   -
//	CtrlStream (plugin) stream u64 | local length u16 | local | remote
//	CtrlFail   (plugin) code u8 | text
//
// A CtrlStream answer names a stream the plugin parked for the host as
// the StreamInfo of the gRPC calls does; the host opens it (or, when
// nobody waits for it any more, opens and closes it).

// PortalCtrlID is the data channel id of a portal plugin's control
// stream. The ids a plugin hands out for streams count up from 1.
const PortalCtrlID = math.MaxUint64

// PortalCtrlMinor is the portal protocol minor from which a plugin serves
// the control stream.
const PortalCtrlMinor = 2

// Control message ops.
const (
	CtrlDial   = 1
	CtrlAccept = 2
	CtrlCancel = 3
	CtrlStream = 4
	CtrlFail   = 5
)

// CtrlFail codes.
const (
	CtrlFailed   = 0 // the operation failed; the text says why
	CtrlClosed   = 1 // the listener is closed
	CtrlNotFound = 2 // no such listener
)

// maxCtrlText bounds an address or a failure text.
const maxCtrlText = 4 << 10

// CtrlMsg is one control message; which fields count depends on Op.
type CtrlMsg struct {
	Op       uint8
	Req      uint64
	Timeout  uint32 // CtrlDial, milliseconds (0: none)
	Address  string // CtrlDial
	Listener uint64 // CtrlAccept
	Stream   uint64 // CtrlStream
	Local    string // CtrlStream
	Remote   string // CtrlStream
	Code     uint8  // CtrlFail
	Text     string // CtrlFail
}

// ErrCtrl is what DecodeCtrl fails with.
var ErrCtrl = errors.New("bad portal control message")

func clip(s string) string { return s[:min(len(s), maxCtrlText)] }

// Append appends the encoded message to b. Strings longer than the limit
// are cut.
func (m *CtrlMsg) Append(b []byte) []byte {
	b = append(b, m.Op)
	b = binary.BigEndian.AppendUint64(b, m.Req)
	switch m.Op {
	case CtrlDial:
		b = binary.BigEndian.AppendUint32(b, m.Timeout)
		b = append(b, clip(m.Address)...)
	case CtrlAccept:
		b = binary.BigEndian.AppendUint64(b, m.Listener)
	case CtrlStream:
		local := clip(m.Local)
		b = binary.BigEndian.AppendUint64(b, m.Stream)
		b = binary.BigEndian.AppendUint16(b, uint16(len(local)))
		b = append(b, local...)
		b = append(b, clip(m.Remote)...)
	case CtrlFail:
		b = append(b, m.Code)
		b = append(b, clip(m.Text)...)
	}
	return b
}

// DecodeCtrl decodes one control message. It never panics; anything
// malformed is an error wrapping ErrCtrl.
func DecodeCtrl(b []byte) (CtrlMsg, error) {
	var m CtrlMsg
	if len(b) < 9 {
		return m, fmt.Errorf("%w: %d bytes", ErrCtrl, len(b))
	}
	m.Op, m.Req, b = b[0], binary.BigEndian.Uint64(b[1:9]), b[9:]
	text := func(s []byte) (string, error) {
		if len(s) > maxCtrlText {
			return "", fmt.Errorf("%w: text of %d bytes", ErrCtrl, len(s))
		}
		return string(s), nil
	}
	var err error
	switch m.Op {
	case CtrlDial:
		if len(b) < 4 {
			return m, fmt.Errorf("%w: short dial", ErrCtrl)
		}
		m.Timeout = binary.BigEndian.Uint32(b)
		m.Address, err = text(b[4:])
	case CtrlAccept:
		if len(b) != 8 {
			return m, fmt.Errorf("%w: accept of %d bytes", ErrCtrl, len(b))
		}
		m.Listener = binary.BigEndian.Uint64(b)
	case CtrlCancel:
		if len(b) != 0 {
			return m, fmt.Errorf("%w: cancel with %d bytes", ErrCtrl, len(b))
		}
	case CtrlStream:
		if len(b) < 10 {
			return m, fmt.Errorf("%w: short stream", ErrCtrl)
		}
		m.Stream = binary.BigEndian.Uint64(b)
		n := int(binary.BigEndian.Uint16(b[8:]))
		b = b[10:]
		if n > len(b) {
			return m, fmt.Errorf("%w: local address of %d bytes, %d left", ErrCtrl, n, len(b))
		}
		if m.Local, err = text(b[:n]); err == nil {
			m.Remote, err = text(b[n:])
		}
	case CtrlFail:
		if len(b) < 1 {
			return m, fmt.Errorf("%w: short failure", ErrCtrl)
		}
		m.Code = b[0]
		m.Text, err = text(b[1:])
	default:
		return m, fmt.Errorf("%w: unknown op %d", ErrCtrl, m.Op)
	}
	return m, err
}
