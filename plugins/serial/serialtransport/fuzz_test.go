package serialtransport

import (
	"bytes"
	"testing"
)

// FuzzCOBS: decoding never panics and never yields more than its input;
// whatever decodes re-encodes to the same bytes; and every input round-trips.
func FuzzCOBS(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 1})
	f.Add([]byte{0xff, 1, 2})
	f.Add(bytes.Repeat([]byte{7}, 600))
	f.Fuzz(func(t *testing.T, b []byte) {
		enc := cobsEncode(nil, b)
		if bytes.IndexByte(enc, 0) >= 0 {
			t.Fatal("encoding contains a zero")
		}
		if len(enc) > cobsMaxEncoded(len(b)) {
			t.Fatalf("encoding of %d bytes is %d", len(b), len(enc))
		}
		dec, err := cobsDecode(nil, enc)
		if err != nil || !bytes.Equal(dec, b) {
			t.Fatalf("round trip: %v", err)
		}
		if bytes.IndexByte(b, 0) < 0 {
			out, err := cobsDecode(nil, b)
			if err == nil && len(out) >= len(b) && len(b) > 0 {
				t.Fatalf("decoded %d bytes from %d", len(out), len(b))
			}
		}
	})
}

// FuzzDecoder feeds arbitrary line bytes, in arbitrary pieces, through the
// stream decoder and the frame parser: no panic, bounded memory, and every
// frame the parser accepts has a correct checksum and length.
func FuzzDecoder(f *testing.F) {
	good, _ := appendFrame(nil, nil, header{typ: frameData, src: 1, dst: 2, msgID: 3, fragCount: 1}, []byte("hello"))
	hello, _ := appendFrame(nil, nil, header{typ: frameHello, src: 9, fragCount: 1}, nil)
	f.Add(good, uint8(3))
	f.Add(append(append([]byte{}, hello...), good...), uint8(7))
	f.Add(append(bytes.Repeat([]byte{0x55}, 300), good...), uint8(1))
	f.Add([]byte{0, 0, 0, 2, 1, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, split uint8) {
		const maxFrame = 96
		d := newDecoder(maxFrame)
		step := int(split)%17 + 1
		for len(b) > 0 {
			n := min(step, len(b))
			d.feed(b[:n], func(r decodeResult, frame []byte) {
				if r != decodedFrame {
					if frame != nil {
						t.Fatal("a dropped chunk came with bytes")
					}
					return
				}
				if len(frame) > maxFrame {
					t.Fatalf("frame of %d bytes above the maximum %d", len(frame), maxFrame)
				}
				h, p, err := parseFrame(frame)
				if err != nil {
					return
				}
				if len(p) != len(frame)-frameOverhead || h.fragIndex >= h.fragCount {
					t.Fatalf("accepted an inconsistent frame %+v", h)
				}
				re, _ := appendFrame(nil, nil, h, p)
				if raw, _ := cobsDecode(nil, re[:len(re)-1]); !bytes.Equal(raw, frame) {
					t.Fatal("an accepted frame does not re-encode to itself")
				}
			})
			if d.pending() > cobsMaxEncoded(maxFrame) {
				t.Fatalf("decoder holds %d bytes", d.pending())
			}
			b = b[n:]
		}
	})
}

// FuzzParseFrame: the frame parser on arbitrary decoded bytes.
func FuzzParseFrame(f *testing.F) {
	raw, _ := cobsDecode(nil, func() []byte {
		b, _ := appendFrame(nil, nil, header{typ: frameClose, fragCount: 1}, []byte{1, 2, 3})
		return b[:len(b)-1]
	}())
	f.Add(raw)
	f.Add([]byte{1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := parseFrame(b)
		if err != nil {
			return
		}
		if h.typ < frameData || h.typ > frameClose || len(p)+frameOverhead != len(b) {
			t.Fatalf("accepted %+v with %d payload bytes from %d", h, len(p), len(b))
		}
	})
}
