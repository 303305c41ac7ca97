package pluginwire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The data channel is a private byte stream between the host and one
// plugin process (a socketpair the host creates before exec; the plugin
// inherits its end as descriptor DataFD; when both sides offer
// CAPABILITY_DATA_RING the bytes move through shared-memory rings instead
// and the socketpair only wakes a sleeping peer: see ring_linux.go and
// DataChannel). It carries the data of every
// link (transports) and stream (portals) of that plugin, multiplexed in
// frames:
//
//	type u8 | id u64 big-endian | length u32 big-endian | payload
//
// Flow control is by credits, per id and direction: each side may have at
// most Window payload bytes of DATA unacknowledged on an id; the receiver
// returns CREDIT as its consumer takes the data, so a slow consumer slows
// its sender end to end and nothing is buffered without limit. The host
// treats everything that arrives as untrusted: an unknown type, a length
// over MaxFrame, DATA beyond the credit granted, or any frame for an id it
// never opened or already closed fails the whole channel (the host then
// restarts the plugin); so does a write blocked for StallTimeout.

// DataEnv names the environment variable that tells a plugin which
// descriptor is its data channel.
const DataEnv = "FERRY_DATA_FD"

// DataFD is the descriptor the data channel has in the plugin (the first
// of exec.Cmd.ExtraFiles).
const DataFD = 3

// Frame types.
const (
	frameData   = 1 // payload: a batch (transports) or bytes (portals)
	frameCredit = 2 // payload: u32 bytes consumed
	frameEOF    = 3 // the sender sends no more DATA on id (clean end)
	frameError  = 4 // payload: why the sender's side broke
	frameClose  = 5 // the sender forgets id; it sends nothing more on it
	frameOpen   = 6 // host → plugin: start moving id's data
	framePing   = 7 // answer with PONG (id 0)
	framePong   = 8
)

// headerSize is the size of a frame header.
const headerSize = 13

// maxErrorText bounds an ERROR frame's payload.
const maxErrorText = 4 << 10

// ErrProtocol is what a data channel fails with when its peer breaks the
// protocol.
var ErrProtocol = errors.New("data channel protocol violation")

// ErrChannelClosed is what streams of a closed data channel fail with.
var ErrChannelClosed = errors.New("data channel closed")

// MuxConfig configures a Mux. Zero values take the documented defaults.
type MuxConfig struct {
	// Window is how many payload bytes may be unacknowledged per id and
	// direction (default 4 MiB). It is raised to MaxFrame so that the
	// largest frame always fits.
	Window int
	// MaxFrame is the largest DATA payload accepted (default FrameTarget
	// plus FrameOverhead).
	MaxFrame int
	// StallTimeout fails the channel when one write to the peer stays
	// blocked this long: the peer stopped reading (default 15s).
	StallTimeout time.Duration
	// Keepalive, on the host side, sends PING when the peer has been
	// quiet for a quarter of StallTimeout and fails the channel when it
	// stays silent for StallTimeout: a plugin that stopped reading (or
	// runs no more) cannot answer, while a link that is merely slow keeps
	// its credit-based backpressure for as long as it likes.
	Keepalive bool
	// OnOpen, on the plugin side, is called (from the reader goroutine; it
	// must not block) when the host opens id.
	OnOpen func(id uint64)
	// Logger receives debug lines; default none.
	Logger hclog.Logger
}

func (c *MuxConfig) validate() {
	if c.MaxFrame <= 0 {
		c.MaxFrame = FrameTarget + FrameOverhead
	}
	if c.Window <= 0 {
		c.Window = 4 << 20
	}
	c.Window = max(c.Window, c.MaxFrame)
	if c.StallTimeout <= 0 {
		c.StallTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// Mux multiplexes streams over one data channel connection.
type Mux struct {
	conn net.Conn
	cfg  MuxConfig

	mu      sync.Mutex
	streams map[uint64]*MuxStream
	err     error
	failed  chan struct{}

	wmu     sync.Mutex
	pending [][]byte // encoded frames waiting for the writer
	bufs    []*[]byte
	// writing is set while one goroutine (the writer, or a sender writing
	// its frame itself) writes to conn; frames queued meanwhile wait in
	// pending, and whoever writes wakes the writer for them when done.
	writing bool
	wake    chan struct{}
	done    chan struct{} // writer and reader ended
	wg      sync.WaitGroup
	// try, when set, writes what it can of a frame without blocking, so
	// that a sender need not wake the writer goroutine (see enqueueBuf):
	// the socket's non-blocking write, or a copy into the ring.
	try func([]byte) (int, error)
	// gap is directGap, or 0 on rings, where a direct write costs no
	// system call and wakes the peer only if it sleeps.
	gap time.Duration
	// raw is the socket tryWrite writes to.
	raw syscall.RawConn
	// direct is tryWrite's state, reused (a closure per write would be
	// allocated); only the goroutine that set writing uses it.
	direct directWrite
	// lastWrite is when the last write to conn started (a sender's) or
	// ended (the writer's), as time since epoch (monotonic).
	lastWrite time.Duration
	epoch     time.Time
	// credit is the reader's scratch space for a CREDIT payload.
	credit [4]byte

	lastRecv atomic.Int64 // unix nanoseconds of the last frame read
}

// NewMux starts multiplexing on conn. Close (or a failure) ends it.
func NewMux(conn net.Conn, cfg MuxConfig) *Mux {
	cfg.validate()
	m := &Mux{
		conn:    conn,
		cfg:     cfg,
		streams: map[uint64]*MuxStream{},
		failed:  make(chan struct{}),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		epoch:   time.Now(),
	}
	if tw, ok := conn.(tryWriter); ok {
		m.try = tw.TryWrite
	} else if sc, ok := conn.(syscall.Conn); ok && directWrites {
		if raw, err := sc.SyscallConn(); err == nil {
			m.raw = raw
			m.direct.f = m.direct.write
			m.try = m.tryWrite
			m.gap = directGap
		}
	}
	m.lastRecv.Store(time.Now().UnixNano())
	m.wg.Add(2)
	go m.reader()
	go m.writer()
	if cfg.Keepalive {
		m.wg.Add(1)
		go m.keepalive()
	}
	go func() { m.wg.Wait(); close(m.done) }()
	return m
}

// Failed is closed once the channel failed or was closed; Err says why.
func (m *Mux) Failed() <-chan struct{} { return m.failed }

// Err is why the channel ended (nil while it works).
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Ring reports whether the channel's bytes move through shared-memory
// rings (else through its socket).
func (m *Mux) Ring() bool {
	_, ok := m.conn.(*ringConn)
	return ok
}

// Window is the per-id credit window.
func (m *Mux) Window() int { return m.cfg.Window }

// fail ends the channel with err (the first reason wins) and every stream
// with it.
func (m *Mux) fail(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	ss := m.streams
	m.streams = map[uint64]*MuxStream{}
	close(m.failed)
	m.mu.Unlock()
	m.conn.Close()
	for _, s := range ss {
		s.wakeAll()
	}
}

// keepalive pings a quiet peer and fails the channel when it stays silent
// for StallTimeout.
func (m *Mux) keepalive() {
	defer m.wg.Done()
	every := max(m.cfg.StallTimeout/4, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.failed:
			return
		}
		quiet := time.Since(time.Unix(0, m.lastRecv.Load()))
		if quiet > m.cfg.StallTimeout {
			m.fail(fmt.Errorf("the peer has not answered on its data channel for %s: %w", quiet.Round(time.Millisecond), ErrProtocol))
			return
		}
		if quiet >= every {
			m.enqueue(framePing, 0, nil)
		}
	}
}

// Fail ends the channel with err, for a violation its owner found above
// the framing (a malformed batch inside a DATA frame).
func (m *Mux) Fail(err error) { m.fail(err) }

// Close ends the channel and waits for its goroutines.
func (m *Mux) Close() error {
	m.fail(ErrChannelClosed)
	<-m.done
	m.wmu.Lock()
	for _, b := range m.bufs {
		Frames.Put(b)
	}
	m.bufs, m.pending = nil, nil
	m.wmu.Unlock()
	return nil
}

// Open registers id and returns its stream. The host opens an id before it
// sends OPEN for it (SendOpen), so the plugin's first frames find it; the
// plugin opens an id when the host asks (MuxConfig.OnOpen).
func (m *Mux) Open(id uint64) (*MuxStream, error) {
	s := &MuxStream{m: m, id: id, credit: m.cfg.Window, rsig: make(chan struct{}, 1), wsig: make(chan struct{}, 1)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if m.streams[id] != nil {
		return nil, fmt.Errorf("data channel: id %d is already open", id)
	}
	m.streams[id] = s
	return s, nil
}

// SendOpen asks the plugin to start moving id's data (host side).
func (m *Mux) SendOpen(id uint64) error { return m.enqueue(frameOpen, id, nil) }

// enqueue queues one frame for the writer.
func (m *Mux) enqueue(typ byte, id uint64, payload []byte) error {
	bp := Frames.Get(headerSize + len(payload))
	b := *bp
	putHeader(b, typ, id, len(payload))
	copy(b[headerSize:], payload)
	return m.enqueueBuf(bp)
}

func putHeader(b []byte, typ byte, id uint64, n int) {
	b[0] = typ
	binary.BigEndian.PutUint64(b[1:9], id)
	binary.BigEndian.PutUint32(b[9:13], uint32(n))
}

// enqueueBuf sends an encoded frame. When nothing is queued or being
// written, the caller writes it itself, without blocking: a frame that
// fits in the socket buffer then costs one system call and no goroutine
// hand-off (a writer wake-up was a good part of each crossing's latency).
// Otherwise, or for what did not fit, the writer goroutine writes it, many
// frames per system call: under load batches stay the unit of work.
func (m *Mux) enqueueBuf(bp *[]byte) error {
	select {
	case <-m.failed:
		Frames.Put(bp)
		return m.Err()
	default:
	}
	m.wmu.Lock()
	now := time.Since(m.epoch)
	if m.try != nil && !m.writing && len(m.pending) == 0 && now-m.lastWrite > m.gap {
		m.writing = true
		m.lastWrite = now
		m.wmu.Unlock()
		n, err := m.try(*bp)
		m.wmu.Lock()
		m.writing = false
		if err != nil {
			m.wmu.Unlock()
			Frames.Put(bp)
			m.fail(fmt.Errorf("data channel write: %w", err))
			return m.Err()
		}
		if n == len(*bp) {
			Frames.Put(bp)
		} else {
			// The rest goes first: frames queued meanwhile follow it.
			m.pending = append(m.pending, nil)
			copy(m.pending[1:], m.pending)
			m.pending[0] = (*bp)[n:]
			m.bufs = append(m.bufs, bp)
		}
		more := len(m.pending) > 0
		m.wmu.Unlock()
		if more {
			wake(m.wake)
		}
		return nil
	}
	m.pending = append(m.pending, *bp)
	m.bufs = append(m.bufs, bp)
	// A writer busy now looks at pending again before it stops.
	busy := m.writing
	m.wmu.Unlock()
	if !busy {
		wake(m.wake)
	}
	return nil
}

// ringReadBuffer is the Mux reader's buffer on rings. A socket is read
// through a large buffer, many frames per system call; a read from a ring
// is a copy, so a small buffer still takes many small frames per read,
// while most of a large payload, read past it, is copied straight from
// the ring into its payload buffer (measured in-process, 64 KiB frames:
// 15% less CPU than with 256 KiB; 64 B frames: within noise).
const ringReadBuffer = 16 << 10

// tryWriter is a stream that can take part of a write without waiting
// (the ring).
type tryWriter interface {
	TryWrite([]byte) (int, error)
}

// directGap: a sender writes its frame itself only when the last write
// is at least this old. Frames that follow each other closer than that (a
// stream under load) go to the writer goroutine, which writes them many
// per system call, so that the peer's reader, and every goroutine after
// it, also wakes once per batch rather than once per frame (writing each
// frame directly cost 40% more CPU per 64 B message under load). One
// message at a time, a request and its reply, is written at once.
const directGap = 10 * time.Microsecond

// writer writes queued frames, many per system call.
func (m *Mux) writer() {
	defer m.wg.Done()
	var out, outBuf net.Buffers
	var bufs []*[]byte
	for {
		select {
		case <-m.wake:
		case <-m.failed:
			return
		}
		for {
			m.wmu.Lock()
			if m.writing || len(m.pending) == 0 {
				// A sender writing directly wakes the writer when done.
				m.wmu.Unlock()
				break
			}
			m.writing = true
			// WriteTo consumes out; outBuf keeps its backing array.
			outBuf, m.pending = append(outBuf[:0], m.pending...), m.pending[:0]
			bufs, m.bufs = append(bufs[:0], m.bufs...), m.bufs[:0]
			m.wmu.Unlock()
			out = outBuf
			m.conn.SetWriteDeadline(time.Now().Add(m.cfg.StallTimeout))
			_, err := out.WriteTo(m.conn)
			clear(outBuf)
			for i, b := range bufs {
				Frames.Put(b)
				bufs[i] = nil
			}
			m.wmu.Lock()
			m.writing = false
			m.lastWrite = time.Since(m.epoch)
			m.wmu.Unlock()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					err = fmt.Errorf("the peer stopped reading its data channel for %s: %w", m.cfg.StallTimeout, ErrProtocol)
				} else {
					err = fmt.Errorf("data channel write: %w", err)
				}
				m.fail(err)
				return
			}
		}
	}
}

// reader reads and dispatches frames until the channel ends.
func (m *Mux) reader() {
	defer m.wg.Done()
	size := 256 << 10
	if m.Ring() {
		size = ringReadBuffer
	}
	r := bufio.NewReaderSize(m.conn, size)
	var hdr [headerSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("data channel: peer closed it: %w", ErrChannelClosed)
			} else {
				err = fmt.Errorf("data channel read: %w", err)
			}
			m.fail(err)
			return
		}
		m.lastRecv.Store(time.Now().UnixNano())
		typ, id, n := hdr[0], binary.BigEndian.Uint64(hdr[1:9]), binary.BigEndian.Uint32(hdr[9:13])
		if err := m.dispatch(r, typ, id, n); err != nil {
			m.fail(err)
			return
		}
	}
}

func (m *Mux) dispatch(r *bufio.Reader, typ byte, id uint64, n uint32) error {
	var limit uint32
	switch typ {
	case frameData:
		limit = uint32(m.cfg.MaxFrame)
	case frameCredit:
		if n != 4 {
			return fmt.Errorf("CREDIT frame of %d bytes for id %d: %w", n, id, ErrProtocol)
		}
		limit = 4
	case frameError:
		limit = maxErrorText
	case frameEOF, frameClose, frameOpen, framePing, framePong:
		limit = 0
	default:
		return fmt.Errorf("unknown frame type %d: %w", typ, ErrProtocol)
	}
	if n > limit {
		return fmt.Errorf("frame type %d for id %d claims %d bytes, over the limit %d: %w", typ, id, n, limit, ErrProtocol)
	}
	switch typ {
	case framePing:
		return m.enqueue(framePong, 0, nil)
	case framePong:
		return nil
	}
	if typ == frameOpen {
		if m.cfg.OnOpen == nil {
			return fmt.Errorf("OPEN frame for id %d from a plugin: %w", id, ErrProtocol)
		}
		m.cfg.OnOpen(id)
		return nil
	}
	m.mu.Lock()
	s := m.streams[id]
	m.mu.Unlock()
	if s == nil {
		return fmt.Errorf("frame type %d for id %d, which is not open: %w", typ, id, ErrProtocol)
	}
	switch typ {
	case frameData:
		bp := Frames.Get(int(n))
		if _, err := io.ReadFull(r, *bp); err != nil {
			Frames.Put(bp)
			return fmt.Errorf("data channel read: %w", err)
		}
		return s.deliver(bp)
	case frameCredit:
		b := m.credit[:]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("data channel read: %w", err)
		}
		return s.addCredit(int(binary.BigEndian.Uint32(b)))
	case frameError:
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("data channel read: %w", err)
		}
		return s.remoteEnd(errors.New(string(b)))
	case frameEOF:
		return s.remoteEnd(io.EOF)
	case frameClose:
		return s.remoteClose()
	}
	return nil
}

// MuxStream is one id's data, both ways.
type MuxStream struct {
	m  *Mux
	id uint64

	mu        sync.Mutex
	credit    int           // send credit left
	in        []*[]byte     // received DATA payloads, in order
	inBytes   int           // their total size (≤ window)
	owed      int           // consumed bytes whose credit is not sent yet
	cur       *[]byte       // the payload last returned by Read
	end       error         // io.EOF or the peer's error, after the queued data
	sentEnd   bool          // EOF or ERROR sent
	sentClose bool          // CLOSE sent: local side done
	gotClose  bool          // CLOSE received: the peer sends nothing more
	rsig      chan struct{} // wakes a Read: data, an end, a close
	wsig      chan struct{} // wakes a WriteFrame: credit, a close
	ctimer    *time.Timer   // Read's creditDelay timer, reused
}

// creditDelay is how long a Read waits with credit owed that a sender of
// a frame near the window's size may be waiting for before it returns it
// (see release).
const creditDelay = time.Millisecond

// ID is the stream's id.
func (s *MuxStream) ID() uint64 { return s.id }

func (s *MuxStream) wakeAll() {
	wake(s.rsig)
	wake(s.wsig)
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *MuxStream) deliver(bp *[]byte) error {
	s.mu.Lock()
	if s.end != nil || s.gotClose {
		s.mu.Unlock()
		Frames.Put(bp)
		return fmt.Errorf("DATA for id %d after its end: %w", s.id, ErrProtocol)
	}
	if s.inBytes+len(*bp) > s.m.cfg.Window {
		s.mu.Unlock()
		Frames.Put(bp)
		return fmt.Errorf("DATA for id %d beyond the credit granted (%d + %d > %d): %w", s.id, s.inBytes, len(*bp), s.m.cfg.Window, ErrProtocol)
	}
	if s.sentClose {
		// Closed here; the peer has not seen it yet. Return the credit so
		// its sender never waits on a reader that is gone.
		s.mu.Unlock()
		Frames.Put(bp)
		return nil
	}
	s.in = append(s.in, bp)
	s.inBytes += len(*bp)
	s.mu.Unlock()
	wake(s.rsig)
	return nil
}

func (s *MuxStream) addCredit(n int) error {
	s.mu.Lock()
	s.credit += n
	over := s.credit > s.m.cfg.Window
	s.mu.Unlock()
	if over {
		return fmt.Errorf("CREDIT for id %d beyond the window: %w", s.id, ErrProtocol)
	}
	wake(s.wsig)
	return nil
}

func (s *MuxStream) remoteEnd(err error) error {
	s.mu.Lock()
	if s.end != nil || s.gotClose {
		s.mu.Unlock()
		return fmt.Errorf("second end for id %d: %w", s.id, ErrProtocol)
	}
	s.end = err
	s.mu.Unlock()
	s.wakeAll()
	return nil
}

func (s *MuxStream) remoteClose() error {
	s.mu.Lock()
	if s.gotClose {
		s.mu.Unlock()
		return fmt.Errorf("second CLOSE for id %d: %w", s.id, ErrProtocol)
	}
	s.gotClose = true
	forget := s.sentClose
	s.mu.Unlock()
	if forget {
		s.forget()
	}
	s.wakeAll()
	return nil
}

func (s *MuxStream) forget() {
	s.m.mu.Lock()
	if s.m.streams[s.id] == s {
		delete(s.m.streams, s.id)
	}
	s.m.mu.Unlock()
}

// PeerClosed reports whether the peer sent CLOSE (it sends nothing more).
func (s *MuxStream) PeerClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gotClose
}

// errLocked says why the stream cannot be used, or nil.
func (s *MuxStream) errLocked() error {
	select {
	case <-s.m.failed:
		return s.m.Err()
	default:
	}
	if s.sentClose {
		return ErrChannelClosed
	}
	return nil
}

// WriteFrame sends one DATA frame of n payload bytes that fill writes
// into, waiting for credit (backpressure) until ctx ends. n must be at
// most the window.
func (s *MuxStream) WriteFrame(ctx context.Context, n int, fill func([]byte)) error {
	if n > s.m.cfg.Window || n > s.m.cfg.MaxFrame {
		return fmt.Errorf("data frame of %d bytes over the limit %d", n, min(s.m.cfg.Window, s.m.cfg.MaxFrame))
	}
	for {
		s.mu.Lock()
		if err := s.errLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
		if s.sentEnd {
			s.mu.Unlock()
			return ErrChannelClosed
		}
		if s.gotClose {
			s.mu.Unlock()
			return fmt.Errorf("the peer closed id %d: %w", s.id, ErrChannelClosed)
		}
		if s.credit >= n {
			s.credit -= n
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
		select {
		case <-s.wsig:
		case <-s.m.failed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	bp := Frames.Get(headerSize + n)
	putHeader(*bp, frameData, s.id, n)
	fill((*bp)[headerSize:])
	return s.m.enqueueBuf(bp)
}

// Read returns the next DATA payload, valid until the next Read or Close
// (which return its credit to the sender). It returns io.EOF after the
// peer's clean end, the peer's error after a broken one.
func (s *MuxStream) Read(ctx context.Context) ([]byte, error) {
	s.release()
	for {
		s.mu.Lock()
		if err := s.errLocked(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		if len(s.in) > 0 {
			bp := s.in[0]
			s.in[0] = nil
			if len(s.in) == 1 {
				s.in = s.in[:0] // reuse the backing array from its start
			} else {
				s.in = s.in[1:]
			}
			s.cur = bp
			s.mu.Unlock()
			return *bp, nil
		}
		if s.end != nil {
			err := s.end
			s.mu.Unlock()
			return nil, err
		}
		if s.gotClose {
			s.mu.Unlock()
			return nil, fmt.Errorf("the peer closed id %d: %w", s.id, ErrChannelClosed)
		}
		// Nothing queued: the sender may wait for the credit owed only if
		// its next frame is larger than what the owed bytes leave it.
		var expire <-chan time.Time
		if s.owed > 0 && s.owed > s.m.cfg.Window-s.m.cfg.MaxFrame && !s.sentClose {
			if s.ctimer == nil {
				s.ctimer = time.NewTimer(creditDelay)
			} else {
				s.ctimer.Reset(creditDelay)
			}
			expire = s.ctimer.C
		}
		s.mu.Unlock()
		select {
		case <-s.rsig:
		case <-s.m.failed:
		case <-ctx.Done():
			if expire != nil {
				s.ctimer.Stop()
			}
			return nil, ctx.Err()
		case <-expire:
			s.returnOwed()
			expire = nil
		}
		if expire != nil {
			s.ctimer.Stop()
		}
	}
}

// returnOwed sends all the credit owed.
func (s *MuxStream) returnOwed() {
	s.mu.Lock()
	owed := s.owed
	s.owed = 0
	if s.sentClose {
		owed = 0
	}
	s.mu.Unlock()
	s.sendCredit(owed)
}

func (s *MuxStream) sendCredit(n int) {
	if n > 0 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(n))
		s.m.enqueue(frameCredit, s.id, b[:])
	}
}

// release returns the credit of the payload last returned by Read. Credit
// goes back in batches of a quarter window, or of a sixteenth once the
// reader has nothing queued, so small messages one at a time (a request
// and its reply) cost no CREDIT frame and no wake-up of the peer's reader
// each. A sender waits for credit only when less than its next frame is
// left: with nothing queued and nothing in flight, only when more than
// Window-MaxFrame is owed (a frame of nearly the whole window). Read
// returns that credit once it has waited creditDelay for more data, so
// such a sender always gets it once the reader caught up.
func (s *MuxStream) release() {
	s.mu.Lock()
	bp := s.cur
	s.cur = nil
	if bp == nil {
		s.mu.Unlock()
		return
	}
	n := len(*bp)
	s.inBytes -= n
	s.owed += n
	owed := 0
	w := s.m.cfg.Window
	if !s.sentClose && (s.owed >= w/4 || len(s.in) == 0 && s.owed >= w/16) {
		owed, s.owed = s.owed, 0
	}
	s.mu.Unlock()
	Frames.Put(bp)
	s.sendCredit(owed)
}

// CloseWrite tells the peer that no more data follows (a clean end).
func (s *MuxStream) CloseWrite() error { return s.sendEnd(frameEOF, nil) }

// Fail tells the peer this side broke, with why.
func (s *MuxStream) Fail(why error) error {
	msg := why.Error()
	if len(msg) > maxErrorText {
		msg = msg[:maxErrorText]
	}
	return s.sendEnd(frameError, []byte(msg))
}

func (s *MuxStream) sendEnd(typ byte, payload []byte) error {
	s.mu.Lock()
	if s.sentEnd || s.sentClose {
		s.mu.Unlock()
		return nil
	}
	s.sentEnd = true
	s.mu.Unlock()
	return s.m.enqueue(typ, s.id, payload)
}

// Close sends CLOSE and releases what the stream holds; the id is
// forgotten once the peer's CLOSE arrived too.
func (s *MuxStream) Close() error {
	s.mu.Lock()
	// The payload Read returned last may still be in use by a reader
	// racing this Close: leave it to the garbage collector.
	s.cur = nil
	if s.sentClose {
		s.mu.Unlock()
		return nil
	}
	s.sentClose = true
	in := s.in
	s.in, s.inBytes = nil, 0
	forget := s.gotClose
	s.mu.Unlock()
	for _, bp := range in {
		Frames.Put(bp)
	}
	err := s.m.enqueue(frameClose, s.id, nil)
	if forget {
		s.forget()
	}
	s.wakeAll()
	return err
}
