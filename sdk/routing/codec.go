package routing

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// WireVersion is the first byte of every encoded message. A decoder refuses
// versions it does not know instead of guessing.
const WireVersion byte = 1

// DefaultMaxMessageSize is the largest encoded message a Codec accepts unless
// configured otherwise.
const DefaultMaxMessageSize = 16 << 20

// Errors returned (wrapped in *CodecError) by the codec. Test with errors.Is.
var (
	ErrTooLarge  = errors.New("message too large")
	ErrTruncated = errors.New("message truncated")
	ErrVersion   = errors.New("unsupported wire version")
	ErrMalformed = errors.New("malformed message")
)

// CodecError describes why a message could not be encoded or decoded.
type CodecError struct {
	Err    error // one of ErrTooLarge, ErrTruncated, ErrVersion, ErrMalformed
	Detail string
}

func (e *CodecError) Error() string { return e.Err.Error() + ": " + e.Detail }
func (e *CodecError) Unwrap() error { return e.Err }

func codecErr(kind error, format string, args ...any) error {
	return &CodecError{Err: kind, Detail: fmt.Sprintf(format, args...)}
}

// Codec encodes and decodes messages in the binary wire format:
//
//	version byte (1)
//	onward route:  uvarint hop count, then per hop uvarint len + type, uvarint len + value
//	return route:  same
//	payload:       uvarint len + bytes
//
// The zero value uses DefaultMaxMessageSize.
type Codec struct {
	// MaxSize is the largest encoded message accepted, in bytes.
	MaxSize int
}

func (c Codec) max() int {
	if c.MaxSize <= 0 {
		return DefaultMaxMessageSize
	}
	return c.MaxSize
}

// EncodedSize returns the number of bytes Append will add for m.
func EncodedSize(m *Message) int {
	n := 1 + routeSize(m.Onward) + routeSize(m.Return)
	return n + uvarintLen(uint64(len(m.Payload))) + len(m.Payload)
}

func routeSize(r Route) int {
	n := uvarintLen(uint64(len(r)))
	for _, a := range r {
		t := normType(a.Type)
		n += uvarintLen(uint64(len(t))) + len(t) + uvarintLen(uint64(len(a.Value))) + len(a.Value)
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// Append encodes m onto dst. It refuses messages larger than the maximum and
// routes longer than MaxHops.
func (c Codec) Append(dst []byte, m *Message) ([]byte, error) {
	// Validate here so that everything Append produces, Decode accepts.
	if err := m.Onward.Validate(); err != nil {
		return dst, codecErr(ErrMalformed, "onward route: %v", err)
	}
	if err := m.Return.Validate(); err != nil {
		return dst, codecErr(ErrMalformed, "return route: %v", err)
	}
	size := EncodedSize(m)
	if size > c.max() {
		return dst, codecErr(ErrTooLarge, "encoded size %d bytes exceeds the limit of %d", size, c.max())
	}
	dst = append(dst, WireVersion)
	dst = appendRoute(dst, m.Onward)
	dst = appendRoute(dst, m.Return)
	dst = binary.AppendUvarint(dst, uint64(len(m.Payload)))
	return append(dst, m.Payload...), nil
}

// Encode returns m encoded in a new slice.
func (c Codec) Encode(m *Message) ([]byte, error) {
	return c.Append(make([]byte, 0, EncodedSize(m)), m)
}

func appendRoute(dst []byte, r Route) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(r)))
	for _, a := range r {
		t := normType(a.Type)
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
		dst = binary.AppendUvarint(dst, uint64(len(a.Value)))
		dst = append(dst, a.Value...)
	}
	return dst
}

// Decode decodes exactly one message from b. The payload is copied, so b may
// be reused once Decode returns. Every length is checked against what remains
// and against the limit before anything is allocated.
func (c Codec) Decode(b []byte) (Message, error) { return c.DecodeAlloc(b, nil) }

// DecodeAlloc is Decode with the payload copied into alloc(n), which must
// return a slice of length n (for example from a pool whose buffers the
// payload's final receiver recycles). A nil alloc allocates. alloc is called
// only for a message that decoded up to its payload, with n within the
// codec's limit.
func (c Codec) DecodeAlloc(b []byte, alloc func(n int) []byte) (Message, error) {
	var m Message
	if len(b) > c.max() {
		return m, codecErr(ErrTooLarge, "%d bytes exceeds the limit of %d", len(b), c.max())
	}
	if len(b) == 0 {
		return m, codecErr(ErrTruncated, "empty input")
	}
	if b[0] != WireVersion {
		return m, codecErr(ErrVersion, "version %d, this build speaks %d", b[0], WireVersion)
	}
	d := decoder{buf: b, off: 1, max: c.max()}
	var err error
	if m.Onward, err = d.route("onward route"); err != nil {
		return Message{}, err
	}
	if m.Return, err = d.route("return route"); err != nil {
		return Message{}, err
	}
	n, err := d.length("payload", "")
	if err != nil {
		return Message{}, err
	}
	if d.off+n != len(b) {
		return Message{}, codecErr(ErrMalformed, "%d trailing bytes after the payload", len(b)-d.off-n)
	}
	if alloc != nil {
		m.Payload = alloc(n)[:n]
	} else {
		m.Payload = make([]byte, n)
	}
	copy(m.Payload, d.buf[d.off:d.off+n])
	return m, nil
}

type decoder struct {
	buf []byte
	off int
	max int
}

// length reads a uvarint length and checks it against the limit and the
// remaining input. what (with part, if not empty, after a space) names the
// field in errors; it is joined only on the error path because decoding
// runs for every message on every hop.
func (d *decoder) length(what, part string) (int, error) {
	x, n := binary.Uvarint(d.buf[d.off:])
	if n == 0 {
		return 0, codecErr(ErrTruncated, "input ends inside the %s length at offset %d", field(what, part), d.off)
	}
	if n < 0 {
		return 0, codecErr(ErrMalformed, "%s length at offset %d overflows 64 bits", field(what, part), d.off)
	}
	d.off += n
	if x > uint64(d.max) {
		return 0, codecErr(ErrTooLarge, "%s declares %d bytes, the limit is %d", field(what, part), x, d.max)
	}
	if x > uint64(len(d.buf)-d.off) {
		return 0, codecErr(ErrTruncated, "%s declares %d bytes but only %d remain", field(what, part), x, len(d.buf)-d.off)
	}
	return int(x), nil
}

func field(what, part string) string {
	if part == "" {
		return what
	}
	return what + " " + part
}

func (d *decoder) str(what, part string, limit int) (string, error) {
	n, err := d.length(what, part)
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", codecErr(ErrMalformed, "%s is %d bytes, the limit is %d", field(what, part), n, limit)
	}
	s := string(d.buf[d.off : d.off+n])
	d.off += n
	return s, nil
}

func (d *decoder) route(what string) (Route, error) {
	x, n := binary.Uvarint(d.buf[d.off:])
	if n == 0 {
		return nil, codecErr(ErrTruncated, "input ends inside the %s hop count", what)
	}
	if n < 0 || x > MaxHops {
		return nil, codecErr(ErrMalformed, "%s has more than %d hops", what, MaxHops)
	}
	d.off += n
	if x == 0 {
		return nil, nil
	}
	r := make(Route, x)
	for i := range r {
		t, err := d.str(what, "type", MaxTypeLen)
		if err != nil {
			return nil, err
		}
		v, err := d.str(what, "value", MaxValueLen)
		if err != nil {
			return nil, err
		}
		a := Address{Type: normType(t), Value: v}
		if err := a.Validate(); err != nil {
			return nil, codecErr(ErrMalformed, "%s hop %d: %v", what, i+1, err)
		}
		r[i] = a
	}
	return r, nil
}
