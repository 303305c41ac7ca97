package portal

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferryhq/ferry/sdk/portal/internal/pb"
)

// The hand-written codec must agree with generated protobuf code both ways,
// so plugins written with generated code interoperate.
func TestChunkCodecMatchesProtobuf(t *testing.T) {
	for _, tc := range []struct {
		data []byte
		fin  bool
	}{{[]byte("hello"), false}, {nil, true}, {bytes.Repeat([]byte{7}, 300_000), false}, {[]byte("x"), true}} {
		var c chunkCodec
		buf := bufPool.Get(len(tc.data))
		copy(*buf, tc.data)
		var out *outChunk
		if len(tc.data) > 0 {
			out = &outChunk{buf: buf, fin: tc.fin}
		} else {
			out = &outChunk{fin: tc.fin}
		}
		bs, err := c.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.Chunk
		if err := proto.Unmarshal(bs.Materialize(), &got); err != nil {
			t.Fatal(err)
		}
		bs.Free()
		if !bytes.Equal(got.Data, tc.data) || got.Fin != tc.fin {
			t.Fatalf("generated code decoded %d bytes fin=%v, want %d fin=%v", len(got.Data), got.Fin, len(tc.data), tc.fin)
		}
		wire, err := proto.Marshal(&pb.Chunk{Data: tc.data, Fin: tc.fin})
		if err != nil {
			t.Fatal(err)
		}
		var in inChunk
		if err := parseChunk(wire, &in); err != nil || !bytes.Equal(in.data, tc.data) || in.fin != tc.fin {
			t.Fatalf("parse of generated wire: %d bytes fin=%v err=%v", len(in.data), in.fin, err)
		}
	}
}

func TestParseChunkSkipsUnknownAndRejectsGarbage(t *testing.T) {
	// field 3 (varint 5), then data "ab"
	var in inChunk
	if err := parseChunk([]byte{0x18, 5, 0x0a, 2, 'a', 'b'}, &in); err != nil || string(in.data) != "ab" {
		t.Fatalf("%q %v", in.data, err)
	}
	for _, b := range [][]byte{{0x0a, 5, 'a'}, {0x0a}, {0x10}, {0xff}} {
		if err := parseChunk(b, &inChunk{}); !errors.Is(err, errChunk) {
			t.Errorf("%x: got %v", b, err)
		}
	}
}

func FuzzParseChunk(f *testing.F) {
	for _, c := range []*pb.Chunk{{Data: []byte("abc")}, {Fin: true}, {Data: []byte{0}, Fin: true}} {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Add([]byte{0x18, 5, 0x0a, 2, 'a', 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var in inChunk
		if err := parseChunk(b, &in); err != nil {
			return
		}
		// Whatever we accept, generated code reads the same way.
		var ref pb.Chunk
		if err := proto.Unmarshal(b, &ref); err != nil {
			return // we are more lenient only about things protobuf rejects late (e.g. wire groups)
		}
		if !bytes.Equal(ref.Data, in.data) || ref.Fin != in.fin {
			t.Fatalf("parseChunk %q fin=%v, protobuf %q fin=%v", in.data, in.fin, ref.Data, ref.Fin)
		}
	})
}

func TestDirtyPoolTiers(t *testing.T) {
	p := &dirtyPool{}
	for _, size := range []int{0, 1, 4096, 4097, 65536, 262144, 262145, 2 << 20, 3 << 20} {
		b := p.Get(size)
		if len(*b) != size {
			t.Fatalf("Get(%d) has length %d", size, len(*b))
		}
		if size <= 2<<20 && cap(*b)&(cap(*b)-1) != 0 {
			t.Fatalf("Get(%d) has capacity %d, not a tier", size, cap(*b))
		}
		p.Put(b)
		again := p.Get(size)
		if len(*again) != size {
			t.Fatalf("reused Get(%d) has length %d", size, len(*again))
		}
	}
	p.Put(&[]byte{1, 2, 3}) // foreign buffers are dropped
}
