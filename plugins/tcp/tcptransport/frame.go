package tcptransport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Wire format of one frame:
//
//	version  1 byte   FrameVersion
//	type     1 byte   frameData, frameHeartbeat or frameClose
//	length   4 bytes  big-endian payload length (0 for heartbeat and close)
//	payload  length bytes
//
// A fixed-width length (rather than a varint) lets the reader validate the
// whole header from the first six bytes, before it reserves room for the
// payload.

// FrameVersion is the first byte of every frame this package writes and the
// only version it accepts.
const FrameVersion byte = 1

const (
	frameData      byte = 1
	frameHeartbeat byte = 2
	frameClose     byte = 3
)

const headerSize = 6

// ErrBadFrame is wrapped by every error about malformed bytes received from
// the network; the link that carried them is closed.
var ErrBadFrame = errors.New("tcp transport: bad frame")

func appendHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, FrameVersion, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// parseHeader validates a frame header and returns the frame type and the
// payload length. It never trusts the length beyond max.
func parseHeader(h []byte, max int) (typ byte, n int, err error) {
	if h[0] != FrameVersion {
		return 0, 0, fmt.Errorf("%w: version byte %d, want %d (is the peer a ferry tcp transport of a compatible version?)", ErrBadFrame, h[0], FrameVersion)
	}
	typ = h[1]
	n64 := uint64(binary.BigEndian.Uint32(h[2:6]))
	switch typ {
	case frameData:
		if n64 > uint64(max) {
			return 0, 0, fmt.Errorf("%w: frame of %d bytes exceeds the maximum message size %d (raise max_message_size on this side if the peer is legitimate)", ErrBadFrame, n64, max)
		}
	case frameHeartbeat, frameClose:
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
	base  int // the buffer's normal size; growth beyond it is charged to mem
	mem   memAccount
}

const minReadBuffer = 64 << 10

// ErrReceiveMemory is wrapped by the error Recv returns when a frame needs
// more read buffer than max_receive_memory has left for all links.
var ErrReceiveMemory = errors.New("tcp transport: receive memory budget exhausted")

func newFrameReader(r io.Reader, max, size int, budget *memBudget) *frameReader {
	if size < minReadBuffer {
		size = minReadBuffer
	}
	return &frameReader{r: r, max: max, buf: make([]byte, size), base: size, mem: memAccount{b: budget}}
}

// memBudget is the read buffer memory, beyond each link's base buffer, that
// all links of a transport may hold together. A nil budget is unlimited.
type memBudget struct {
	mu    sync.Mutex
	limit int64
	used  int64
}

func (b *memBudget) setLimit(n int64) {
	b.mu.Lock()
	b.limit = n
	b.mu.Unlock()
}

// Used returns the bytes currently charged.
func (b *memBudget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// memAccount is one reader's share of a memBudget. It is released when the
// link ends, possibly while the reader is still in fill, hence the lock.
type memAccount struct {
	b       *memBudget
	mu      sync.Mutex
	charged int64
	closed  bool
}

// set changes the account's charge to n bytes; growing fails when the
// budget has no room or the account was released.
func (a *memAccount) set(n int64) bool {
	if a.b == nil {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return n <= a.charged
	}
	d := n - a.charged
	a.b.mu.Lock()
	defer a.b.mu.Unlock()
	if d > 0 && a.b.limit > 0 && a.b.used+d > a.b.limit {
		return false
	}
	a.b.used += d
	a.charged = n
	return true
}

func (a *memAccount) release() {
	if a.b == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		a.b.mu.Lock()
		a.b.used -= a.charged
		a.b.mu.Unlock()
		a.charged = 0
	}
}

// resize replaces the buffer with one of size bytes holding the unread
// bytes, charging growth beyond base to the memory budget.
func (fr *frameReader) resize(size int) error {
	if !fr.mem.set(int64(max(0, size-fr.base))) {
		return fmt.Errorf("%w: a frame needs %d bytes of read buffer (max_receive_memory is shared by all links)", ErrReceiveMemory, size)
	}
	nb := make([]byte, size)
	fr.e = copy(nb, fr.buf[fr.s:fr.e])
	fr.s = 0
	fr.buf = nb
	return nil
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
			if err := fr.resize(size); err != nil {
				return 0, err
			}
		}
	}
	return fr.r.Read(fr.buf[fr.e:])
}

// advance records n bytes read by fill (split from fill so callers can keep
// the bytes of a read that also returned an error).
func (fr *frameReader) advance(n int) { fr.e += n }

// pending returns the bytes the frame being read needs in all (header and
// payload), or 0 when no frame has begun.
func (fr *frameReader) pending() int {
	if fr.e == fr.s {
		return 0
	}
	if fr.e-fr.s < headerSize {
		return headerSize
	}
	_, n, err := parseHeader(fr.buf[fr.s:fr.s+headerSize], fr.max)
	if err != nil {
		return headerSize
	}
	return headerSize + n
}

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
		fr.mem.set(int64(max(0, size-fr.base)))
	}
}

// inlineMax is the largest payload frameWriter copies next to its header;
// larger payloads are handed to the kernel where they are (writev), which
// saves a copy and a round of buffer-sized write calls.
const inlineMax = 8 << 10

// frameWriter turns a batch of packets into one vectored write.
type frameWriter struct {
	scratch []byte      // headers and small payloads, reused
	vec     net.Buffers // the write; reused
}

// build returns the batch as buffers for a single writev. They alias
// packets and the writer's scratch until release.
func (fw *frameWriter) build(packets [][]byte) net.Buffers {
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
