package pluginwire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The shared-memory data channel: one sealed memfd holding two
// single-producer single-consumer byte rings, host → plugin and plugin →
// host, which both processes map. A byte written into a ring costs one
// copy and no system call; a system call is made only to wake a peer that
// sleeps (its ring was empty, or full). Wake-ups go over two socketpairs:
// the data channel's own socket carries "data" wake-ups (only the readers
// read it) and a second one "space" wake-ups (only the writers read it),
// so a reader and a writer of one process never take each other's. When a
// peer dies its socket ends, which wakes whoever sleeps with EOF, exactly
// as the plain socketpair does.
//
// Layout (offsets in bytes):
//
//	0    ring 0 (host → plugin) header
//	256  ring 1 (plugin → host) header
//	4096 ring 0 data (size bytes), then ring 1 data (size bytes)
//
// A header has four 64-byte lines: the producer's count of bytes written,
// the consumer's count of bytes read (both only grow), the consumer's
// "sleeping, wake me for data" flag and the producer's "sleeping, wake me
// for space" flag.
//
// The peer can write anything into these pages. Each side keeps its own
// counts in local variables and never reads them back; it checks every
// peer count it loads (it only grows, and never claims more than the ring
// holds or less than it has already consumed) and fails the channel with
// ErrProtocol otherwise. Data is copied out of the ring before anything
// parses it. The memfd is sealed against shrinking, so a peer cannot make
// the mapping fault, and the mapping lives until Close, which waits for
// any copy in progress.

const (
	ringHeader    = 4096
	ringHeaderLen = 256
	offWritten    = 0
	offRead       = 64
	offReaderWait = 128
	offWriterWait = 192
	// minRing and maxRing bound a ring's size, which is a power of two.
	minRing = 4 << 10
	maxRing = 256 << 20
)

// DefaultRingSize is each direction's ring size (1 MiB): measured with
// ferrybench's crossing, 64 KiB messages gained nothing from 4 MiB rings,
// and the pages, once touched, count in both processes' resident memory.
const DefaultRingSize = 1 << 20

// ringSupported: this system has the shared-memory data channel.
const ringSupported = true

// newRingMem creates the sealed memfd of a ring pair and maps it.
func newRingMem(size int) (*os.File, []byte, error) {
	if size < minRing || size > maxRing || size&(size-1) != 0 {
		return nil, nil, fmt.Errorf("data ring size %d: want a power of two in [%d, %d]", size, minRing, maxRing)
	}
	fd, err := unix.MemfdCreate("ferry-data-ring", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, nil, fmt.Errorf("data ring memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ferry-data-ring")
	total := ringHeader + 2*size
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("data ring size: %w", err)
	}
	// The plugin holds the same file: sealed, it can neither shrink it
	// (which would make the host's next access to the pages fault and kill
	// it) nor grow it.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("data ring seals: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("data ring mmap: %w", err)
	}
	return f, mem, nil
}

// mapRingMem maps a ring pair's memfd that a host created.
func mapRingMem(f *os.File) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("data ring stat: %w", err)
	}
	size := (st.Size - ringHeader) / 2
	if size < minRing || size > maxRing || size&(size-1) != 0 || st.Size != ringHeader+2*size {
		return nil, fmt.Errorf("data ring of %d bytes: not a ring pair", st.Size)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("data ring mmap: %w", err)
	}
	return mem, nil
}

func unmapRing(mem []byte) { unix.Munmap(mem) }

// ringHalf is one direction of a ring pair as one side sees it.
type ringHalf struct {
	data []byte
	mask uint64
	// pos is this side's own count (written, for the ring it produces
	// into; read, for the ring it consumes from): never read back from the
	// shared pages.
	pos uint64
	// peer is the peer's count as last loaded and checked.
	peer                                  uint64
	written, read, readerWait, writerWait *atomic.Uint64
}

func u64At(mem []byte, off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

func (h *ringHalf) init(mem []byte, idx, size int) {
	base := idx * ringHeaderLen
	h.written = u64At(mem, base+offWritten)
	h.read = u64At(mem, base+offRead)
	h.readerWait = u64At(mem, base+offReaderWait)
	h.writerWait = u64At(mem, base+offWriterWait)
	start := ringHeader + idx*size
	h.data = mem[start : start+size : start+size]
	h.mask = uint64(size - 1)
}

// ringConn is a data channel end over a ring pair, as a net.Conn: the Mux
// frames, credits and keepalive run on it unchanged.
type ringConn struct {
	// mu is held shared while the shared pages are touched, exclusively by
	// Close to unmap them, so no copy ever runs on an unmapped page.
	mu     sync.RWMutex
	mem    []byte
	closed atomic.Bool

	rmu, wmu sync.Mutex // one reader, one writer at a time
	in, out  ringHalf
	size     uint64

	// data carries "data" wake-ups both ways and ends when the peer does;
	// space carries "space" wake-ups.
	data, space net.Conn
	// wakeData is used by Write (under wmu), wakeSpace by Read (rmu).
	wakeData, wakeSpace *waker
	rbuf, wbuf          [64]byte // wake-ups drained while waiting
}

// newRingConn builds one end over mem: host is the side that writes ring 0.
func newRingConn(mem []byte, data, space net.Conn, host bool) (*ringConn, error) {
	size := (len(mem) - ringHeader) / 2
	c := &ringConn{mem: mem, data: data, space: space, size: uint64(size)}
	in, out := 1, 0
	if !host {
		in, out = 0, 1
	}
	c.in.init(mem, in, size)
	c.out.init(mem, out, size)
	dc, ok1 := data.(syscall.Conn)
	sc, ok2 := space.(syscall.Conn)
	if !ok1 || !ok2 {
		return nil, errors.New("data ring: wake-up channels are not sockets")
	}
	dr, err := dc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("data ring: %w", err)
	}
	sr, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("data ring: %w", err)
	}
	c.wakeData, c.wakeSpace = newWaker(dr), newWaker(sr)
	return c, nil
}

// enter takes the mapping for a copy; false once closed.
func (c *ringConn) enter() bool {
	c.mu.RLock()
	if c.closed.Load() {
		c.mu.RUnlock()
		return false
	}
	return true
}

func (c *ringConn) leave() { c.mu.RUnlock() }

// readable loads and checks the peer's written count: how many bytes wait
// in the inbound ring.
func (c *ringConn) readable() (uint64, error) {
	h := &c.in
	w := h.written.Load()
	raceAcquire()
	if w < h.peer || w-h.pos > c.size {
		return 0, fmt.Errorf("data ring: the peer's write count %d is impossible (read %d, ring %d bytes): %w", w, h.pos, c.size, ErrProtocol)
	}
	h.peer = w
	return w - h.pos, nil
}

// writable loads and checks the peer's read count: how many bytes the
// outbound ring has free.
func (c *ringConn) writable() (uint64, error) {
	h := &c.out
	r := h.read.Load()
	raceAcquire()
	if r < h.peer || r > h.pos {
		return 0, fmt.Errorf("data ring: the peer's read count %d is impossible (written %d): %w", r, h.pos, ErrProtocol)
	}
	h.peer = r
	return c.size - (h.pos - r), nil
}

// readSome copies what the inbound ring holds, up to len(p).
func (c *ringConn) readSome(p []byte) (int, error) {
	if !c.enter() {
		return 0, net.ErrClosed
	}
	defer c.leave()
	avail, err := c.readable()
	if err != nil || avail == 0 {
		return 0, err
	}
	h := &c.in
	n := int(min(uint64(len(p)), avail))
	off := h.pos & h.mask
	k := copy(p[:n], h.data[off:])
	copy(p[k:n], h.data)
	h.pos += uint64(n)
	raceRelease()
	h.read.Store(h.pos)
	if h.writerWait.Load() != 0 && h.writerWait.CompareAndSwap(1, 0) {
		return n, c.wakeSpace.wake()
	}
	return n, nil
}

// writeSome copies what fits of p into the outbound ring.
func (c *ringConn) writeSome(p []byte) (int, error) {
	if !c.enter() {
		return 0, net.ErrClosed
	}
	defer c.leave()
	free, err := c.writable()
	if err != nil || free == 0 {
		return 0, err
	}
	h := &c.out
	n := int(min(uint64(len(p)), free))
	off := h.pos & h.mask
	k := copy(h.data[off:], p[:n])
	copy(h.data, p[k:n])
	h.pos += uint64(n)
	raceRelease()
	h.written.Store(h.pos)
	if h.readerWait.Load() != 0 && h.readerWait.CompareAndSwap(1, 0) {
		return n, c.wakeData.wake()
	}
	return n, nil
}

// waker writes one wake-up byte to a socket without waiting: a full
// socket already holds wake-ups the peer has yet to read, so it wakes
// anyway. Its write function is bound once (a closure per wake-up would
// be allocated); the reader and the writer each have their own.
type waker struct {
	raw syscall.RawConn
	err error
	f   func(fd uintptr) bool
}

func newWaker(raw syscall.RawConn) *waker {
	w := &waker{raw: raw}
	w.f = w.write
	return w
}

var wakeByte = []byte{1}

func (w *waker) write(fd uintptr) bool {
	for {
		_, w.err = syscall.Write(int(fd), wakeByte)
		if w.err != syscall.EINTR {
			return true
		}
	}
}

func (w *waker) wake() error {
	if err := w.raw.Write(w.f); err != nil {
		return err
	}
	err := w.err
	w.err = nil
	if err == syscall.EAGAIN {
		return nil
	}
	return err
}

// sleepFlag sets the reader's (or the writer's) sleeping flag and checks
// again whether its ring still has nothing for it: the peer either sees
// the flag or this side sees the peer's progress, never neither.
func (c *ringConn) sleepFlag(reader bool) (bool, error) {
	if !c.enter() {
		return false, net.ErrClosed
	}
	defer c.leave()
	var n uint64
	var err error
	f := c.out.writerWait
	if reader {
		f = c.in.readerWait
	}
	f.Store(1)
	if reader {
		n, err = c.readable()
	} else {
		n, err = c.writable()
	}
	if err != nil {
		return false, err
	}
	if n > 0 {
		f.CompareAndSwap(1, 0)
		return false, nil
	}
	return true, nil
}

// Read copies what the inbound ring holds, sleeping on the data socket
// while it is empty. It returns io.EOF once the peer ended and the ring is
// drained.
func (c *ringConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	// No spin before sleeping: a short Gosched spin showed no clear gain
	// in ferrybench's crossing on two shared cores, and it burns the core
	// the peer needs.
	for {
		n, err := c.readSome(p)
		if n > 0 || err != nil {
			return n, err
		}
		sleep, err := c.sleepFlag(true)
		if err != nil {
			return 0, err
		}
		if !sleep {
			continue
		}
		if _, err := c.data.Read(c.rbuf[:]); err != nil {
			// What the peer wrote before it ended is still read.
			if n, rerr := c.readSome(p); n > 0 || rerr != nil {
				return n, rerr
			}
			return 0, err
		}
	}
}

// Write copies all of p into the outbound ring, sleeping on the space
// socket while the ring is full, until the write deadline.
func (c *ringConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := 0
	for total < len(p) {
		n, err := c.writeSome(p[total:])
		total += n
		if err != nil {
			return total, err
		}
		if n > 0 {
			continue
		}
		sleep, err := c.sleepFlag(false)
		if err != nil {
			return total, err
		}
		if !sleep {
			continue
		}
		if _, err := c.space.Read(c.wbuf[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = syscall.EPIPE
			}
			return total, err
		}
	}
	return total, nil
}

// TryWrite copies what fits of b into the outbound ring without waiting
// (Mux's direct write).
func (c *ringConn) TryWrite(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.writeSome(b)
	if n < len(b) && n > 0 && err == nil {
		// The ring wrapped around its end with room at its start.
		m, err := c.writeSome(b[n:])
		return n + m, err
	}
	return n, err
}

// Close ends both wake-up sockets (the peer reads EOF; a sleeper here
// wakes) and unmaps the rings once no copy is in progress.
func (c *ringConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := c.data.Close()
	c.space.Close()
	c.mu.Lock()
	unmapRing(c.mem)
	c.mem = nil
	c.mu.Unlock()
	return err
}

func (c *ringConn) LocalAddr() net.Addr  { return c.data.LocalAddr() }
func (c *ringConn) RemoteAddr() net.Addr { return c.data.RemoteAddr() }

func (c *ringConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds a Read's sleep.
func (c *ringConn) SetReadDeadline(t time.Time) error { return c.data.SetReadDeadline(t) }

// SetWriteDeadline bounds a Write's sleep for space.
func (c *ringConn) SetWriteDeadline(t time.Time) error { return c.space.SetReadDeadline(t) }

// dropRing frees the rings and the space socket of a ring pair that Hello
// did not choose, leaving the data socket to carry the stream.
func (c *ringConn) dropRing() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	c.space.Close()
	c.mu.Lock()
	unmapRing(c.mem)
	c.mem = nil
	c.mu.Unlock()
}

// ringAppend writes b into the plugin → host ring of mem as its producer
// would, from the count the producer published, and returns the new count
// (a misbehaving test plugin's raw writes; see RawWriter).
func ringAppend(mem []byte, b []byte) (int, error) {
	size := (len(mem) - ringHeader) / 2
	var h ringHalf
	h.init(mem, 1, size)
	h.pos = h.written.Load()
	free := uint64(size) - (h.pos - h.read.Load())
	if uint64(len(b)) > free {
		return 0, errors.New("data ring: no room for the raw bytes")
	}
	off := h.pos & h.mask
	k := copy(h.data[off:], b)
	copy(h.data, b[k:])
	h.written.Store(h.pos + uint64(len(b)))
	return len(b), nil
}

// ringCorrupt sets the plugin → host ring's written count to one no ring
// can hold (RawWriter.CorruptRing).
func ringCorrupt(mem []byte) { u64At(mem, ringHeaderLen+offWritten).Add(1 << 40) }
