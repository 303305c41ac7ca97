package portal

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// chunkCodec marshals the Stream call's Chunk messages by hand, to save the
// copies the generic protobuf path makes of every chunk: an outgoing chunk
// is framed around a pooled buffer handed to gRPC as it is, an incoming one
// is gathered once and its data aliased. The wire form is plain protobuf
// (message Chunk in portal.proto), so a plugin in another language can use
// generated code. Everything else goes through the protobuf codec.
type chunkCodec struct{}

var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// bufPool holds the buffers chunks are read into, written from and
// gathered into. Unlike gRPC's default pool it does not clear a buffer on
// Get (that clearing took a quarter of the host's CPU through a plugin):
// every user here overwrites the whole length it asks for before reading.
var bufPool mem.BufferPool = &dirtyPool{}

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

// outChunk is an outgoing Chunk. buf (from bufPool, may be nil) is owned by
// gRPC once sent: it is returned to the pool after being written.
type outChunk struct {
	buf *[]byte
	fin bool
}

// inChunk is an incoming Chunk; data aliases buf, a pooled buffer the
// receiver releases with free once it has used data.
type inChunk struct {
	buf  mem.Buffer
	data []byte
	fin  bool
}

func (c *inChunk) free() {
	if c.buf != nil {
		c.buf.Free()
		c.buf = nil
	}
	c.data = nil
}

func (chunkCodec) Name() string { return grpcproto.Name }

func (chunkCodec) Marshal(v any) (mem.BufferSlice, error) {
	c, ok := v.(*outChunk)
	if !ok {
		return protoCodec.Marshal(v)
	}
	var out mem.BufferSlice
	if c.buf != nil && len(*c.buf) > 0 {
		hdr := protowire.AppendTag(nil, 1, protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(len(*c.buf)))
		out = append(out, mem.SliceBuffer(hdr), mem.NewBuffer(c.buf, bufPool))
		c.buf = nil
	}
	if c.fin {
		t := protowire.AppendTag(nil, 2, protowire.VarintType)
		out = append(out, mem.SliceBuffer(protowire.AppendVarint(t, 1)))
	}
	return out, nil
}

var errChunk = errors.New("malformed portal chunk")

func (chunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c, ok := v.(*inChunk)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	*c = inChunk{}
	// A single-buffer message is only referenced, not copied.
	buf := data.MaterializeToBuffer(bufPool)
	if err := parseChunk(buf.ReadOnlyData(), c); err != nil {
		buf.Free()
		return err
	}
	c.buf = buf
	return nil
}

// parseChunk decodes a Chunk, aliasing b. Unknown fields are skipped, as
// protobuf requires.
func parseChunk(b []byte, c *inChunk) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errChunk, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			d, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: data: %v", errChunk, protowire.ParseError(n))
			}
			c.data, b = d, b[n:]
		case num == 2 && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: fin: %v", errChunk, protowire.ParseError(n))
			}
			c.fin, b = x != 0, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errChunk, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}
