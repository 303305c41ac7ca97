package pluginwire

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// ChunkCodec marshals the Stream call's Chunk messages by hand, to save the
// copies the generic protobuf path makes of every chunk: an outgoing chunk
// is framed around a pooled buffer handed to gRPC as it is, an incoming one
// is gathered once and its data aliased. The wire form is plain protobuf
// (message Chunk in portal.proto), so a plugin in another language can use
// generated code. Everything else goes through the protobuf codec.
type ChunkCodec struct{}

// ChunkPool holds the buffers chunks are read into, written from and
// gathered into. Unlike gRPC's default pool it does not clear a buffer on
// Get (that clearing took a quarter of the host's CPU through a plugin):
// every user here overwrites the whole length it asks for before reading.
var ChunkPool mem.BufferPool = &dirtyPool{}

const (
	minTierShift = 12 // 4 KiB
	maxTierShift = 21 // 2 MiB, above any chunk
)

type dirtyPool struct {
	tiers [maxTierShift - minTierShift + 1]sync.Pool
}

// tier returns the index of the smallest tier holding size bytes, or -1.
func tier(size int) int {
	if size > 1<<maxTierShift {
		return -1
	}
	shift := max(bits.Len(uint(size-1)), minTierShift)
	if size <= 1 {
		shift = minTierShift
	}
	return shift - minTierShift
}

func (p *dirtyPool) Get(size int) *[]byte {
	t := tier(size)
	if t < 0 {
		b := make([]byte, size)
		return &b
	}
	if v := p.tiers[t].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<(t+minTierShift))
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTierShift || c > 1<<maxTierShift || c&(c-1) != 0 {
		return // not one of ours
	}
	p.tiers[bits.TrailingZeros(uint(c))-minTierShift].Put(b)
}

// OutChunk is an outgoing Chunk. buf (from ChunkPool, may be nil) is owned by
// gRPC once sent: it is returned to the pool after being written.
type OutChunk struct {
	Buf *[]byte
	Fin bool
}

// InChunk is an incoming Chunk; data aliases buf, a pooled buffer the
// receiver releases with free once it has used data.
type InChunk struct {
	buf  mem.Buffer
	Data []byte
	Fin  bool
}

func (c *InChunk) Free() {
	if c.buf != nil {
		c.buf.Free()
		c.buf = nil
	}
	c.Data = nil
}

func (ChunkCodec) Name() string { return grpcproto.Name }

func (ChunkCodec) Marshal(v any) (mem.BufferSlice, error) {
	c, ok := v.(*OutChunk)
	if !ok {
		return protoCodec.Marshal(v)
	}
	var out mem.BufferSlice
	if c.Buf != nil && len(*c.Buf) > 0 {
		hdr := protowire.AppendTag(nil, 1, protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(len(*c.Buf)))
		out = append(out, mem.SliceBuffer(hdr), mem.NewBuffer(c.Buf, ChunkPool))
		c.Buf = nil
	}
	if c.Fin {
		t := protowire.AppendTag(nil, 2, protowire.VarintType)
		out = append(out, mem.SliceBuffer(protowire.AppendVarint(t, 1)))
	}
	return out, nil
}

// ErrChunk is what a malformed chunk fails with.
var ErrChunk = errors.New("malformed portal chunk")

func (ChunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c, ok := v.(*InChunk)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	*c = InChunk{}
	// A single-buffer message is only referenced, not copied.
	buf := data.MaterializeToBuffer(ChunkPool)
	if err := ParseChunk(buf.ReadOnlyData(), c); err != nil {
		buf.Free()
		return err
	}
	c.buf = buf
	return nil
}

// ParseChunk decodes a Chunk, aliasing b. Unknown fields are skipped, as
// protobuf requires.
func ParseChunk(b []byte, c *InChunk) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrChunk, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			d, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: data: %v", ErrChunk, protowire.ParseError(n))
			}
			c.Data, b = d, b[n:]
		case num == 2 && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: fin: %v", ErrChunk, protowire.ParseError(n))
			}
			c.Fin, b = x != 0, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", ErrChunk, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// ChunkSize is the most bytes one portal Chunk carries. Reads from a stream
// are at most this large; writes are split to it.
const ChunkSize = 256 << 10

// Data channel parameters of a portal plugin, the same on both sides: a
// DATA frame carries at most one chunk, and a stream may have
// PortalWindow bytes unacknowledged each way (which bounds a session's
// memory on the plugin path).
const (
	PortalMaxFrame = ChunkSize
	PortalWindow   = 1 << 20
)

// PortalMuxConfig is the data channel configuration of a portal plugin.
func PortalMuxConfig() MuxConfig {
	return MuxConfig{MaxFrame: PortalMaxFrame, Window: PortalWindow}
}
