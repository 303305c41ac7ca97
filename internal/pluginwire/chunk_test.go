package pluginwire

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/ferryhq/ferry/internal/pluginpb/portalv1"
)

// The hand-written codec must agree with generated protobuf code both ways,
// so plugins written with generated code interoperate.
func TestChunkCodecMatchesProtobuf(t *testing.T) {
	for _, tc := range []struct {
		data []byte
		fin  bool
	}{{[]byte("hello"), false}, {nil, true}, {bytes.Repeat([]byte{7}, 300_000), false}, {[]byte("x"), true}} {
		var c ChunkCodec
		buf := ChunkPool.Get(len(tc.data))
		copy(*buf, tc.data)
		var out *OutChunk
		if len(tc.data) > 0 {
			out = &OutChunk{Buf: buf, Fin: tc.fin}
		} else {
			out = &OutChunk{Fin: tc.fin}
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
		var in InChunk
		if err := ParseChunk(wire, &in); err != nil || !bytes.Equal(in.Data, tc.data) || in.Fin != tc.fin {
			t.Fatalf("parse of generated wire: %d bytes fin=%v err=%v", len(in.Data), in.Fin, err)
		}
	}
}

func TestParseChunkSkipsUnknownAndRejectsGarbage(t *testing.T) {
	// field 3 (varint 5), then data "ab"
	var in InChunk
	if err := ParseChunk([]byte{0x18, 5, 0x0a, 2, 'a', 'b'}, &in); err != nil || string(in.Data) != "ab" {
		t.Fatalf("%q %v", in.Data, err)
	}
	for _, b := range [][]byte{{0x0a, 5, 'a'}, {0x0a}, {0x10}, {0xff}} {
		if err := ParseChunk(b, &InChunk{}); !errors.Is(err, ErrChunk) {
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
		var in InChunk
		if err := ParseChunk(b, &in); err != nil {
			return
		}
		// Whatever we accept, generated code reads the same way.
		var ref pb.Chunk
		if err := proto.Unmarshal(b, &ref); err != nil {
			return // we are more lenient only about things protobuf rejects late (e.g. wire groups)
		}
		if !bytes.Equal(ref.Data, in.Data) || ref.Fin != in.Fin {
			t.Fatalf("ParseChunk %q fin=%v, protobuf %q fin=%v", in.Data, in.Fin, ref.Data, ref.Fin)
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
