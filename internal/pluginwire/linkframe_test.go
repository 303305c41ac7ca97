package pluginwire

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/ferryhq/ferry/internal/pluginpb/transportv1"
)

func encode(packets [][]byte) []byte {
	_, body := SplitBatch(packets)
	return AppendFrame(nil, packets, body)
}

func TestFrameRoundTrip(t *testing.T) {
	cases := [][][]byte{
		nil,
		{{}},
		{[]byte("a")},
		{[]byte("hello"), {}, bytes.Repeat([]byte{7}, 300)},
	}
	for _, ps := range cases {
		enc := encode(ps)
		got, err := ParseFrame(enc, nil, 1<<20)
		if err != nil {
			t.Fatalf("%q: %v", ps, err)
		}
		if len(got) != len(ps) {
			t.Fatalf("got %d packets, want %d", len(got), len(ps))
		}
		for i := range ps {
			if !bytes.Equal(got[i], ps[i]) {
				t.Fatalf("packet %d: got %q want %q", i, got[i], ps[i])
			}
		}
		// The hand encoding is the protobuf encoding of pb.LinkFrame.
		var m pb.LinkFrame
		if err := proto.Unmarshal(enc, &m); err != nil {
			t.Fatalf("not valid protobuf: %v", err)
		}
		want, _ := proto.Marshal(&m)
		if !bytes.Equal(want, enc) {
			t.Fatalf("encoding differs from protobuf: %x vs %x", enc, want)
		}
	}
}

func TestFrameRefusesOversizeAndGarbage(t *testing.T) {
	enc := encode([][]byte{make([]byte, 100)})
	if _, err := ParseFrame(enc, nil, 99); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize packet: got %v, want ErrTooLarge", err)
	}
	// A length prefix claiming 4 GiB must be refused, not allocated.
	bad := AppendFrame(nil, nil, 0)
	bad = append(bad, 0x0a, 6, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x')
	if _, err := ParseFrame(bad, nil, 1<<20); err == nil {
		t.Fatal("4 GiB claim accepted")
	}
	if _, err := ParseFrame([]byte{0x0a, 0x05, 1}, nil, 10); err == nil {
		t.Fatal("truncated frame accepted")
	}
}

func TestSplitBatch(t *testing.T) {
	big := make([]byte, FrameTarget)
	ps := [][]byte{[]byte("a"), big, []byte("b"), []byte("c")}
	n, _ := SplitBatch(ps)
	if n != 1 {
		t.Fatalf("first frame holds %d packets, want 1", n)
	}
	n, body := SplitBatch(ps[1:])
	if n != 1 || body != FrameTarget+3 {
		t.Fatalf("big packet frame: n=%d body=%d", n, body)
	}
	n, _ = SplitBatch(ps[2:])
	if n != 2 {
		t.Fatalf("tail frame holds %d packets, want 2", n)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	var c LinkCodec
	ps := [][]byte{[]byte("x"), bytes.Repeat([]byte("y"), 5000)}
	_, body := SplitBatch(ps)
	out, err := c.Marshal(&OutFrame{Packets: ps, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	in := &InFrame{MaxPacket: 1 << 20}
	if err := c.Unmarshal(out, in); err != nil {
		t.Fatal(err)
	}
	out.Free()
	if len(in.Packets) != 2 || !bytes.Equal(in.Packets[1], ps[1]) {
		t.Fatalf("round trip lost data: %d packets", len(in.Packets))
	}
	// Non-frame values go through protobuf.
	b, err := c.Marshal(&pb.DialRequest{Address: "a:1"})
	if err != nil {
		t.Fatal(err)
	}
	var dr pb.DialRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b.Materialize())}, &dr); err != nil || dr.Address != "a:1" {
		t.Fatalf("proto path: %v %q", err, dr.Address)
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(encode([][]byte{[]byte("hello"), {}}))
	f.Add(encode(nil))
	f.Add([]byte{0x0a, 0x02, 0x05, 'a'})
	f.Add([]byte{0x12, 0x00, 0x0a, 0x01, 0x00})
	f.Add([]byte{0x0a, 6, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParseFrame(data, nil, 1024)
		if err != nil {
			return
		}
		for _, p := range ps {
			if len(p) > 1024 {
				t.Fatalf("packet of %d bytes passed a 1024 limit", len(p))
			}
		}
		// Re-encoding what was parsed parses to the same packets.
		again, err := ParseFrame(encode(ps), nil, 1024)
		if err != nil || len(again) != len(ps) {
			t.Fatalf("re-encode: %v (%d vs %d packets)", err, len(again), len(ps))
		}
		for i := range ps {
			if !bytes.Equal(ps[i], again[i]) {
				t.Fatalf("packet %d changed", i)
			}
		}
	})
}
