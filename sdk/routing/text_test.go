package routing

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoutePrintRoundTrip(t *testing.T) {
	id := strings.Repeat("7f3a", 8)
	cases := []struct {
		text string
		want Route
	}{
		{"/", Route{}},
		{"/service/echo", Route{Local("echo")}},
		{"/worker/" + id, Route{Local(id)}},
		{"/node/n1/service/uppercase", Route{{Type: "node", Value: "n1"}, Local("uppercase")}},
		{"/tcp/127.0.0.1:4000/service/echo", Route{{Type: "tcp", Value: "127.0.0.1:4000"}, Local("echo")}},
		{"/udp/[::1]:9000/service/echo", Route{{Type: "udp", Value: "[::1]:9000"}, Local("echo")}},
		{"/quic/example.com:443/service/echo", Route{{Type: "quic", Value: "example.com:443"}, Local("echo")}},
		{"/serial/%2Fdev%2FttyUSB0/service/echo", Route{{Type: "serial", Value: "/dev/ttyUSB0"}, Local("echo")}},
		{"/kafka/ferry.n2.in/service/echo", Route{{Type: "kafka", Value: "ferry.n2.in"}, Local("echo")}},
		{"/worker/" + id + "/service/forward_to_n3/service/outlet", Route{Local(id), Local("forward_to_n3"), Local("outlet")}},
		{"/service/a%20b%25c", Route{Local("a b%c")}},
		{"/service/%C3%A9t%C3%A9", Route{Local("été")}},
		{"/my-transport_2/x", Route{{Type: "my-transport_2", Value: "x"}}},
	}
	for _, c := range cases {
		r, err := ParseRoute(c.text)
		if err != nil {
			t.Errorf("ParseRoute(%q): %v", c.text, err)
			continue
		}
		if !r.Equal(c.want) {
			t.Errorf("ParseRoute(%q) = %#v, want %#v", c.text, r, c.want)
		}
		if got := r.String(); got != c.text {
			t.Errorf("ParseRoute(%q).String() = %q", c.text, got)
		}
		if got := c.want.String(); got != c.text {
			t.Errorf("%#v.String() = %q, want %q", c.want, got, c.text)
		}
	}
}

func TestParseRouteErrors(t *testing.T) {
	id := strings.Repeat("ab", 16)
	cases := []struct {
		text    string
		segment int
		reason  string // substring of the message
	}{
		{"", 0, "empty"},
		{"service/echo", 0, "must start with '/'"},
		{"/service", 1, "has no value"},
		{"/service/echo/tcp", 2, "\"tcp\" has no value"},
		{"/service/", 1, "empty value"},
		{"//echo", 1, "empty kind"},
		{"/service/echo//x", 2, "empty kind"},
		{"/service//outlet", 1, "/service has an empty value"},
		{"/service/echo/", 2, "trailing '/'"},
		{"/service/" + id, 1, "is a worker id"},
		{"/worker/echo", 1, "worker id \"echo\" must be 32 lower-case hex digits"},
		{"/worker/" + strings.ToUpper(id), 1, "lower-case hex"},
		{"/local/echo", 1, "/service/NAME"},
		{"/TCP/1.2.3.4:5", 1, "must start with a-z"},
		{"/tcp/1.2.3.4:5/9p/x", 2, "must start with a-z"},
		{"/" + strings.Repeat("t", 33) + "/x", 1, "longer than 32"},
		{"/service/a b", 1, "must be written as %20"},
		{"/service/a%2", 1, "incomplete escape"},
		{"/service/a%2f", 1, "bad escape"},
		{"/service/a%zz", 1, "bad escape"},
		{"/service/%41", 1, "must be written plainly"},
		{"/service/\x00", 1, "must be written as %00"},
		{"/service/" + strings.Repeat("x", MaxValueLen+1), 1, "limit is 1024"},
		{"/service/" + strings.Repeat("%25", MaxValueLen+1), 1, "limit is 1024"},
		{strings.Repeat("/service/x", MaxHops+1), 0, "65 hops, the limit is 64"},
		{strings.Repeat("/", MaxRouteTextLen+1), 0, "the limit is"},
	}
	for _, c := range cases {
		_, err := ParseRoute(c.text)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("ParseRoute(%.40q): err = %v, want *ParseError", c.text, err)
			continue
		}
		if pe.Segment != c.segment {
			t.Errorf("ParseRoute(%.40q): segment %d, want %d (%v)", c.text, pe.Segment, c.segment, err)
		}
		if !strings.Contains(err.Error(), c.reason) {
			t.Errorf("ParseRoute(%.40q): error %q does not mention %q", c.text, err, c.reason)
		}
		if c.segment > 0 && !strings.Contains(err.Error(), "segment ") {
			t.Errorf("ParseRoute(%.40q): error %q does not name the segment", c.text, err)
		}
		if len(err.Error()) > 400 {
			t.Errorf("ParseRoute(%.40q): error message is %d bytes long", c.text, len(err.Error()))
		}
	}
}

func TestParseRouteMaxHopsAccepted(t *testing.T) {
	s := strings.Repeat("/service/x", MaxHops)
	r, err := ParseRoute(s)
	if err != nil || len(r) != MaxHops {
		t.Fatalf("ParseRoute(64 hops) = %d hops, %v", len(r), err)
	}
}

func TestParseAddress(t *testing.T) {
	a, err := ParseAddress("/tcp/127.0.0.1:4000")
	if err != nil || a != (Address{Type: "tcp", Value: "127.0.0.1:4000"}) {
		t.Fatalf("ParseAddress = %#v, %v", a, err)
	}
	for _, s := range []string{"/", "/service/a/service/b", "nope"} {
		if _, err := ParseAddress(s); err == nil {
			t.Errorf("ParseAddress(%q) succeeded", s)
		}
	}
}

func TestMustParseRoutePanicsOnBadConstant(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("MustParseRoute did not panic on a malformed constant")
		}
	}()
	MustParseRoute("/service")
}

func TestAddressStringEscapes(t *testing.T) {
	for _, c := range []struct {
		a    Address
		want string
	}{
		{Local("echo"), "/service/echo"},
		{Address{Type: "local", Value: "echo"}, "/service/echo"},
		{Address{Type: "serial", Value: "/dev/tty 0%"}, "/serial/%2Fdev%2Ftty%200%25"},
		{Address{Type: "x", Value: "\x7f\xff"}, "/x/%7F%FF"},
	} {
		if got := c.a.String(); got != c.want {
			t.Errorf("%#v.String() = %q, want %q", c.a, got, c.want)
		}
		r, err := ParseRoute(c.want)
		if err != nil || len(r) != 1 || !r.Equal(Route{c.a}) {
			t.Errorf("ParseRoute(%q) = %#v, %v; want %#v", c.want, r, err, c.a)
		}
	}
}

func TestIsWorkerID(t *testing.T) {
	if !IsWorkerID(strings.Repeat("0123456789abcdef", 2)) {
		t.Error("valid id rejected")
	}
	for _, s := range []string{"", "abc", strings.Repeat("g", 32), strings.Repeat("A", 32), strings.Repeat("a", 33)} {
		if IsWorkerID(s) {
			t.Errorf("IsWorkerID(%q) = true", s)
		}
	}
}
