package routing

import (
	"fmt"
	"strings"
)

// Route text syntax
//
// A route is written as a sequence of "/KIND/VALUE" pairs:
//
//	/service/echo                      a local service (a worker with a chosen name)
//	/worker/7f3a0c...                  a local worker with a generated id (32 lower-case hex digits)
//	/node/n1/service/uppercase         "the node n1", resolved by the ferry command
//	/tcp/127.0.0.1:4000/service/echo   a transport address followed by a worker over there
//	/serial/%2Fdev%2FttyUSB0           a value containing '/' is percent-escaped
//
// KIND is "service" or "worker" for local addresses, otherwise the transport
// type. In values, '/', '%', spaces and bytes outside printable ASCII are
// written as %XX with upper-case hex digits; nothing else may be escaped. The
// text form is therefore canonical: Parse(s).String() == s for every s that
// Parse accepts, and Parse(r.String()) equals r for every valid route r.

// WorkerIDLen is the length of generated worker ids in hex digits.
const WorkerIDLen = 32

// IsWorkerID reports whether s has the shape of a generated worker id.
func IsWorkerID(s string) bool {
	if len(s) != WorkerIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// MaxRouteTextLen bounds the input Parse accepts.
const MaxRouteTextLen = MaxHops * (MaxTypeLen + 3*MaxValueLen + 2)

// ParseError says which segment of a route text is wrong.
type ParseError struct {
	Text    string // the whole input, possibly shortened
	Segment int    // 1-based index of the "/KIND/VALUE" pair, 0 for the whole text
	Reason  string
}

func (e *ParseError) Error() string {
	text := e.Text
	if len(text) > 80 {
		text = text[:77] + "..."
	}
	if e.Segment == 0 {
		return fmt.Sprintf("route %q: %s", text, e.Reason)
	}
	return fmt.Sprintf("route %q, segment %d: %s", text, e.Segment, e.Reason)
}

// ParseRoute parses the route text form. "/" is the empty route.
func ParseRoute(s string) (Route, error) {
	fail := func(seg int, format string, args ...any) (Route, error) {
		return nil, &ParseError{Text: s, Segment: seg, Reason: fmt.Sprintf(format, args...)}
	}
	if len(s) > MaxRouteTextLen {
		return fail(0, "text is %d bytes, the limit is %d", len(s), MaxRouteTextLen)
	}
	if s == "" {
		return fail(0, "empty; write at least one /KIND/VALUE pair such as /service/echo")
	}
	if s[0] != '/' {
		return fail(0, "must start with '/', as in /service/echo")
	}
	if s == "/" {
		return Route{}, nil
	}
	parts := strings.Split(s[1:], "/")
	for i, p := range parts {
		if p == "" {
			// Report a doubled or trailing '/' where it is, not as a
			// shifted KIND/VALUE pairing further on.
			switch {
			case i%2 == 1:
				return fail(i/2+1, "/%s has an empty value (a doubled '/'?); write /%s/VALUE", parts[i-1], parts[i-1])
			case i == len(parts)-1:
				return fail(i/2+1, "trailing '/'; remove it")
			default:
				return fail(i/2+1, "empty kind (a doubled '/'?); write /KIND/VALUE")
			}
		}
	}
	if len(parts)%2 != 0 {
		return fail(len(parts)/2+1, "%q has no value; write /%s/VALUE", parts[len(parts)-1], parts[len(parts)-1])
	}
	n := len(parts) / 2
	if n > MaxHops {
		return fail(0, "route has %d hops, the limit is %d", n, MaxHops)
	}
	r := make(Route, 0, n)
	for i := 0; i < n; i++ {
		seg := i + 1
		kind, raw := parts[2*i], parts[2*i+1]
		if kind == "" {
			return fail(seg, "empty kind (a doubled '/'?); write /KIND/VALUE")
		}
		if raw == "" {
			return fail(seg, "/%s has an empty value", kind)
		}
		value, err := unescape(raw)
		if err != nil {
			return fail(seg, "value %q: %v", raw, err)
		}
		var a Address
		switch kind {
		case "service":
			if IsWorkerID(value) {
				return fail(seg, "%q is a worker id; write /worker/%s", value, value)
			}
			a = Local(value)
		case "worker":
			if !IsWorkerID(value) {
				return fail(seg, "worker id %q must be %d lower-case hex digits; use /service/NAME for named workers", value, WorkerIDLen)
			}
			a = Local(value)
		case "local":
			return fail(seg, "write local addresses as /service/NAME or /worker/ID")
		default:
			if err := validType(kind); err != nil {
				return fail(seg, "%v", err)
			}
			a = Address{Type: kind, Value: value}
		}
		if len(a.Value) > MaxValueLen {
			return fail(seg, "value is %d bytes, the limit is %d", len(a.Value), MaxValueLen)
		}
		r = append(r, a)
	}
	return r, nil
}

// MustParseRoute is ParseRoute for constant routes in programs and tests; it
// panics on a malformed constant, which is a programming error.
func MustParseRoute(s string) Route {
	r, err := ParseRoute(s)
	if err != nil {
		panic(err)
	}
	return r
}

// ParseAddress parses a single "/KIND/VALUE" pair.
func ParseAddress(s string) (Address, error) {
	r, err := ParseRoute(s)
	if err != nil {
		return Address{}, err
	}
	if len(r) != 1 {
		return Address{}, &ParseError{Text: s, Reason: fmt.Sprintf("want one address, found %d", len(r))}
	}
	return r[0], nil
}

func (a Address) appendText(b *strings.Builder) {
	b.WriteByte('/')
	switch {
	case a.IsLocal() && IsWorkerID(a.Value):
		b.WriteString("worker")
	case a.IsLocal():
		b.WriteString("service")
	default:
		b.WriteString(a.Type)
	}
	b.WriteByte('/')
	escape(b, a.Value)
}

const upperhex = "0123456789ABCDEF"

func mustEscape(c byte) bool {
	return c <= ' ' || c >= 0x7f || c == '/' || c == '%'
}

func escape(b *strings.Builder, v string) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(upperhex[c>>4])
			b.WriteByte(upperhex[c&15])
			continue
		}
		b.WriteByte(c)
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		for i := 0; i < len(s); i++ {
			if mustEscape(s[i]) {
				return "", fmt.Errorf("byte %q at offset %d must be written as %%%02X", s[i], i, s[i])
			}
		}
		return s, nil
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if mustEscape(c) {
				return "", fmt.Errorf("byte %q at offset %d must be written as %%%02X", c, i, c)
			}
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("incomplete escape at offset %d; write %%XX with two upper-case hex digits", i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad escape %q at offset %d; write %%XX with two upper-case hex digits", s[i:i+3], i)
		}
		d := hi<<4 | lo
		if !mustEscape(d) {
			return "", fmt.Errorf("%q at offset %d escapes %q, which must be written plainly", s[i:i+3], i, d)
		}
		out = append(out, d)
		i += 2
	}
	return string(out), nil
}
