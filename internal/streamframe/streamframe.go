// Package streamframe is the length-prefixed frame format the stream
// transports (tcp, and quic on its one stream per link) share: the header
// codec, a reader that never trusts a declared length beyond its maximum and
// grows its buffer only with the bytes that really arrived (optionally under
// a memory budget shared by all links), a writer that turns a batch of
// packets into one vectored write, and the checks and write cancellation a
// link's Send needs around it (send.go).
//
// Wire format of one frame:
//
//	version  1 byte   Version
//	type     1 byte   TypeData, TypeSignal or TypeClose
//	length   4 bytes  big-endian payload length (0 for signal and close)
//	payload  length bytes
//
// A fixed-width length (rather than a varint) lets the reader validate the
// whole header from the first six bytes, before it reserves room for the
// payload.
package streamframe

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
)

// Version is the first byte of every frame and the only version accepted.
const Version byte = 1

// Frame types.
const (
	// TypeData carries one packet.
	TypeData byte = 1
	// TypeSignal is an empty frame whose meaning is the transport's: tcp
	// sends it as a heartbeat, quic as the dialer's first frame that makes
	// its stream visible to the listener.
	TypeSignal byte = 2
	// TypeClose is an empty frame ending the link cleanly.
	TypeClose byte = 3
)

// HeaderSize is the length of a frame header.
const HeaderSize = 6

// Errors is how one transport names what goes wrong with its frames, so
// its errors keep its own identity (errors.Is) and wording.
type Errors struct {
	// Transport is the transport's name in messages ("tcp").
	Transport string
	// BadFrame is wrapped by every error about malformed bytes.
	BadFrame error
	// ReceiveMemory is wrapped when a frame needs more read buffer than
	// the Budget has left; needed only by a reader with a budget.
	ReceiveMemory error
}

// AppendHeader appends the header of a frame of type typ with n payload
// bytes.
func AppendHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, Version, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// parseHeader validates a frame header and returns the frame type and the
// payload length. It never trusts the length beyond max.
func parseHeader(h []byte, max int, e *Errors) (typ byte, n int, err error) {
	if h[0] != Version {
		return 0, 0, fmt.Errorf("%w: version byte %d, want %d (is the peer a ferry %s transport of a compatible version?)", e.BadFrame, h[0], Version, e.Transport)
	}
	typ = h[1]
	n64 := uint64(binary.BigEndian.Uint32(h[2:6]))
	switch typ {
	case TypeData:
		if n64 > uint64(max) {
			return 0, 0, fmt.Errorf("%w: frame of %d bytes exceeds the maximum message size %d (raise max_message_size on this side if the peer is legitimate)", e.BadFrame, n64, max)
		}
	case TypeSignal, TypeClose:
		if n64 != 0 {
			return 0, 0, fmt.Errorf("%w: control frame type %d carries %d bytes, want 0", e.BadFrame, typ, n64)
		}
	default:
		return 0, 0, fmt.Errorf("%w: unknown frame type %d", e.BadFrame, typ)
	}
	return typ, int(n64), nil
}

// MinReadBuffer is the smallest read buffer a Reader uses.
const MinReadBuffer = 64 << 10

// Reader decodes frames from an io.Reader into one reusable buffer.
// Payloads it returns alias that buffer and stay valid until the next call
// to Fill. One goroutine at a time may use it; Release may be called
// concurrently.
type Reader struct {
	r     io.Reader
	max   int
	errs  *Errors
	buf   []byte
	s, e  int // unread bytes are buf[s:e]
	quiet int // consecutive Shrink calls that found a large buffer empty
	base  int // the buffer's normal size; growth beyond it is charged to mem
	mem   account
}

// NewReader returns a reader of frames from r with payloads of at most max
// bytes, a buffer of size bytes (at least MinReadBuffer) and growth beyond
// it charged to budget (nil: unlimited).
func NewReader(r io.Reader, max, size int, budget *Budget, errs *Errors) *Reader {
	if size < MinReadBuffer {
		size = MinReadBuffer
	}
	return &Reader{r: r, max: max, errs: errs, buf: make([]byte, size), base: size, mem: account{b: budget}}
}

// Budget is the read buffer memory, beyond each reader's base buffer, that
// all readers of a transport may hold together. The zero value has no
// limit.
type Budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
}

// SetLimit sets the bytes all readers may hold together (0: no limit).
func (b *Budget) SetLimit(n int64) {
	b.mu.Lock()
	b.limit = n
	b.mu.Unlock()
}

// Used returns the bytes currently charged.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// account is one reader's share of a Budget. It is released when the link
// ends, possibly while the reader is still in Fill, hence the lock.
type account struct {
	b       *Budget
	mu      sync.Mutex
	charged int64
	closed  bool
}

// set changes the account's charge to n bytes; growing fails when the
// budget has no room or the account was released.
func (a *account) set(n int64) bool {
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

func (a *account) release() {
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

// Release returns the reader's charge to its budget for good: the link
// ended. A Fill still in progress can no longer grow the buffer.
func (fr *Reader) Release() { fr.mem.release() }

// resize replaces the buffer with one of size bytes holding the unread
// bytes, charging growth beyond base to the memory budget.
func (fr *Reader) resize(size int) error {
	if !fr.mem.set(int64(max(0, size-fr.base))) {
		return fmt.Errorf("%w: a frame needs %d bytes of read buffer (max_receive_memory is shared by all links)", fr.errs.ReceiveMemory, size)
	}
	nb := make([]byte, size)
	fr.e = copy(nb, fr.buf[fr.s:fr.e])
	fr.s = 0
	fr.buf = nb
	return nil
}

// Next returns the next complete buffered frame. ok is false when more bytes
// are needed.
func (fr *Reader) Next() (typ byte, payload []byte, ok bool, err error) {
	if fr.e-fr.s < HeaderSize {
		return 0, nil, false, nil
	}
	typ, n, err := parseHeader(fr.buf[fr.s:fr.s+HeaderSize], fr.max, fr.errs)
	if err != nil {
		return 0, nil, false, err
	}
	if fr.e-fr.s < HeaderSize+n {
		return 0, nil, false, nil
	}
	start := fr.s + HeaderSize
	fr.s = start + n
	return typ, fr.buf[start:fr.s:fr.s], true, nil
}

// Fill reads more bytes from r. It must only be called when no payload
// returned since the last Fill is still in use, because it moves the unread
// tail to the front of the buffer. The buffer grows towards the size of the
// frame being read, at most doubling per read, so a peer that announces a
// large frame and then trickles bytes makes the reader allocate in
// proportion to what it really sent, never beyond max.
func (fr *Reader) Fill() (int, error) {
	if fr.s == fr.e {
		fr.s, fr.e = 0, 0
	}
	need := HeaderSize
	if fr.e-fr.s >= HeaderSize {
		_, n, err := parseHeader(fr.buf[fr.s:fr.s+HeaderSize], fr.max, fr.errs)
		if err != nil {
			return 0, err
		}
		need = HeaderSize + n
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

// Advance records n bytes read by Fill (split from Fill so callers can keep
// the bytes of a read that also returned an error).
func (fr *Reader) Advance(n int) { fr.e += n }

// Buffered returns the bytes read but not yet returned as frames: more than
// zero when a frame has begun.
func (fr *Reader) Buffered() int { return fr.e - fr.s }

// Pending returns the bytes the frame being read needs in all (header and
// payload), or 0 when no frame has begun.
func (fr *Reader) Pending() int {
	if fr.e == fr.s {
		return 0
	}
	if fr.e-fr.s < HeaderSize {
		return HeaderSize
	}
	_, n, err := parseHeader(fr.buf[fr.s:fr.s+HeaderSize], fr.max, fr.errs)
	if err != nil {
		return HeaderSize
	}
	return HeaderSize + n
}

// ShrinkAfter is how many calls in a row Shrink must find an oversized
// buffer empty before dropping it: a stream of large messages keeps its
// buffer, one large message does not pin it for the life of the link.
const ShrinkAfter = 32

// Shrink is called between batches; see ShrinkAfter.
func (fr *Reader) Shrink(size int) {
	if len(fr.buf) <= 4*size || len(fr.buf) <= 4*MinReadBuffer {
		return
	}
	if fr.s != fr.e {
		return
	}
	if fr.quiet++; fr.quiet >= ShrinkAfter {
		fr.buf = make([]byte, size)
		fr.s, fr.e, fr.quiet = 0, 0, 0
		fr.mem.set(int64(max(0, size-fr.base)))
	}
}

// InlineMax is the largest payload Writer copies next to its header;
// larger payloads are handed to the kernel or stream where they are
// (writev), which saves a copy and a round of buffer-sized write calls.
const InlineMax = 8 << 10

// Writer turns a batch of packets into one vectored write. The zero value
// is ready to use.
type Writer struct {
	scratch []byte      // headers and small payloads, reused
	vec     net.Buffers // the write; reused
}

// Build returns the batch as data frames in buffers for a single writev (or
// to write in order). They alias packets and the writer's scratch until
// Release.
func (fw *Writer) Build(packets [][]byte) net.Buffers {
	size := 0
	for _, p := range packets {
		size += HeaderSize
		if len(p) <= InlineMax {
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
		s = AppendHeader(s, TypeData, len(p))
		if len(p) <= InlineMax {
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

// Release drops references to the last batch's packets so the writer does
// not keep them alive, and a scratch buffer grown by one huge batch.
func (fw *Writer) Release() {
	clear(fw.vec[:cap(fw.vec)])
	fw.vec = fw.vec[:0]
	if cap(fw.scratch) > 4<<20 {
		fw.scratch = nil
	}
}
