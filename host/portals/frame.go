package portals

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// The portal session protocol. Every frame is one message payload whose first
// byte is its kind:
//
//	open    1  uvarint version, 16-byte session id, uvarint window, then
//	           optionally early data (at most maxEarlyData bytes): the
//	           opener's first bytes, its message 0, sent in a second open
//	           right behind the first so they need not wait for opened
//	opened  2  uvarint version, uvarint window
//	data    3  seq, next, consumed (each 8 bytes, big-endian), then bytes
//	           (at least one): next and consumed acknowledge the reverse
//	           direction as an ack without SACK ranges does
//	fin     4  uvarint seq
//	ack     5  uvarint consumed (total bytes the receiver has written out),
//	           uvarint next (every data/fin message below this seq arrived),
//	           uvarint n (at most maxSackRanges), then n SACK ranges, each
//	           uvarint gap (from the end of the previous range, or from
//	           next, at least 1) and uvarint length (at least 1): messages
//	           that arrived out of order above next
//	close   6  reason (UTF-8, at most maxReason bytes)
//	ping    7
//	pong    8
//
// data and fin share one sequence per direction starting at 0. The receiver
// delivers them in order, buffers what arrives early (within the window),
// drops duplicates and answers with ack; the sender keeps every message until
// it is acknowledged and retransmits what the acks show missing. ack is
// cumulative, so a lost ack is repaired by the next one; it doubles as the
// flow-control credit and the keepalive. Every data message carries the
// cumulative ack of the other direction too, so request/response traffic
// needs no ack messages of its own; a receiver sends one after every
// second message in order, at once for anything out of order, a duplicate
// or a fin, and otherwise after at most ackDelay (delayed acks, as TCP).
// The fixed-size data header lets a sender read a stream straight into a
// message buffer and fill the header in afterwards.

// ProtocolVersion is the session protocol version carried in open/opened.
// Version 2 added retransmission (ack with SACK replaced credit); version 3
// carries an ack in every data message (fixed-size data header); version 4
// lets an open carry early data.
const ProtocolVersion = 4

// Frame kinds.
const (
	kindOpen   byte = 1
	kindOpened byte = 2
	kindData   byte = 3
	kindFin    byte = 4
	kindAck    byte = 5
	kindClose  byte = 6
	kindPing   byte = 7
	kindPong   byte = 8
)

const (
	idLen     = 16
	maxReason = 1024
	// maxWindow bounds the window a peer may announce, so a hostile open
	// cannot make us queue unbounded memory.
	maxWindow = 64 << 20
	// maxEarlyData bounds the data an open carries.
	maxEarlyData = minReadBuffer
	// maxSackRanges bounds the SACK ranges one ack carries.
	maxSackRanges = 16
	// dataHeadroom is the size of a data frame's header (kind byte, seq,
	// next, consumed): buffers reserve it in front of the data.
	dataHeadroom = 1 + 3*8
)

// sackRange is a run of sequence numbers [start, end) that arrived.
type sackRange struct{ start, end uint64 }

var errFrame = errors.New("malformed portal frame")

type frame struct {
	kind     byte
	version  uint64
	id       [idLen]byte
	window   uint64
	seq      uint64
	consumed uint64
	next     uint64
	sacks    []sackRange
	data     []byte
	reason   string
}

func kindName(k byte) string {
	switch k {
	case kindOpen:
		return "open"
	case kindOpened:
		return "opened"
	case kindData:
		return "data"
	case kindFin:
		return "fin"
	case kindAck:
		return "ack"
	case kindClose:
		return "close"
	case kindPing:
		return "ping"
	case kindPong:
		return "pong"
	}
	return fmt.Sprintf("kind %d", k)
}

// encode returns f's wire form. data frames are built with frameData instead
// on the hot path.
func (f *frame) encode() []byte {
	b := []byte{f.kind}
	switch f.kind {
	case kindOpen:
		b = binary.AppendUvarint(b, f.version)
		b = append(b, f.id[:]...)
		b = binary.AppendUvarint(b, f.window)
		b = append(b, f.data...)
	case kindOpened:
		b = binary.AppendUvarint(b, f.version)
		b = binary.AppendUvarint(b, f.window)
	case kindData:
		b = binary.BigEndian.AppendUint64(b, f.seq)
		b = binary.BigEndian.AppendUint64(b, f.next)
		b = binary.BigEndian.AppendUint64(b, f.consumed)
		b = append(b, f.data...)
	case kindFin:
		b = binary.AppendUvarint(b, f.seq)
	case kindAck:
		b = binary.AppendUvarint(b, f.consumed)
		b = binary.AppendUvarint(b, f.next)
		b = binary.AppendUvarint(b, uint64(len(f.sacks)))
		prev := f.next
		for _, r := range f.sacks {
			b = binary.AppendUvarint(b, r.start-prev)
			b = binary.AppendUvarint(b, r.end-r.start)
			prev = r.end
		}
	case kindClose:
		r := f.reason
		if len(r) > maxReason {
			// Cutting may split a rune; drop the fragment so the peer's
			// UTF-8 check accepts the reason.
			r = strings.ToValidUTF8(r[:maxReason], "")
		}
		b = append(b, r...)
	}
	return b
}

// putDataHeader writes a data frame's header at the start of buf, whose
// data the caller already placed at buf[dataHeadroom:], so data is framed
// without a copy.
func putDataHeader(buf []byte, seq, next, consumed uint64) {
	buf[0] = kindData
	putDataAck(buf, next, consumed)
	binary.BigEndian.PutUint64(buf[1:], seq)
}

// putDataAck rewrites the ack a data frame carries (a retransmission
// carries the current one).
func putDataAck(buf []byte, next, consumed uint64) {
	binary.BigEndian.PutUint64(buf[9:], next)
	binary.BigEndian.PutUint64(buf[17:], consumed)
}

// decodeFrame parses one frame. data aliases b. Every byte sequence is either
// a valid frame or an error; nothing panics.
func decodeFrame(b []byte) (frame, error) {
	var f frame
	if len(b) == 0 {
		return f, fmt.Errorf("%w: empty payload", errFrame)
	}
	f.kind = b[0]
	rest := b[1:]
	uv := func(what string) (uint64, error) {
		x, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, fmt.Errorf("%w: %s: bad or truncated varint", errFrame, kindName(f.kind)+" "+what)
		}
		rest = rest[n:]
		return x, nil
	}
	var err error
	switch f.kind {
	case kindOpen:
		if f.version, err = uv("version"); err != nil {
			return f, err
		}
		if len(rest) < idLen {
			return f, fmt.Errorf("%w: open: session id truncated", errFrame)
		}
		copy(f.id[:], rest[:idLen])
		rest = rest[idLen:]
		if f.window, err = uv("window"); err != nil {
			return f, err
		}
		if len(rest) > maxEarlyData {
			return f, fmt.Errorf("%w: open: %d bytes of early data, at most %d", errFrame, len(rest), maxEarlyData)
		}
		if len(rest) > 0 {
			f.data, rest = rest, nil
		}
	case kindOpened:
		if f.version, err = uv("version"); err != nil {
			return f, err
		}
		if f.window, err = uv("window"); err != nil {
			return f, err
		}
	case kindData:
		if len(rest) < dataHeadroom-1 {
			return f, fmt.Errorf("%w: data header truncated", errFrame)
		}
		f.seq = binary.BigEndian.Uint64(rest)
		f.next = binary.BigEndian.Uint64(rest[8:])
		f.consumed = binary.BigEndian.Uint64(rest[16:])
		rest = rest[dataHeadroom-1:]
		if len(rest) == 0 {
			return f, fmt.Errorf("%w: data frame without data", errFrame)
		}
		f.data, rest = rest, nil
	case kindFin:
		if f.seq, err = uv("seq"); err != nil {
			return f, err
		}
	case kindAck:
		if f.consumed, err = uv("consumed"); err != nil {
			return f, err
		}
		if f.next, err = uv("next"); err != nil {
			return f, err
		}
		n, err := uv("range count")
		if err != nil {
			return f, err
		}
		if n > maxSackRanges {
			return f, fmt.Errorf("%w: ack: %d SACK ranges, at most %d", errFrame, n, maxSackRanges)
		}
		prev := f.next
		for i := uint64(0); i < n; i++ {
			gap, err := uv("range gap")
			if err != nil {
				return f, err
			}
			length, err := uv("range length")
			if err != nil {
				return f, err
			}
			// Ranges are disjoint, ascending, and leave a hole before each.
			if gap == 0 || length == 0 || gap > math.MaxUint64-prev || length > math.MaxUint64-prev-gap {
				return f, fmt.Errorf("%w: ack: bad SACK range %d (gap %d, length %d)", errFrame, i, gap, length)
			}
			start := prev + gap
			f.sacks = append(f.sacks, sackRange{start, start + length})
			prev = start + length
		}
	case kindClose:
		if len(rest) > maxReason || !utf8.Valid(rest) {
			return f, fmt.Errorf("%w: close reason must be UTF-8 of at most %d bytes", errFrame, maxReason)
		}
		f.reason, rest = string(rest), nil
	case kindPing, kindPong:
	default:
		return f, fmt.Errorf("%w: unknown kind %d", errFrame, f.kind)
	}
	if len(rest) != 0 {
		return f, fmt.Errorf("%w: %s: %d trailing bytes", errFrame, kindName(f.kind), len(rest))
	}
	if (f.kind == kindOpen || f.kind == kindOpened) && (f.window == 0 || f.window > maxWindow) {
		return f, fmt.Errorf("%w: %s: window %d outside 1..%d", errFrame, kindName(f.kind), f.window, maxWindow)
	}
	return f, nil
}
