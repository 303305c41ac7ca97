package quictransport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire format of one frame:
//
//	version  1 byte   FrameVersion
//	type     1 byte   frameData, frameOpen or frameClose
//	length   4 bytes  big-endian payload length (0 for heartbeat and close)
//	payload  length bytes
//
// The frames are those of the tcp transport, on the link's one QUIC stream.
// A fixed-width length (rather than a varint) lets the reader validate the
// whole header from the first six bytes, before it reserves room for the
// payload. QUIC keeps the connection alive itself, so the type the tcp
// transport uses for heartbeats serves here as frameOpen: the dialer's first
// frame, which makes the stream visible to the listener (a QUIC stream
// exists for the peer only once something was sent on it).

// FrameVersion is the first byte of every frame this package writes and the
// only version it accepts.
const FrameVersion byte = 1

const (
	frameData  byte = 1
	frameOpen  byte = 2
	frameClose byte = 3
)

const headerSize = 6

// ErrBadFrame is wrapped by every error about malformed bytes received from
// the network; the link that carried them is closed.
var ErrBadFrame = errors.New("quic transport: bad frame")

func appendHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, FrameVersion, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// parseHeader validates a frame header and returns the frame type and the
// payload length. It never trusts the length beyond max.
func parseHeader(h []byte, max int) (typ byte, n int, err error) {
	if h[0] != FrameVersion {
		return 0, 0, fmt.Errorf("%w: version byte %d, want %d (is the peer a ferry quic transport of a compatible version?)", ErrBadFrame, h[0], FrameVersion)
	}
	typ = h[1]
	n64 := uint64(binary.BigEndian.Uint32(h[2:6]))
	switch typ {
	case frameData:
		if n64 > uint64(max) {
			return 0, 0, fmt.Errorf("%w: frame of %d bytes exceeds the maximum message size %d (raise max_message_size on this side if the peer is legitimate)", ErrBadFrame, n64, max)
		}
	case frameOpen, frameClose:
		if n64 != 0 {
			return 0, 0, fmt.Errorf("%w: control frame type %d carries %d bytes, want 0", ErrBadFrame, typ, n64)
		}
	default:
		return 0, 0, fmt.Errorf("%w: unknown frame type %d", ErrBadFrame, typ)
	}
	return typ, int(n64), nil
}

// frameReader decodes frames from r into one reusable buffer. Payloads it
// returns alias that buffer and stay valid until the next call to fill.
type frameReader struct {
	r     io.Reader
	max   int
	buf   []byte
	s, e  int // unread bytes are buf[s:e]
	quiet int // consecutive shrink calls that found a large buffer empty
}

const minReadBuffer = 64 << 10

func newFrameReader(r io.Reader, max, size int) *frameReader {
	if size < minReadBuffer {
		size = minReadBuffer
	}
	return &frameReader{r: r, max: max, buf: make([]byte, size)}
}

// next returns the next complete buffered frame. ok is false when more bytes
// are needed.
func (fr *frameReader) next() (typ byte, payload []byte, ok bool, err error) {
	if fr.e-fr.s < headerSize {
		return 0, nil, false, nil
	}
	typ, n, err := parseHeader(fr.buf[fr.s:fr.s+headerSize], fr.max)
	if err != nil {
		return 0, nil, false, err
	}
	if fr.e-fr.s < headerSize+n {
		return 0, nil, false, nil
	}
	start := fr.s + headerSize
	fr.s = start + n
	return typ, fr.buf[start:fr.s:fr.s], true, nil
}

// fill reads more bytes from r. It must only be called when no payload
// returned since the last fill is still in use, because it moves the unread
// tail to the front of the buffer. The buffer grows towards the size of the
// frame being read, at most doubling per read, so a peer that announces a
// large frame and then trickles bytes makes the reader allocate in
// proportion to what it really sent, never beyond max.
func (fr *frameReader) fill() (int, error) {
	if fr.s == fr.e {
		fr.s, fr.e = 0, 0
	}
	need := headerSize
	if fr.e-fr.s >= headerSize {
		_, n, err := parseHeader(fr.buf[fr.s:fr.s+headerSize], fr.max)
		if err != nil {
			return 0, err
		}
		need = headerSize + n
		if need > len(fr.buf)/4 {
			fr.quiet = 0 // the large buffer is still in use
		}
	}
	if fr.s+need > len(fr.buf) || fr.e == len(fr.buf) {
		if need <= len(fr.buf) {
			fr.e = copy(fr.buf, fr.buf[fr.s:fr.e])
			fr.s = 0
		} else {
			size := 2 * len(fr.buf)
			if size > need {
				size = need
			}
			nb := make([]byte, size)
			fr.e = copy(nb, fr.buf[fr.s:fr.e])
			fr.s = 0
			fr.buf = nb
		}
	}
	return fr.r.Read(fr.buf[fr.e:])
}

// advance records n bytes read by fill (split from fill so callers can keep
// the bytes of a read that also returned an error).
func (fr *frameReader) advance(n int) { fr.e += n }

// shrinkAfter is how many calls in a row shrink must find an oversized
// buffer empty before dropping it: a stream of large messages keeps its
// buffer, one large message does not pin it for the life of the link.
const shrinkAfter = 32

// shrink is called between batches; see shrinkAfter.
func (fr *frameReader) shrink(size int) {
	if len(fr.buf) <= 4*size || len(fr.buf) <= 4*minReadBuffer {
		return
	}
	if fr.s != fr.e {
		return
	}
	if fr.quiet++; fr.quiet >= shrinkAfter {
		fr.buf = make([]byte, size)
		fr.s, fr.e, fr.quiet = 0, 0, 0
	}
}

// inlineMax is the largest payload frameWriter copies next to its header;
// larger payloads are written to the stream where they are, which saves a
// copy.
const inlineMax = 8 << 10

// frameWriter turns a batch of packets into few stream writes.
type frameWriter struct {
	scratch []byte   // headers and small payloads, reused
	vec     [][]byte // the write; reused
}

// build returns the batch as buffers to write in order. They alias
// packets and the writer's scratch until release.
func (fw *frameWriter) build(packets [][]byte) [][]byte {
	size := 0
	for _, p := range packets {
		size += headerSize
		if len(p) <= inlineMax {
			size += len(p)
		}
	}
	if cap(fw.scratch) < size {
		fw.scratch = make([]byte, 0, size)
	}
	// scratch has room for everything, so the slices below stay valid.
	s := fw.scratch[:0]
	vec := fw.vec[:0]
	start := 0
	for _, p := range packets {
		s = appendHeader(s, frameData, len(p))
		if len(p) <= inlineMax {
			s = append(s, p...)
			continue
		}
		vec = append(vec, s[start:len(s):len(s)], p)
		start = len(s)
	}
	if start < len(s) {
		vec = append(vec, s[start:])
	}
	fw.scratch, fw.vec = s, vec
	return vec
}

// release drops references to the last batch's packets so the writer does
// not keep them alive, and a scratch buffer grown by one huge batch.
func (fw *frameWriter) release() {
	clear(fw.vec[:cap(fw.vec)])
	fw.vec = fw.vec[:0]
	if cap(fw.scratch) > 4<<20 {
		fw.scratch = nil
	}
}
