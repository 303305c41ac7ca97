package routing

import (
	"bytes"
	"errors"
	"testing"
)

var routeSeeds = []string{
	"/", "", "/service/echo", "/worker/7f3a0c1d2e3f40516273849a5b6c7d8e",
	"/node/n1/service/uppercase", "/tcp/127.0.0.1:4000/service/echo",
	"/udp/[::1]:9/service/echo", "/quic/h:443/service/x", "/serial/%2Fdev%2FttyUSB0",
	"/kafka/topic.in/service/echo", "/service/a%20b", "/service/%41", "/service/a%2",
	"//", "/service", "/TCP/x", "/local/x", "/service/\xff",
}

// FuzzParseRoute: parsing never panics; whatever parses prints back exactly
// as the input, and the printed form parses to an equal route.
func FuzzParseRoute(f *testing.F) {
	for _, s := range routeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoute(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error is %T, want *ParseError", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("ParseRoute(%q) returned an invalid route: %v", s, err)
		}
		out := r.String()
		if out != s {
			t.Fatalf("ParseRoute(%q).String() = %q", s, out)
		}
		r2, err := ParseRoute(out)
		if err != nil || !r2.Equal(r) {
			t.Fatalf("re-parse of %q = %v, %v", out, r2, err)
		}
	})
}

// FuzzCodec: decoding arbitrary bytes never panics and, when it succeeds,
// re-encoding gives bytes that decode to an equal message; and for messages
// built from fuzzed parts, decode(encode(m)) equals m whenever encode
// accepts m.
func FuzzCodec(f *testing.F) {
	var c Codec
	good, _ := c.Encode(sampleMessage())
	f.Add(good, "tcp", "127.0.0.1:4000", []byte("Hello Ferry!"))
	f.Add([]byte{}, "", "echo", []byte{})
	f.Add([]byte{1, 0, 0, 0}, "local", "app", []byte(nil))
	f.Add([]byte{1, 1, 0, 1, 'x', 0, 0}, "serial", "/dev/tty0", []byte{0, 1, 2})
	f.Add([]byte{1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10}, "BAD", "", []byte("x"))
	f.Add([]byte{2, 0, 0, 0}, "kafka", "t", bytes.Repeat([]byte("p"), 300))
	codec := Codec{MaxSize: 1 << 16}
	f.Fuzz(func(t *testing.T, data []byte, typ, value string, payload []byte) {
		m, err := codec.Decode(data)
		// DecodeAlloc decodes the same, the payload into what alloc gives.
		ma, erra := codec.DecodeAlloc(data, func(n int) []byte { return make([]byte, n, n+7) })
		if (err == nil) != (erra == nil) || err == nil && (!equalMessages(&m, &ma) || cap(ma.Payload) != len(ma.Payload)+7) {
			t.Fatalf("DecodeAlloc = %#v, %v; Decode = %#v, %v", ma, erra, m, err)
		}
		if err == nil {
			b, err := codec.Encode(&m)
			if err != nil {
				t.Fatalf("re-encode of a decoded message: %v", err)
			}
			m2, err := codec.Decode(b)
			if err != nil || !equalMessages(&m, &m2) {
				t.Fatalf("decode(encode(decode(b))) = %#v, %v; want %#v", m2, err, m)
			}
		} else {
			var ce *CodecError
			if !errors.As(err, &ce) {
				t.Fatalf("decode error is %T, want *CodecError", err)
			}
		}

		in := &Message{
			Onward:  Route{{Type: typ, Value: value}, Local("echo")},
			Return:  Route{Local(value)},
			Payload: payload,
		}
		b, err := codec.Encode(in)
		if err != nil {
			return
		}
		out, err := codec.Decode(b)
		if err != nil {
			t.Fatalf("decode of an encoded message: %v", err)
		}
		if !equalMessages(in, &out) {
			t.Fatalf("decode(encode(m)) = %#v, want %#v", out, in)
		}
		b2, _ := codec.Encode(&out)
		if !bytes.Equal(b, b2) {
			t.Fatal("encoding is not canonical for an encoder-produced message")
		}
	})
}
