package portals

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/portal"
	"github.com/ferryhq/ferry/sdk/routing"
)

// SessionOptions tune the sessions of an inlet or outlet. Zero values take
// the defaults.
type SessionOptions struct {
	// ChunkSize is the most bytes one data message carries
	// (default DefaultChunkSize).
	ChunkSize int
	// Window is how many bytes a sender may have in flight before the
	// receiver has written them to its socket (default DefaultWindow). It
	// bounds the memory one session direction can hold.
	Window int
	// KeepaliveInterval is how often an idle session tells its peer it is
	// alive (default 5s).
	KeepaliveInterval time.Duration
	// KeepaliveTimeout ends a session when nothing arrives from the peer
	// for this long (default 30s).
	KeepaliveTimeout time.Duration
}

// Defaults. The chunk size was chosen by measurement (ferrybench -only
// portal prints a sweep). Single stream, 2-core machine, loopback: inlet and
// outlet on one node moved 1.7–2.0 GB/s at every size from 16 to 256 KiB
// (flat within noise); across the in-process TCP transport between two
// nodes 16 KiB gave 422 MB/s, 32–128 KiB 503–531 MB/s and 256 KiB 601 MB/s.
// 64 KiB keeps nearly all of that while a message stays small for lossy
// transports (a UDP message is fragmented, and losing any fragment loses
// the message and resets the session).
const (
	DefaultChunkSize         = 64 << 10
	DefaultWindow            = 1 << 20
	DefaultKeepaliveInterval = 5 * time.Second
	DefaultKeepaliveTimeout  = 30 * time.Second
)

// DefaultMaxSessions bounds the sessions of one inlet or outlet when their
// options leave MaxSessions zero.
const DefaultMaxSessions = 1024

// resetStream makes a TCP-backed stream end with RST instead of FIN when it
// is closed (an in-process *net.TCPConn, or a stream embedding one); a
// plugin stream is reset by the plugin when the host ends it without a fin.
func resetStream(st portal.Stream) {
	if l, ok := st.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
}

// MaxChunkSize bounds ChunkSize so a data message stays well below the
// transports' message limits.
const MaxChunkSize = 1 << 20

func (o SessionOptions) withDefaults() (SessionOptions, error) {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.KeepaliveInterval == 0 {
		o.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if o.KeepaliveTimeout == 0 {
		o.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	switch {
	case o.ChunkSize < 1 || o.ChunkSize > MaxChunkSize:
		return o, fmt.Errorf("chunk size %d outside 1..%d", o.ChunkSize, MaxChunkSize)
	case o.Window < o.ChunkSize || o.Window > maxWindow:
		return o, fmt.Errorf("window %d must be at least the chunk size (%d) and at most %d", o.Window, o.ChunkSize, maxWindow)
	case o.KeepaliveInterval < 0 || o.KeepaliveTimeout <= o.KeepaliveInterval:
		return o, fmt.Errorf("keepalive timeout (%s) must be longer than the keepalive interval (%s)", o.KeepaliveTimeout, o.KeepaliveInterval)
	}
	return o, nil
}

// counters are shared by all sessions of one inlet or outlet.
type counters struct {
	active   atomic.Int64
	total    atomic.Int64
	bytesOut atomic.Uint64 // read from local streams, sent into the portal
	bytesIn  atomic.Uint64 // arrived through the portal, written to local streams
}

// chunk is arrived data waiting to be written: data within the message's
// payload, which is recycled once written.
type chunk struct{ payload, data []byte }

// minReadBuffer is the smallest buffer a session reads its stream into.
const minReadBuffer = 4 << 10

// session is the worker at one end of a portal session. It owns one local
// stream. The worker's handler takes frames from the peer; a reader
// goroutine moves stream bytes to the peer within the peer's credit; a
// writer goroutine writes arrived bytes to the stream and returns credit;
// a keepalive goroutine detects a dead path.
type session struct {
	opts  SessionOptions
	stats *counters
	conn  portal.Stream
	log   hclog.Logger
	wg    *sync.WaitGroup
	// onEnd runs once when the session ends; err is nil for a clean end.
	onEnd func(s *session, err error)

	c    *node.Context
	addr routing.Address

	opened   chan struct{}
	openOnce sync.Once
	done     chan struct{}
	ending   atomic.Bool
	lastRecv atomic.Int64 // unix nanos of the last frame from the peer

	mu           sync.Mutex
	peer         routing.Route
	peerWindow   uint64
	sent         uint64 // bytes sent to the peer
	peerConsumed uint64 // bytes the peer reports written to its stream
	queue        []chunk
	spare        []chunk
	finRecv      bool
	recvBytes    uint64 // handler only
	recvSeq      uint64 // handler only
	lagMark      uint64 // handler only: a peer's sent count we have not caught up with
	lagSince     time.Time
	sentMsgs     atomic.Uint64 // data and fin messages sent

	consumed atomic.Uint64 // bytes written to the local stream
	sendDone atomic.Bool
	recvDone atomic.Bool

	credit chan struct{} // wakes the reader
	work   chan struct{} // wakes the writer
}

func newSession(opts SessionOptions, stats *counters, conn portal.Stream, log hclog.Logger, wg *sync.WaitGroup, onEnd func(*session, error)) *session {
	s := &session{
		opts: opts, stats: stats, conn: conn, log: log, wg: wg, onEnd: onEnd,
		opened: make(chan struct{}),
		done:   make(chan struct{}),
		credit: make(chan struct{}, 1),
		work:   make(chan struct{}, 1),
	}
	s.lastRecv.Store(time.Now().UnixNano())
	stats.active.Add(1)
	stats.total.Add(1)
	return s
}

// Initialize records the worker context so the session's goroutines can send.
func (s *session) Initialize(c *node.Context) error {
	s.c = c
	s.addr = c.Address()
	return nil
}

// Shutdown ends the session when its worker is stopped from outside (node
// shutdown, an owner closing).
func (s *session) Shutdown(*node.Context) error {
	s.end(errors.New("worker stopped"), true)
	return nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// HandleMessage takes one frame from the peer.
func (s *session) HandleMessage(c *node.Context, m *routing.Message) error {
	if re, ok := node.AsRemoteError(m); ok {
		// A node on the path could not deliver our frame: the path is
		// broken (a wrong outlet route, a dead link). End at once, without
		// answering an error with a message.
		s.end(fmt.Errorf("path failed: %w", re), false)
		return nil
	}
	f, err := decodeFrame(m.Payload)
	if err != nil {
		err = fmt.Errorf("frame from %s: %w", m.Return, err)
		s.end(err, true)
		return err
	}
	s.lastRecv.Store(time.Now().UnixNano())
	switch f.kind {
	case kindOpened:
		if f.version != ProtocolVersion {
			s.end(fmt.Errorf("outlet speaks portal protocol %d, this node speaks %d", f.version, ProtocolVersion), true)
			return nil
		}
		s.mu.Lock()
		if s.peer == nil {
			s.peer = m.Return.Clone()
			s.peerWindow = f.window
		}
		s.mu.Unlock()
		s.openOnce.Do(func() { close(s.opened) })
	case kindOpen:
		// A repeated open (the opener did not see our opened in time):
		// answer again.
		_ = s.c.Send(c, m.Return, (&frame{kind: kindOpened, version: ProtocolVersion, window: uint64(s.opts.Window)}).encode())
	case kindData, kindFin:
		if f.seq != s.recvSeq {
			s.end(fmt.Errorf("sequence gap: expected message %d, got %d (a message was lost on the route)", s.recvSeq, f.seq), true)
			return nil
		}
		s.recvSeq++
		s.mu.Lock()
		if s.finRecv {
			s.mu.Unlock()
			s.end(errors.New("peer sent after its fin"), true)
			return nil
		}
		if f.kind == kindFin {
			s.finRecv = true
		} else {
			s.recvBytes += uint64(len(f.data))
			if s.recvBytes-s.consumed.Load() > uint64(s.opts.Window) {
				s.mu.Unlock()
				s.end(fmt.Errorf("peer exceeded the flow-control window of %d bytes", s.opts.Window), true)
				return nil
			}
			s.queue = append(s.queue, chunk{payload: m.Payload, data: f.data})
		}
		s.mu.Unlock()
		signal(s.work)
	case kindCredit:
		if err := s.checkLag(f.sent); err != nil {
			s.end(err, true)
			return nil
		}
		s.mu.Lock()
		bad := f.consumed > s.sent
		if !bad && f.consumed > s.peerConsumed {
			s.peerConsumed = f.consumed
		}
		s.mu.Unlock()
		if bad {
			s.end(errors.New("peer granted credit for bytes never sent"), true)
			return nil
		}
		signal(s.credit)
	case kindClose:
		reason := f.reason
		if reason == "" {
			reason = "no reason given"
		}
		s.end(fmt.Errorf("peer closed the session: %s", reason), false)
	case kindPing, kindPong:
	}
	return nil
}

// checkLag compares the peer's count of sent messages with what arrived.
// On an in-order route a credit never overtakes the data sent before it, so
// staying behind means a message was lost; the grace of one keepalive
// interval covers routes that may reorder.
func (s *session) checkLag(peerSent uint64) error {
	switch {
	case peerSent <= s.recvSeq:
		s.lagMark = 0
	case s.lagMark == 0 || s.recvSeq >= s.lagMark:
		s.lagMark, s.lagSince = peerSent, time.Now()
	case time.Since(s.lagSince) > s.opts.KeepaliveInterval:
		return fmt.Errorf("message lost on the route: the peer sent %d messages, %d arrived", s.lagMark, s.recvSeq)
	}
	return nil
}

// start runs the data path once the peer is known.
func (s *session) start() {
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.readLoop() }()
	go func() { defer s.wg.Done(); s.writeLoop() }()
	go func() { defer s.wg.Done(); s.keepalive() }()
}

func (s *session) peerRoute() routing.Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// waitCredit blocks until the peer can take more bytes and returns how
// many, or 0 once the session ends.
func (s *session) waitCredit() int {
	for {
		s.mu.Lock()
		avail := int64(s.peerConsumed + s.peerWindow - s.sent)
		s.mu.Unlock()
		if avail > 0 {
			return int(min(avail, int64(s.opts.ChunkSize)))
		}
		select {
		case <-s.credit:
		case <-s.done:
			return 0
		}
	}
}

func (s *session) readLoop() {
	peer := s.peerRoute()
	var seq uint64
	size := minReadBuffer
	for {
		n := min(s.waitCredit(), size)
		if n == 0 {
			return
		}
		// A buffer per message: the payload goes to the peer as it is and
		// comes back through the pool once written out (see pool.go). Its
		// size follows the traffic, so a 64-byte request does not take a
		// 64 KiB buffer while bulk data still moves in full chunks.
		buf := getBuf(size)
		h := dataHeaderLen(seq)
		k, rerr := s.conn.Read(buf[h : h+n])
		if k == n {
			size = min(2*size, s.opts.ChunkSize)
		} else if k < size/4 {
			size = max(size/2, minReadBuffer)
		}
		if k > 0 {
			s.mu.Lock()
			s.sent += uint64(k)
			s.mu.Unlock()
			putDataHeader(buf, seq)
			if err := s.c.Send(s.c, peer, buf[:h+k]); err != nil {
				s.end(fmt.Errorf("send to %s: %w", peer, err), true)
				return
			}
			seq++
			s.sentMsgs.Store(seq)
			s.stats.bytesOut.Add(uint64(k))
		} else {
			putBuf(buf)
		}
		if rerr == io.EOF {
			if err := s.c.Send(s.c, peer, (&frame{kind: kindFin, seq: seq}).encode()); err != nil {
				s.end(fmt.Errorf("send fin to %s: %w", peer, err), true)
				return
			}
			s.sentMsgs.Store(seq + 1)
			s.sendDone.Store(true)
			s.maybeFinish()
			return
		}
		if rerr != nil {
			s.end(fmt.Errorf("read from local stream: %w", rerr), true)
			return
		}
	}
}

func (s *session) writeLoop() {
	peer := s.peerRoute()
	threshold := uint64(s.opts.Window / 4)
	var consumed, reported uint64
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.finRecv {
			s.mu.Unlock()
			select {
			case <-s.work:
			case <-s.done:
				return
			}
			s.mu.Lock()
		}
		items, fin := s.queue, s.finRecv
		s.queue, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		for i, it := range items {
			if _, err := s.conn.Write(it.data); err != nil {
				if !s.ending.Load() {
					s.end(fmt.Errorf("write to local stream: %w", err), true)
				}
				return
			}
			items[i] = chunk{}
			putBuf(it.payload)
			consumed += uint64(len(it.data))
			s.consumed.Store(consumed)
			s.stats.bytesIn.Add(uint64(len(it.data)))
			if consumed-reported >= threshold {
				reported = consumed
				s.sendCredit(peer, consumed)
			}
		}
		s.mu.Lock()
		if s.spare == nil {
			s.spare = items[:0]
		}
		s.mu.Unlock()
		if fin {
			if consumed > reported {
				s.sendCredit(peer, consumed)
			}
			if err := s.conn.CloseWrite(); err != nil && !s.ending.Load() {
				s.end(fmt.Errorf("half-close local stream: %w", err), true)
				return
			}
			s.recvDone.Store(true)
			s.maybeFinish()
			return
		}
	}
}

// sendCredit tells the peer how much we have written out. A failure is not
// fatal by itself: the peer may have finished cleanly, and a broken path is
// caught by the keepalive or by the next data send.
func (s *session) sendCredit(peer routing.Route, consumed uint64) {
	if err := s.c.Send(s.c, peer, (&frame{kind: kindCredit, consumed: consumed, sent: s.sentMsgs.Load()}).encode()); err != nil && s.log.IsDebug() {
		s.log.Debug("credit not delivered", "session", s.addr.String(), "error", err)
	}
}

func (s *session) keepalive() {
	peer := s.peerRoute()
	t := time.NewTicker(s.opts.KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if idle := time.Since(time.Unix(0, s.lastRecv.Load())); idle > s.opts.KeepaliveTimeout {
			s.end(fmt.Errorf("nothing from the peer for %s (keepalive timeout %s): the path is down", idle.Round(time.Millisecond), s.opts.KeepaliveTimeout), true)
			return
		}
		err := s.c.Send(s.c, peer, (&frame{kind: kindCredit, consumed: s.consumed.Load(), sent: s.sentMsgs.Load()}).encode())
		if err == nil {
			continue
		}
		s.mu.Lock()
		peerFinished := s.finRecv
		s.mu.Unlock()
		// Once the peer sent its fin it may end cleanly at any time, and a
		// keepalive then has nobody to reach; before that, a failed send
		// means the path is broken.
		if !peerFinished {
			s.end(fmt.Errorf("keepalive to %s: %w", peer, err), true)
			return
		}
	}
}

func (s *session) maybeFinish() {
	if s.sendDone.Load() && s.recvDone.Load() {
		s.end(nil, false)
	}
}

// end tears the session down once: stops its goroutines, optionally tells
// the peer why, closes the stream and stops the worker.
func (s *session) end(err error, notifyPeer bool) {
	if !s.ending.CompareAndSwap(false, true) {
		return
	}
	close(s.done)
	if peer := s.peerRoute(); notifyPeer && peer != nil && err != nil && s.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if serr := s.c.Send(ctx, peer, (&frame{kind: kindClose, reason: err.Error()}).encode()); serr != nil && s.log.IsDebug() {
			s.log.Debug("could not tell the peer the session closed", "session", s.addr.String(), "error", serr)
		}
		cancel()
	}
	if err != nil && s.peerRoute() != nil {
		// An established session failed: reset the local connection so
		// its client sees an error, not an end of file that looks like a
		// complete transfer. A clean end closes cleanly, and so does a
		// client that never got a session (no bytes moved).
		resetStream(s.conn)
	}
	s.conn.Close()
	if s.c != nil {
		s.c.Stop()
	}
	s.stats.active.Add(-1)
	if s.onEnd != nil {
		s.onEnd(s, err)
	}
}
