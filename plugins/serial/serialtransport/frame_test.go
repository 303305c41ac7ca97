package serialtransport

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// The standard CRC-32C check value (RFC 3720 B.4, and every CRC catalogue):
// a home-made table or reflected/unreflected mix-up fails here.
func TestChecksumCheckValue(t *testing.T) {
	if got := checksum([]byte("123456789")); got != 0xE3069283 {
		t.Fatalf("CRC-32C(\"123456789\") = %#08x, want 0xE3069283", got)
	}
	// RFC 3720 B.4 vectors: 32 bytes of zeros and 32 of 0xFF.
	if got := checksum(make([]byte, 32)); got != 0x8A9136AA {
		t.Fatalf("CRC-32C(32 zero bytes) = %#08x, want 0x8A9136AA", got)
	}
	if got := checksum(bytes.Repeat([]byte{0xff}, 32)); got != 0x62A8AB43 {
		t.Fatalf("CRC-32C(32 0xFF bytes) = %#08x, want 0x62A8AB43", got)
	}
	if crc32.Checksum([]byte("123456789"), crc32.MakeTable(crc32.IEEE)) == checksum([]byte("123456789")) {
		t.Fatal("checksum is CRC-32/IEEE, not CRC-32C")
	}
}

func TestCOBSVectors(t *testing.T) {
	seq := func(from, to int) []byte {
		var b []byte
		for i := from; i <= to; i++ {
			b = append(b, byte(i))
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// The examples of the COBS paper / Wikipedia.
	cases := []struct{ in, out []byte }{
		{[]byte{}, []byte{1}},
		{[]byte{0}, []byte{1, 1}},
		{[]byte{0, 0}, []byte{1, 1, 1}},
		{[]byte{0, 0x11, 0}, []byte{1, 2, 0x11, 1}},
		{[]byte{0x11, 0x22, 0, 0x33}, []byte{3, 0x11, 0x22, 2, 0x33}},
		{[]byte{0x11, 0x22, 0x33, 0x44}, []byte{5, 0x11, 0x22, 0x33, 0x44}},
		{[]byte{0x11, 0, 0, 0}, []byte{2, 0x11, 1, 1, 1}},
		{seq(1, 254), cat([]byte{0xff}, seq(1, 254))},
		{seq(0, 254), cat([]byte{1, 0xff}, seq(1, 254))},
		{seq(1, 255), cat([]byte{0xff}, seq(1, 254), []byte{2, 0xff})},
		{cat(seq(2, 255), []byte{0}), cat([]byte{0xff}, seq(2, 255), []byte{1, 1})},
		{cat(seq(3, 255), []byte{0, 1}), cat([]byte{0xfe}, seq(3, 255), []byte{2, 1})},
	}
	for _, c := range cases {
		got := cobsEncode(nil, c.in)
		if !bytes.Equal(got, c.out) {
			t.Errorf("encode(% x) = % x, want % x", c.in, got, c.out)
		}
		dec, err := cobsDecode(nil, c.out)
		if err != nil || !bytes.Equal(dec, c.in) {
			t.Errorf("decode(% x) = % x, %v; want % x", c.out, dec, err, c.in)
		}
		if len(got) > cobsMaxEncoded(len(c.in)) {
			t.Errorf("encoding of %d bytes is %d, above the bound %d", len(c.in), len(got), cobsMaxEncoded(len(c.in)))
		}
	}
}

func TestFrameRoundTripAndBigEndian(t *testing.T) {
	h := header{typ: frameData, src: 0x01020304, dst: 0x0a0b0c0d, msgID: 0x11223344, fragIndex: 2, fragCount: 3}
	payload := []byte("payload\x00with zero")
	enc, _ := appendFrame(nil, nil, h, payload)
	if enc[len(enc)-1] != 0 || bytes.IndexByte(enc[:len(enc)-1], 0) >= 0 {
		t.Fatalf("encoded frame must hold exactly one zero, at the end: % x", enc)
	}
	raw, err := cobsDecode(nil, enc[:len(enc)-1])
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{FrameVersion, frameData, 1, 2, 3, 4, 0xa, 0xb, 0xc, 0xd, 0x11, 0x22, 0x33, 0x44, 0, 2, 0, 3, 0, byte(len(payload))}
	if !bytes.Equal(raw[:headerSize], want) {
		t.Fatalf("header bytes % x, want % x (big-endian fields)", raw[:headerSize], want)
	}
	if crc := binary.BigEndian.Uint32(raw[len(raw)-4:]); crc != checksum(raw[:len(raw)-4]) {
		t.Fatal("trailing CRC is not the big-endian CRC-32C of header and payload")
	}
	gh, gp, err := parseFrame(raw)
	if err != nil || gh != h || !bytes.Equal(gp, payload) {
		t.Fatalf("parse: %+v %q %v", gh, gp, err)
	}
}

func TestParseFrameRejects(t *testing.T) {
	good, _ := appendFrame(nil, nil, header{typ: frameData, src: 1, dst: 2, msgID: 3, fragCount: 1}, []byte("hi"))
	raw, _ := cobsDecode(nil, good[:len(good)-1])
	reseal := func(b []byte) []byte {
		b = append([]byte(nil), b...)
		binary.BigEndian.PutUint32(b[len(b)-4:], checksum(b[:len(b)-4]))
		return b
	}
	mut := func(f func(b []byte)) []byte {
		b := append([]byte(nil), raw...)
		f(b)
		return reseal(b)
	}
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"short":      {raw[:10], errShortFrame},
		"bit flip":   {func() []byte { b := append([]byte(nil), raw...); b[21] ^= 4; return b }(), errBadCRC},
		"truncated":  {raw[:len(raw)-1], errBadCRC},
		"version":    {mut(func(b []byte) { b[0] = 9 }), errBadVersion},
		"type":       {mut(func(b []byte) { b[1] = 0 }), errBadType},
		"length":     {mut(func(b []byte) { b[19] = 200 }), errBadLength},
		"frag count": {mut(func(b []byte) { b[17] = 0 }), errBadFragment},
		"frag index": {mut(func(b []byte) { b[15] = 1 }), errBadFragment},
	}
	for name, c := range cases {
		if _, _, err := parseFrame(c.b); err != c.want {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

// The decoder finds every good frame in a stream of garbage, oversized runs
// and cut frames, and never holds more than one encoded maximum frame.
func TestDecoderResync(t *testing.T) {
	const maxFrame = 128
	d := newDecoder(maxFrame)
	var stream []byte
	var want [][]byte
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 200; i++ {
		p := make([]byte, rng.IntN(maxFrame-frameOverhead+1))
		for j := range p {
			p[j] = byte(rng.IntN(3)) // plenty of zeros
		}
		f, _ := appendFrame(nil, nil, header{typ: frameData, msgID: uint32(i), fragCount: 1}, p)
		switch rng.IntN(4) {
		case 0: // garbage before the frame, then a delimiter
			g := make([]byte, rng.IntN(600))
			for j := range g {
				g[j] = byte(1 + rng.IntN(255))
			}
			stream = append(stream, g...)
			stream = append(stream, 0)
		case 1: // a cut frame: the rest of it never comes
			stream = append(stream, f[:rng.IntN(len(f)-1)]...)
			stream = append(stream, 0)
		}
		stream = append(stream, f...)
		want = append(want, p)
	}
	var got [][]byte
	for len(stream) > 0 {
		n := min(len(stream), 1+rng.IntN(100))
		d.feed(stream[:n], func(r decodeResult, frame []byte) {
			if r != decodedFrame {
				return
			}
			if _, p, err := parseFrame(frame); err == nil {
				got = append(got, append([]byte(nil), p...))
			}
		})
		if d.pending() > cobsMaxEncoded(maxFrame) {
			t.Fatalf("decoder holds %d bytes, above one encoded maximum frame", d.pending())
		}
		stream = stream[n:]
	}
	if len(got) != len(want) {
		t.Fatalf("decoded %d good frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
}
