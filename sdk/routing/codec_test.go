package routing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func sampleMessage() *Message {
	return &Message{
		Onward:  MustParseRoute("/tcp/127.0.0.1:4000/service/echo"),
		Return:  MustParseRoute("/worker/" + strings.Repeat("a1", 16) + "/service/app"),
		Payload: []byte("Hello Ferry!"),
		Local:   LocalInfo{Flow: "never-on-the-wire"},
	}
}

func equalMessages(a, b *Message) bool {
	return a.Onward.Equal(b.Onward) && a.Return.Equal(b.Return) && bytes.Equal(a.Payload, b.Payload)
}

func TestCodecRoundTrip(t *testing.T) {
	var c Codec
	msgs := []*Message{
		sampleMessage(),
		{},
		{Onward: Route{Local("x")}},
		{Return: Route{{Type: "local", Value: "x"}}, Payload: make([]byte, 100000)},
		{Onward: Route{{Type: "serial", Value: "/dev/tty\x00\xff"}}, Payload: []byte{0}},
	}
	for i, m := range msgs {
		b, err := c.Encode(m)
		if err != nil {
			t.Fatalf("message %d: encode: %v", i, err)
		}
		if len(b) != EncodedSize(m) {
			t.Errorf("message %d: EncodedSize %d, encoded %d bytes", i, EncodedSize(m), len(b))
		}
		if b[0] != WireVersion {
			t.Errorf("message %d: first byte %d, want the version %d", i, b[0], WireVersion)
		}
		got, err := c.Decode(b)
		if err != nil {
			t.Fatalf("message %d: decode: %v", i, err)
		}
		if !equalMessages(&got, m) {
			t.Errorf("message %d: round trip changed it: %#v -> %#v", i, m, got)
		}
		if got.Local != (LocalInfo{}) {
			t.Errorf("message %d: local metadata went over the wire: %#v", i, got.Local)
		}
		// The decoded payload must not alias the input buffer.
		if len(got.Payload) > 0 {
			b[len(b)-1] ^= 0xff
			if !bytes.Equal(got.Payload, m.Payload) {
				t.Errorf("message %d: decoded payload aliases the input", i)
			}
		}
	}
}

func TestCodecAppendKeepsPrefix(t *testing.T) {
	var c Codec
	b, err := c.Append([]byte("prefix"), sampleMessage())
	if err != nil || !bytes.HasPrefix(b, []byte("prefix")) {
		t.Fatalf("Append = %q, %v", b, err)
	}
	if _, err := c.Decode(b[len("prefix"):]); err != nil {
		t.Fatal(err)
	}
}

func TestCodecEncodeRejects(t *testing.T) {
	c := Codec{MaxSize: 100}
	big := &Message{Onward: Route{Local("x")}, Payload: make([]byte, 100)}
	if _, err := c.Encode(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized encode: %v", err)
	}
	long := make(Route, MaxHops+1)
	for i := range long {
		long[i] = Local("x")
	}
	for _, m := range []*Message{
		{Onward: long},
		{Return: long},
		{Onward: Route{{Type: "tcp"}}},
		{Onward: Route{{Type: "BAD", Value: "x"}}},
	} {
		if _, err := (Codec{}).Encode(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("Encode(%v): %v, want ErrMalformed", m.Onward, err)
		}
	}
}

func TestCodecTruncatedEveryPrefix(t *testing.T) {
	var c Codec
	b, err := c.Encode(sampleMessage())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i++ {
		_, err := c.Decode(b[:i])
		var ce *CodecError
		if !errors.Is(err, ErrTruncated) || !errors.As(err, &ce) {
			t.Errorf("Decode(first %d of %d bytes) = %v, want ErrTruncated", i, len(b), err)
		}
	}
}

func TestCodecRejectsBadInput(t *testing.T) {
	var c Codec
	good, _ := c.Encode(sampleMessage())
	hdr := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	uv := func(x uint64) []byte { return binary.AppendUvarint(nil, x) }
	cases := []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "empty input"},
		{"version 0", append([]byte{0}, good[1:]...), ErrVersion, "version 0"},
		{"version 2", append([]byte{2}, good[1:]...), ErrVersion, "this build speaks 1"},
		{"trailing bytes", append(append([]byte{}, good...), 'x'), ErrMalformed, "1 trailing bytes"},
		{"too many hops", hdr([]byte{1}, uv(MaxHops+1)), ErrMalformed, "more than 64 hops"},
		{"hop count overflows", hdr([]byte{1}, bytes.Repeat([]byte{0xff}, 11)), ErrMalformed, "more than 64 hops"},
		{"length overflows", hdr([]byte{1}, uv(0), uv(0), bytes.Repeat([]byte{0xff}, 10), []byte{1}), ErrMalformed, "overflows 64 bits"},
		{"type too long", hdr([]byte{1}, uv(1), uv(MaxTypeLen+1), bytes.Repeat([]byte{'a'}, MaxTypeLen+1)), ErrMalformed, "limit is 32"},
		{"bad type", hdr([]byte{1}, uv(1), uv(3), []byte("TCP"), uv(1), []byte("x"), uv(0), uv(0)), ErrMalformed, "onward route hop 1"},
		{"empty value", hdr([]byte{1}, uv(0), uv(1), uv(0), uv(0), uv(0)), ErrMalformed, "return route hop 1"},
		{"payload over limit", hdr([]byte{1}, uv(0), uv(0), uv(DefaultMaxMessageSize+1)), ErrTooLarge, "limit is"},
		{"payload 4 GiB", hdr([]byte{1}, uv(0), uv(0), uv(4<<30)), ErrTooLarge, "declares 4294967296 bytes"},
		{"payload beyond input", hdr([]byte{1}, uv(0), uv(0), uv(10), []byte("short")), ErrTruncated, "only 5 remain"},
	}
	for _, cs := range cases {
		_, err := c.Decode(cs.in)
		if !errors.Is(err, cs.want) {
			t.Errorf("%s: Decode = %v, want %v", cs.name, err, cs.want)
			continue
		}
		if !strings.Contains(err.Error(), cs.msg) {
			t.Errorf("%s: error %q does not mention %q", cs.name, err, cs.msg)
		}
	}
	small := Codec{MaxSize: 10}
	if _, err := small.Decode(good); !errors.Is(err, ErrTooLarge) {
		t.Errorf("input over the configured limit: %v", err)
	}
}

// TestCodecDeclaredLengthDoesNotAllocate checks that a header claiming a
// huge payload is refused before anything of that size is allocated, both
// when the limit refuses it and when the limit is raised but the input is
// short.
func TestCodecDeclaredLengthDoesNotAllocate(t *testing.T) {
	in := binary.AppendUvarint([]byte{WireVersion, 0, 0}, 4<<30)
	for _, c := range []Codec{{}, {MaxSize: 1 << 40}} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < 100; i++ {
			if _, err := c.Decode(in); err == nil {
				t.Fatal("decode of a 4 GiB declared payload succeeded")
			}
		}
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("MaxSize %d: decoding 100 bad headers allocated %d bytes", c.MaxSize, d)
		}
	}
}

func BenchmarkCodecEncode(b *testing.B) {
	m := sampleMessage()
	var c Codec
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = c.Append(buf[:0], m)
	}
}

func BenchmarkCodecDecode(b *testing.B) {
	var c Codec
	in, _ := c.Encode(sampleMessage())
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Decode(in)
	}
}
