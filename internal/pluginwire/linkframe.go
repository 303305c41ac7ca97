package pluginwire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// A link stream carries LinkFrame messages (see internal/pb/transport.proto):
// field 1 holds the batch, each packet preceded by its length as a uvarint.
// The SDK encodes and decodes that wire form by hand so a batch costs one
// copy on each side and no per-packet allocation; it stays valid protobuf so
// a plugin written in another language can use generated code.

// ErrTooLarge is what ParseFrame fails with for a packet above the
// maximum; each side wraps it in its package's sentinel.
var ErrTooLarge = errors.New("packet exceeds the maximum message size")

const (
	// FrameTarget is the batch size above which Send starts a new frame. A
	// packet larger than this travels alone in its own frame.
	FrameTarget = 1 << 20
	// FrameOverhead bounds the tag and varint lengths around a frame's
	// packets, used to size gRPC message limits.
	FrameOverhead = 64
	packetsField  = protowire.Number(1)
)

// GRPCLimit is the gRPC message size limit both sides set for a transport
// whose packets are at most maxPacket bytes.
func GRPCLimit(maxPacket int) int {
	return max(maxPacket, FrameTarget) + 2*FrameOverhead
}

// SplitBatch returns how many leading packets of ps go into one frame and
// the size of that frame's batch body.
func SplitBatch(ps [][]byte) (n, body int) {
	for i, p := range ps {
		sz := protowire.SizeVarint(uint64(len(p))) + len(p)
		if i > 0 && body+sz > FrameTarget {
			return i, body
		}
		body += sz
	}
	return len(ps), body
}

// AppendFrame appends the LinkFrame encoding of packets, whose batch body
// is body bytes long, to dst.
func AppendFrame(dst []byte, packets [][]byte, body int) []byte {
	if body == 0 && len(packets) == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, packetsField, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(body))
	for _, p := range packets {
		dst = binary.AppendUvarint(dst, uint64(len(p)))
		dst = append(dst, p...)
	}
	return dst
}

// FrameSize is the encoded size of a frame with a batch body of body bytes.
func FrameSize(body int) int {
	return protowire.SizeTag(packetsField) + protowire.SizeVarint(uint64(body)) + body
}

// ParseFrame decodes a LinkFrame, appending its packets (sub-slices of
// data) to dst[:0]. Packets above maxPacket are refused before use, as is
// any malformed input; unknown fields are skipped, as protobuf requires.
func ParseFrame(data []byte, dst [][]byte, maxPacket int) ([][]byte, error) {
	dst = dst[:0]
	var batch []byte
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return dst, fmt.Errorf("link frame: bad field tag: %w", protowire.ParseError(n))
		}
		data = data[n:]
		if num == packetsField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return dst, fmt.Errorf("link frame: bad packets field: %w", protowire.ParseError(n))
			}
			batch, data = v, data[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return dst, fmt.Errorf("link frame: bad field %d: %w", num, protowire.ParseError(n))
		}
		data = data[n:]
	}
	for len(batch) > 0 {
		l, n := binary.Uvarint(batch)
		if n <= 0 {
			return dst[:0], fmt.Errorf("link frame: bad packet length after %d packets", len(dst))
		}
		batch = batch[n:]
		if l > uint64(len(batch)) {
			return dst[:0], fmt.Errorf("link frame: packet %d claims %d bytes but only %d remain", len(dst), l, len(batch))
		}
		if l > uint64(maxPacket) {
			return dst[:0], fmt.Errorf("link frame: packet %d is %d bytes, over the maximum %d: %w", len(dst), l, maxPacket, ErrTooLarge)
		}
		dst = append(dst, batch[:l:l])
		batch = batch[l:]
	}
	return dst, nil
}

// OutFrame is a batch to send. Its packets are encoded when gRPC marshals
// it, straight into a pooled buffer that gRPC frees once written.
type OutFrame struct {
	Packets [][]byte
	Body    int
}

// EncodedFrame is a frame already encoded into a pooled buffer; marshalling
// hands the buffer to gRPC, which returns it to the pool once written.
type EncodedFrame struct {
	Buf *[]byte
}

// InFrame is a received batch. Its buffer is reused from frame to frame;
// packets point into it and stay valid until the next receive into it.
type InFrame struct {
	Buf       []byte
	Packets   [][]byte
	MaxPacket int
}

// LinkCodec marshals link Frames by hand and everything else (control
// calls, go-plugin's own services) as protobuf.
type LinkCodec struct{}

var protoCodec = encoding.GetCodecV2(grpcproto.Name)

func (LinkCodec) Name() string { return grpcproto.Name }

func (LinkCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch f := v.(type) {
	case *OutFrame:
		pool := Frames
		buf := pool.Get(FrameSize(f.Body))
		*buf = AppendFrame((*buf)[:0], f.Packets, f.Body)
		return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
	case *EncodedFrame:
		b := f.Buf
		f.Buf = nil
		return mem.BufferSlice{mem.NewBuffer(b, Frames)}, nil
	}
	return protoCodec.Marshal(v)
}

func (LinkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*InFrame)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	n := data.Len()
	if cap(f.Buf) < n || cap(f.Buf) > 4*FrameTarget && n < FrameTarget {
		// Grow to fit, or give back a buffer a single huge packet left behind.
		f.Buf = make([]byte, n)
	}
	f.Buf = f.Buf[:n]
	data.CopyTo(f.Buf)
	var err error
	f.Packets, err = ParseFrame(f.Buf, f.Packets, f.MaxPacket)
	return err
}
