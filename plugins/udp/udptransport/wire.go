package udptransport

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// WireVersion is the first byte of every datagram. A datagram with another
// version is dropped and counted as bad.
const WireVersion = 1

// Datagram types.
const (
	TypeHello     byte = 1 // dialer -> listener: empty, or carrying the listener's cookie
	TypeCookie    byte = 2 // listener -> dialer: stateless challenge
	TypeWelcome   byte = 3 // listener -> dialer: the link exists
	TypeData      byte = 4 // one whole message
	TypeFragment  byte = 5 // one fragment of a message larger than a datagram
	TypeClose     byte = 6 // the sender closed the link (or refuses it)
	TypeKeepalive byte = 7 // nothing to send for a while; the link is alive
)

// Header sizes. Every datagram starts with version, type and the 32-bit link
// id the dialer picked, so a datagram for a link that no longer exists (or
// a guess by someone who cannot see the traffic) is told apart from the
// link's own.
const (
	baseHeaderLen     = 6
	dataHeaderLen     = baseHeaderLen + 4  // + message id
	fragmentHeaderLen = baseHeaderLen + 12 // + message id, index, count, total
	cookieLen         = 16
	// helloMinLen is what a hello is padded to: larger than the cookie
	// reply, so the listener never sends more bytes than it received to
	// an address nobody verified (no amplification).
	helloMinLen = 64
)

// Close reasons, the optional byte after a close header.
const (
	closeNormal       byte = 0
	closeNotListening byte = 1 // the listener is closed; no new links
	closeFull         byte = 2 // the listener has max_peers links
	closeUnknown      byte = 3 // no such link here (the listener restarted or expired it)
)

var errBadDatagram = errors.New("bad datagram")

// header is a decoded datagram header. Payload aliases the datagram.
type header struct {
	Type    byte
	LinkID  uint32
	MsgID   uint32 // data and fragment
	Index   uint16 // fragment
	Count   uint16 // fragment
	Total   uint32 // fragment: length of the whole message
	Payload []byte
}

// decodeHeader parses one datagram. maxMessage bounds a fragment's claimed
// total, checked here before anyone allocates for it.
func decodeHeader(b []byte, maxMessage int) (header, error) {
	var h header
	if len(b) < baseHeaderLen {
		return h, fmt.Errorf("%w: %d bytes, shorter than a header", errBadDatagram, len(b))
	}
	if b[0] != WireVersion {
		return h, fmt.Errorf("%w: version %d, want %d", errBadDatagram, b[0], WireVersion)
	}
	h.Type = b[1]
	h.LinkID = binary.BigEndian.Uint32(b[2:6])
	if h.LinkID == 0 {
		return h, fmt.Errorf("%w: link id 0", errBadDatagram)
	}
	rest := b[baseHeaderLen:]
	switch h.Type {
	case TypeHello:
		if len(b) < helloMinLen {
			return h, fmt.Errorf("%w: hello of %d bytes, want at least %d", errBadDatagram, len(b), helloMinLen)
		}
		// A flag byte (0: no cookie, 1: a cookie follows), then padding.
		switch rest[0] {
		case 0:
		case 1:
			h.Payload = rest[1 : 1+cookieLen]
		default:
			return h, fmt.Errorf("%w: hello flag %d", errBadDatagram, rest[0])
		}
	case TypeCookie:
		if len(rest) != cookieLen {
			return h, fmt.Errorf("%w: cookie of %d bytes", errBadDatagram, len(rest))
		}
		h.Payload = rest
	case TypeWelcome, TypeKeepalive:
		if len(rest) != 0 {
			return h, fmt.Errorf("%w: type %d with %d payload bytes", errBadDatagram, h.Type, len(rest))
		}
	case TypeClose:
		if len(rest) > 1 {
			return h, fmt.Errorf("%w: close with %d payload bytes", errBadDatagram, len(rest))
		}
		h.Payload = rest
	case TypeData:
		if len(rest) < 4 {
			return h, fmt.Errorf("%w: data datagram of %d bytes", errBadDatagram, len(b))
		}
		h.MsgID = binary.BigEndian.Uint32(rest[:4])
		h.Payload = rest[4:]
		if len(h.Payload) > maxMessage {
			return h, fmt.Errorf("%w: %d-byte message, max %d", errBadDatagram, len(h.Payload), maxMessage)
		}
	case TypeFragment:
		if len(rest) < 12 {
			return h, fmt.Errorf("%w: fragment datagram of %d bytes", errBadDatagram, len(b))
		}
		h.MsgID = binary.BigEndian.Uint32(rest[0:4])
		h.Index = binary.BigEndian.Uint16(rest[4:6])
		h.Count = binary.BigEndian.Uint16(rest[6:8])
		h.Total = binary.BigEndian.Uint32(rest[8:12])
		h.Payload = rest[12:]
		if h.Total == 0 || uint64(h.Total) > uint64(maxMessage) {
			return h, fmt.Errorf("%w: fragment of a %d-byte message, max %d", errBadDatagram, h.Total, maxMessage)
		}
		if h.Count < 2 || h.Index >= h.Count || uint32(h.Count) > h.Total {
			return h, fmt.Errorf("%w: fragment %d of %d for %d bytes", errBadDatagram, h.Index, h.Count, h.Total)
		}
		_, n, ok := fragmentSpan(int(h.Total), int(h.Count), int(h.Index))
		if !ok {
			return h, fmt.Errorf("%w: %d fragments cannot split %d bytes", errBadDatagram, h.Count, h.Total)
		}
		if len(h.Payload) != n {
			return h, fmt.Errorf("%w: fragment %d/%d carries %d bytes, want %d", errBadDatagram, h.Index, h.Count, len(h.Payload), n)
		}
	default:
		return h, fmt.Errorf("%w: unknown type %d", errBadDatagram, h.Type)
	}
	return h, nil
}

// fragmentSpan is where fragment i of a total-byte message split into count
// fragments lies. Fragments are equal chunks of ceil(total/count) bytes
// except the last, which must not be empty; both ends compute it, so the
// receiver needs no knowledge of the sender's datagram size.
func fragmentSpan(total, count, i int) (off, n int, ok bool) {
	chunk := (total + count - 1) / count
	if (count-1)*chunk >= total {
		return 0, 0, false
	}
	off = i * chunk
	n = min(chunk, total-off)
	return off, n, true
}

// fragmentCount is how many fragments a total-byte message needs when each
// carries at most per bytes.
func fragmentCount(total, per int) int { return (total + per - 1) / per }

func putBase(b []byte, typ byte, linkID uint32) {
	b[0] = WireVersion
	b[1] = typ
	binary.BigEndian.PutUint32(b[2:6], linkID)
}

// control is a datagram of type typ with an optional payload.
func control(typ byte, linkID uint32, payload ...byte) []byte {
	b := make([]byte, baseHeaderLen, baseHeaderLen+len(payload))
	putBase(b, typ, linkID)
	return append(b, payload...)
}

func putDataHeader(b []byte, linkID, msgID uint32) {
	putBase(b, TypeData, linkID)
	binary.BigEndian.PutUint32(b[6:10], msgID)
}

func putFragmentHeader(b []byte, linkID, msgID uint32, index, count uint16, total uint32) {
	putBase(b, TypeFragment, linkID)
	binary.BigEndian.PutUint32(b[6:10], msgID)
	binary.BigEndian.PutUint16(b[10:12], index)
	binary.BigEndian.PutUint16(b[12:14], count)
	binary.BigEndian.PutUint32(b[14:18], total)
}

// helloDatagram is a hello, carrying cookie when it is not nil, padded to
// helloMinLen.
func helloDatagram(linkID uint32, cookie []byte) []byte {
	b := make([]byte, helloMinLen)
	putBase(b, TypeHello, linkID)
	if cookie != nil {
		b[baseHeaderLen] = 1
		copy(b[baseHeaderLen+1:], cookie)
	}
	return b
}

// cookieJar makes and checks the stateless cookies of one listener: an
// HMAC-SHA256 over the peer's address, the link id and a time bucket, with
// a secret only this listener knows. A cookie is good in its bucket and the
// next, so a listener keeps no state for a hello until the peer proves it
// receives at the address it claims.
type cookieJar struct {
	secret [32]byte
	bucket int64 // nanoseconds per bucket
}

func (j *cookieJar) make(now int64, peer netip.AddrPort, linkID uint32) []byte {
	return j.mac(now/j.bucket, peer, linkID)
}

func (j *cookieJar) mac(bucket int64, peer netip.AddrPort, linkID uint32) []byte {
	m := hmac.New(sha256.New, j.secret[:])
	var b [8 + 16 + 2 + 4]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(bucket))
	a16 := peer.Addr().As16()
	copy(b[8:24], a16[:])
	binary.BigEndian.PutUint16(b[24:26], peer.Port())
	binary.BigEndian.PutUint32(b[26:30], linkID)
	m.Write(b[:])
	return m.Sum(nil)[:cookieLen]
}

func (j *cookieJar) check(now int64, peer netip.AddrPort, linkID uint32, cookie []byte) bool {
	if len(cookie) != cookieLen {
		return false
	}
	b := now / j.bucket
	return hmac.Equal(cookie, j.mac(b, peer, linkID)) || hmac.Equal(cookie, j.mac(b-1, peer, linkID))
}
