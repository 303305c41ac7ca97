package portals

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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
	// bounds the memory one session direction can hold: the sender's
	// retransmission buffer and the receiver's reordering buffer.
	Window int
	// KeepaliveInterval is how often an idle session tells its peer it is
	// alive (default 5s). A paused session probes its path more often.
	KeepaliveInterval time.Duration
	// SessionTimeout ends an established session when nothing arrives
	// from the peer for this long (default 30s). Until then a session
	// whose path fails (a lost link, a relay restarting, an error from a
	// node on the path) pauses and keeps retransmitting with backoff; past
	// it, the local connection is reset and the reason logged.
	SessionTimeout time.Duration
}

// Defaults. The chunk size was chosen by measurement (ferrybench -only
// portal prints a sweep). Single stream, 2-core machine, loopback: inlet and
// outlet on one node moved 1.7–2.0 GB/s at every size from 16 to 256 KiB
// (flat within noise); across the in-process TCP transport between two
// nodes 16 KiB gave 422 MB/s, 32–128 KiB 503–531 MB/s and 256 KiB 601 MB/s.
// 64 KiB keeps nearly all of that while a message stays small for lossy
// transports (a UDP message is fragmented, and losing any fragment loses
// the message, which is then retransmitted whole).
const (
	DefaultChunkSize         = 64 << 10
	DefaultWindow            = 1 << 20
	DefaultKeepaliveInterval = 5 * time.Second
	DefaultSessionTimeout    = 30 * time.Second
)

// Retransmission timer bounds (RFC 6298 with a lower floor than its 1 s:
// routes here are often one machine or one site).
const (
	// minRTO is QUIC-like rather than TCP's 200 ms: on a fast path a
	// 200 ms floor is thousands of round trips, and with 1% datagram loss
	// on a UDP hop it held a portal at 0.01 of its loss-free throughput
	// (ferrybench mixed); acks go out as soon as data arrives, so a low
	// floor costs few spurious retransmissions.
	minRTO     = 20 * time.Millisecond
	maxRTO     = 3 * time.Second
	initialRTO = time.Second
	// maxInFlight bounds the messages in flight in one direction (tiny
	// writes would otherwise fill the window with many small messages), and
	// with it how far ahead of the next expected message a receiver keeps.
	maxInFlight = 1024
	// dupThresh: a message with this many acknowledged messages after it
	// is taken as lost and retransmitted at once (fast retransmit).
	dupThresh = 3
	// Delayed acks (as TCP's, RFC 1122 4.2.3.2): a receiver acknowledges
	// every ackEvery-th message that arrives in order, anything else at
	// once, and otherwise within ackDelay, unless data it sends back first
	// carries the ack (every data message does). Request/response traffic
	// then needs no ack messages: one ack message per data message cost
	// each 64-byte round trip two more messages through every node and
	// plugin on the path. ackDelay stays far below minRTO so a delayed ack
	// never makes the sender retransmit.
	ackEvery = 2
	ackDelay = time.Millisecond
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
	if o.SessionTimeout == 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	switch {
	case o.ChunkSize < 1 || o.ChunkSize > MaxChunkSize:
		return o, fmt.Errorf("chunk size %d outside 1..%d", o.ChunkSize, MaxChunkSize)
	case o.Window < o.ChunkSize || o.Window > maxWindow:
		return o, fmt.Errorf("window %d must be at least the chunk size (%d) and at most %d", o.Window, o.ChunkSize, maxWindow)
	case o.KeepaliveInterval < 0 || o.SessionTimeout <= o.KeepaliveInterval:
		return o, fmt.Errorf("session timeout (%s) must be longer than the keepalive interval (%s)", o.SessionTimeout, o.KeepaliveInterval)
	}
	return o, nil
}

// counters are shared by all sessions of one inlet or outlet.
type counters struct {
	active   atomic.Int64
	total    atomic.Int64
	bytesOut atomic.Uint64 // read from local streams, sent into the portal
	bytesIn  atomic.Uint64 // arrived through the portal, written to local streams
	// retransmits counts messages sent again; duplicates counts messages
	// that arrived twice and were dropped.
	retransmits atomic.Uint64
	duplicates  atomic.Uint64
}

// chunk is arrived data waiting to be written: data within the message's
// payload, which is recycled once written.
type chunk struct{ payload, data []byte }

// rxFrame is a message that arrived ahead of the next expected one.
type rxFrame struct {
	payload, data []byte
	fin           bool
}

// txFrame is a sent message kept until the peer acknowledges it.
type txFrame struct {
	seq uint64
	// wire is our own copy of the frame: what was handed to Send belongs
	// to the node (on one node the receiver recycles it).
	wire   []byte
	sentAt time.Time
	retx   bool // retransmitted at least once: no RTT sample from it (Karn)
	sacked bool
	resend bool // SACK shows it lost: retransmit at once
	unsent bool // read before the session opened: sent once it does
}

// minReadBuffer is the smallest buffer a session reads its stream into.
const minReadBuffer = 4 << 10

// session is the worker at one end of a portal session. It owns one local
// stream. The worker's handler takes frames from the peer; a reader
// goroutine moves stream bytes to the peer within the peer's credit and
// keeps each message until it is acknowledged; a writer goroutine writes
// arrived bytes to the stream in order; a control goroutine sends acks,
// retransmits, keeps the session alive and times it out.
// Chunks shrink on loss: a message is lost whole when any of its datagrams
// is (a 64 KiB chunk is ~45 UDP datagrams, so 1% datagram loss loses a
// third of them), so a session that retransmits halves its chunk, down to
// minLossChunk, and doubles it again after chunkRegrow without a
// retransmission.
const (
	minLossChunk = 4 << 10
	chunkRegrow  = time.Second
)

// lingerReack is when a finished session repeats its last ack while it
// lingers (it lingers at least 2*minRTO).
const lingerReack = 10 * time.Millisecond

type session struct {
	opts  SessionOptions
	stats *counters
	conn  portal.Stream
	log   hclog.Logger
	wg    *sync.WaitGroup
	// onEnd runs once when the session ends; err is nil for a clean end.
	onEnd func(s *session, err error)
	// base is the inlet's configured route to its outlet (nil at an
	// outlet): a paused inlet sends along it, with the outlet service
	// replaced by the outlet session, to find a way around stale links.
	base routing.Route
	// earlyOpen is the inlet's open frame: its first message, read before
	// the outlet answers, goes along base in a second open carrying the
	// data (early data), so it does not wait a round trip for opened.
	earlyOpen []byte

	c    *node.Context
	addr routing.Address

	opened   chan struct{}
	openOnce sync.Once
	done     chan struct{}
	ending   atomic.Bool
	started  atomic.Bool
	lastRecv atomic.Int64 // unix nanos of the last frame from the peer
	ackDue   atomic.Bool  // send an ack now
	// ackPending: something arrived that no ack has covered yet; ackTimer
	// turns it into ackDue after ackDelay.
	ackPending atomic.Bool
	ackTimer   *time.Timer
	// rtxTimer wakes the control loop when the first message sent after
	// all were acknowledged may need retransmitting: the reader arms it
	// instead of waking the control loop for every such message (on a
	// request/response stream, every message), which cost a goroutine
	// wake-up each.
	rtxTimer *time.Timer
	// chunkCap (0: opts.ChunkSize) and lastShrink: see shrinkChunks.
	chunkCap   atomic.Int64
	lastShrink atomic.Int64
	recvDone   atomic.Bool
	consumed   atomic.Uint64 // bytes written to the local stream

	mu         sync.Mutex
	peer       routing.Route
	peerWindow uint64
	// Sending side.
	sent         uint64 // data bytes sent (first transmissions)
	peerConsumed uint64 // bytes the peer reports written to its stream
	nextSeq      uint64
	out          []*txFrame // unacknowledged, seq ascending and contiguous
	hasRTT       bool
	srtt, rttvar time.Duration
	rto          time.Duration // from the measured round trip
	backoff      time.Duration // the timer now: rto, doubled per timeout
	paused       bool
	openSentAt   time.Time // the first open: opened gives the first RTT sample
	openResent   bool      // no sample then (Karn)
	pathErr      error
	finSent      bool
	finAcked     bool
	lingerUntil  time.Time
	// Receiving side.
	recvSeq   uint64 // next expected message
	ooo       map[uint64]rxFrame
	oooBytes  uint64
	oooMax    uint64
	recvBytes uint64 // bytes delivered in order to the writer
	finSeen   bool
	finSeq    uint64
	finRecv   bool
	unacked   int // messages delivered in order since the last ack sent
	queue     []chunk
	spare     []chunk
	// writing is held by whoever writes to the local stream: the writer
	// goroutine, or a handler writing one chunk itself (flush).
	writing bool
	// reported is the consumed count last reported in an ack; only the
	// holder of writing uses it.
	reported uint64

	credit chan struct{} // wakes the reader
	work   chan struct{} // wakes the writer
	wake   chan struct{} // wakes the control loop
}

func newSession(opts SessionOptions, stats *counters, conn portal.Stream, log hclog.Logger, wg *sync.WaitGroup, onEnd func(*session, error)) *session {
	s := &session{
		opts: opts, stats: stats, conn: conn, log: log, wg: wg, onEnd: onEnd,
		opened:  make(chan struct{}),
		done:    make(chan struct{}),
		credit:  make(chan struct{}, 1),
		work:    make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		ooo:     map[uint64]rxFrame{},
		rto:     initialRTO,
		backoff: initialRTO,
	}
	s.ackTimer = time.AfterFunc(time.Hour, func() {
		if s.ackPending.Load() {
			s.ackDue.Store(true)
			signal(s.wake)
		}
	})
	s.ackTimer.Stop()
	s.rtxTimer = time.AfterFunc(time.Hour, func() { signal(s.wake) })
	s.rtxTimer.Stop()
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
		if !s.started.Load() {
			// Before the session exists the configured path is wrong
			// (no outlet there, access denied): the client must learn
			// at once, not after the session timeout.
			s.end(fmt.Errorf("path failed: %w", re), false)
			return nil
		}
		if s.peerGone(re) {
			return nil
		}
		// A node on the path could not deliver a frame (a link went
		// down, a relay restarted): pause and keep retransmitting.
		s.pause(fmt.Errorf("path failed: %w", re))
		return nil
	}
	f, err := decodeFrame(m.Payload)
	if err != nil {
		err = fmt.Errorf("frame from %s: %w", m.Return, err)
		s.end(err, true)
		return err
	}
	switch f.kind {
	case kindOpened:
		if f.version != ProtocolVersion {
			s.end(fmt.Errorf("outlet speaks portal protocol %d, this node speaks %d", f.version, ProtocolVersion), true)
			return nil
		}
		s.heard()
		s.mu.Lock()
		if s.peerWindow == 0 {
			s.peerWindow = f.window
		}
		if !s.hasRTT && !s.openResent && !s.openSentAt.IsZero() {
			// The outlet answers before it dials, so this is the
			// route's round trip: the first data's retransmission
			// timer starts from it instead of the 1 s initial RTO.
			s.measureLocked(time.Since(s.openSentAt))
			s.backoff = s.rto
		}
		s.adoptLocked(m.Return)
		s.mu.Unlock()
		signal(s.credit)
		s.openOnce.Do(func() { close(s.opened) })
	case kindOpen:
		if len(f.data) > 0 {
			// Early data: the opener's message 0, sent along its
			// configured route right behind the open. It is dropped if
			// it does not fit the window (the opener sends it again).
			s.heard()
			if len(f.data) <= s.opts.Window {
				if err := s.receive(m, frame{kind: kindData, seq: 0, data: f.data}); err != nil {
					s.end(err, true)
				}
			}
			return nil
		}
		// A repeated open (the opener did not see our opened in time):
		// answer again.
		_ = s.c.Send(c, m.Return, (&frame{kind: kindOpened, version: ProtocolVersion, window: uint64(s.opts.Window)}).encode())
	case kindData, kindFin:
		s.heard()
		if f.kind == kindData {
			// The ack the data carries for our direction.
			if err := s.acked(frame{kind: kindAck, consumed: f.consumed, next: f.next}, m.Return); err != nil {
				s.end(err, true)
				return nil
			}
		}
		if err := s.receive(m, f); err != nil {
			s.end(err, true)
		}
	case kindAck:
		s.heard()
		if err := s.acked(f, m.Return); err != nil {
			s.end(err, true)
		}
	case kindClose:
		reason := f.reason
		if reason == "" {
			reason = "no reason given"
		}
		s.end(fmt.Errorf("peer closed the session: %s", reason), false)
	case kindPing, kindPong:
		s.heard()
	}
	return nil
}

func (s *session) heard() { s.lastRecv.Store(time.Now().UnixNano()) }

// adoptLocked takes the return route of a valid frame from the peer as the
// way back to it: after a relay in the middle restarts, the route the peer
// found is the one that works. A frame from the peer also ends a pause.
func (s *session) adoptLocked(ret routing.Route) {
	first := s.peer == nil
	changed := !s.peer.Equal(ret)
	if changed && first {
		// The inlet hears from its outlet session for the first time:
		// what it could not send before (a fin of a client that closed
		// at once) goes now.
		resend := false
		for _, tf := range s.out {
			if tf.unsent {
				tf.unsent, tf.resend, resend = false, true, true
			}
		}
		if resend {
			signal(s.wake)
		}
	}
	if changed {
		if s.peer != nil && s.log.IsDebug() {
			s.log.Debug("session follows its peer to a new route", "session", s.addr.String(), "route", ret.String())
		}
		s.peer = ret.Clone()
	}
	if s.paused || (changed && !first && len(s.out) > 0) {
		if s.paused && s.log.IsDebug() {
			s.log.Debug("session resumed", "session", s.addr.String())
		}
		s.paused = false
		s.backoff = s.rto
		// Whatever was sent while the path was down is resent now,
		// along the route that works.
		for _, tf := range s.out {
			if !tf.sacked {
				tf.resend = true
			}
		}
		signal(s.wake)
	}
}

// receive takes a data or fin message: in order it goes to the writer,
// early it waits in the reordering buffer, a duplicate is dropped.
func (s *session) receive(m *routing.Message, f frame) error {
	fin := f.kind == kindFin
	s.mu.Lock()
	s.adoptLocked(m.Return)
	seq := f.seq
	now := true // ack at once: anything but data arriving in order
	switch {
	case seq < s.recvSeq:
		s.stats.duplicates.Add(1)
	case seq-s.recvSeq >= maxInFlight:
		// Beyond what a sender may have in flight: not kept; it comes
		// again once the gap before it is filled.
	case (s.finSeen && seq > s.finSeq) || (fin && (s.finSeen && seq != s.finSeq || len(s.ooo) > 0 && s.oooMax > seq)):
		s.mu.Unlock()
		return errors.New("peer sent after its fin")
	case seq == s.recvSeq:
		if !fin && s.recvBytes-s.consumed.Load()+s.oooBytes+uint64(len(f.data)) > uint64(s.opts.Window) {
			s.mu.Unlock()
			return fmt.Errorf("peer exceeded the flow-control window of %d bytes", s.opts.Window)
		}
		s.deliverLocked(rxFrame{payload: m.Payload, data: f.data, fin: fin})
		filled := false // a gap closed: tell the sender at once
		for {
			rx, ok := s.ooo[s.recvSeq]
			if !ok {
				break
			}
			delete(s.ooo, s.recvSeq)
			s.oooBytes -= uint64(len(rx.data))
			s.deliverLocked(rx)
			filled = true
		}
		s.unacked++
		now = fin || filled || len(s.ooo) > 0 || s.unacked >= ackEvery
	default:
		if _, dup := s.ooo[seq]; dup {
			s.stats.duplicates.Add(1)
			break
		}
		if !fin && s.recvBytes-s.consumed.Load()+s.oooBytes+uint64(len(f.data)) > uint64(s.opts.Window) {
			s.mu.Unlock()
			return fmt.Errorf("peer exceeded the flow-control window of %d bytes", s.opts.Window)
		}
		s.ooo[seq] = rxFrame{payload: m.Payload, data: f.data, fin: fin}
		s.oooBytes += uint64(len(f.data))
		s.oooMax = max(s.oooMax, seq)
		if fin {
			s.finSeen, s.finSeq = true, seq
		}
	}
	if !now && !s.ackPending.Swap(true) {
		s.ackTimer.Reset(ackDelay)
	}
	s.mu.Unlock()
	if now {
		s.ackDue.Store(true)
		signal(s.wake)
	}
	s.flush()
	return nil
}

// flush hands what arrived in order to the local stream. A single small
// chunk (a request, a reply) is written right here, on the handler's goroutine,
// when the writer goroutine is idle and the stream takes it without
// waiting (tryWriter): one goroutine hand-off less per message. Anything
// else, or a stream that would make us wait, goes to the writer goroutine,
// which may block on the stream without holding up the handler (acks and
// credit for the other direction keep flowing).
func (s *session) flush() {
	tw, ok := s.conn.(tryWriter)
	s.mu.Lock()
	if !ok || s.writing || len(s.queue) != 1 || s.finRecv || len(s.queue[0].data) > maxDirectWrite {
		more := len(s.queue) > 0 || s.finRecv
		s.mu.Unlock()
		if more {
			signal(s.work)
		}
		return
	}
	it := s.queue[0]
	s.queue[0] = chunk{}
	s.queue = s.queue[:0]
	s.writing = true
	s.mu.Unlock()
	done, err := tw.TryWrite(it.data)
	if err != nil {
		putBuf(it.payload)
		s.mu.Lock()
		s.writing = false
		s.mu.Unlock()
		if !s.ending.Load() {
			s.end(fmt.Errorf("write to local stream: %w", err), true)
		}
		return
	}
	if done {
		putBuf(it.payload)
		s.wrote(len(it.data))
	}
	s.mu.Lock()
	if !done {
		// First in line again: the writer writes it, waiting if it must.
		s.queue = slices.Insert(s.queue, 0, it)
	}
	s.writing = false
	more := len(s.queue) > 0 || s.finRecv
	s.mu.Unlock()
	if more {
		signal(s.work)
	}
}

// maxDirectWrite is the largest chunk a handler writes itself (flush):
// bulk data goes to the writer goroutine, so that writing one chunk and
// taking in the next overlap.
const maxDirectWrite = minReadBuffer

// tryWriter is a stream that can take a write without waiting (the
// plugin's data channel stream while it has credit): ok is false, and
// nothing written, when the write would have to wait.
type tryWriter interface {
	TryWrite(p []byte) (ok bool, err error)
}

// wrote accounts n bytes written to the local stream; only the holder of
// the writing flag calls it.
func (s *session) wrote(n int) {
	consumed := s.consumed.Add(uint64(n))
	s.stats.bytesIn.Add(uint64(n))
	if consumed-s.reported >= uint64(s.opts.Window/4) {
		s.reported = consumed
		s.ackDue.Store(true)
		signal(s.wake)
	}
}

func (s *session) deliverLocked(rx rxFrame) {
	s.recvSeq++
	if rx.fin {
		s.finRecv, s.finSeen, s.finSeq = true, true, s.recvSeq-1
		return
	}
	s.recvBytes += uint64(len(rx.data))
	s.queue = append(s.queue, chunk{payload: rx.payload, data: rx.data})
}

// acked takes an ack: it releases what the peer has, measures the round
// trip, marks SACK holes for retransmission and grants credit.
func (s *session) acked(f frame, ret routing.Route) error {
	s.mu.Lock()
	switch {
	case f.consumed > s.sent:
		s.mu.Unlock()
		return errors.New("peer granted credit for bytes never sent")
	case f.next > s.nextSeq || (len(f.sacks) > 0 && f.sacks[len(f.sacks)-1].end > s.nextSeq):
		s.mu.Unlock()
		return errors.New("peer acknowledged messages never sent")
	}
	s.adoptLocked(ret)
	now := time.Now()
	sample := time.Duration(-1)
	n := 0
	for n < len(s.out) && s.out[n].seq < f.next {
		tf := s.out[n]
		if !tf.retx && !tf.sacked { // a SACKed one was measured then
			sample = now.Sub(tf.sentAt)
		}
		putBuf(tf.wire)
		s.out[n] = nil
		n++
	}
	if n > 0 {
		s.out = append(s.out[:0], s.out[n:]...)
		s.backoff = 0 // recomputed below from the new sample
	}
	if len(s.out) > 0 && len(f.sacks) > 0 {
		base := s.out[0].seq
		for _, r := range f.sacks {
			for q := max(r.start, base); q < r.end && q-base < uint64(len(s.out)); q++ {
				tf := s.out[q-base]
				if !tf.sacked {
					tf.sacked = true
					if !tf.retx {
						sample = now.Sub(tf.sentAt)
					}
				}
			}
		}
		// Fast retransmit: dupThresh messages after it arrived, so this
		// one is most likely lost. Again at most once per round trip.
		after := 0
		for i := len(s.out) - 1; i >= 0; i-- {
			tf := s.out[i]
			if tf.sacked {
				after++
				continue
			}
			if after >= dupThresh && !tf.resend && (!tf.retx || now.Sub(tf.sentAt) > max(s.srtt, minRTO/4)) {
				tf.resend = true
				signal(s.wake)
			}
		}
	}
	if sample >= 0 {
		s.measureLocked(sample)
	}
	if s.backoff == 0 {
		s.backoff = s.rto
	}
	if s.finSent && len(s.out) == 0 {
		s.finAcked = true
	}
	granted := f.consumed > s.peerConsumed
	if granted {
		s.peerConsumed = f.consumed
	}
	s.mu.Unlock()
	if n > 0 || granted {
		signal(s.credit)
	}
	s.maybeFinish()
	return nil
}

// measureLocked updates the retransmission timeout from a round-trip
// sample as RFC 6298 does.
func (s *session) measureLocked(r time.Duration) {
	if !s.hasRTT {
		s.hasRTT = true
		s.srtt, s.rttvar = r, r/2
	} else {
		d := s.srtt - r
		if d < 0 {
			d = -d
		}
		s.rttvar = (3*s.rttvar + d) / 4
		s.srtt = (7*s.srtt + r) / 8
	}
	s.rto = min(max(s.srtt+max(time.Millisecond, 4*s.rttvar), minRTO), maxRTO)
}

// pause records that the path failed; the session keeps retransmitting
// until the peer is heard from again or the session times out.
func (s *session) pause(err error) {
	s.mu.Lock()
	first := !s.paused
	s.paused = true
	s.pathErr = err
	s.mu.Unlock()
	if first && s.log.IsDebug() {
		s.log.Debug("session paused", "session", s.addr.String(), "error", err)
	}
	signal(s.wake)
}

// routeLocked is where frames to the peer go: the peer's last route, or,
// for a paused inlet, its configured route to the outlet ending at the
// outlet session instead of the outlet service, which finds the way again
// when a relay in the middle restarted and the links we knew are gone.
func (s *session) routeLocked() routing.Route {
	if s.paused && len(s.base) > 0 && len(s.peer) > 0 {
		r := s.base.Clone()
		r[len(r)-1] = s.peer[len(s.peer)-1]
		return r
	}
	return s.peer
}

// send hands one frame to the node; a failure pauses the session.
func (s *session) send(route routing.Route, payload []byte) {
	if err := s.c.Send(s.c, route, payload); err != nil && !s.ending.Load() {
		s.pause(fmt.Errorf("send to %s: %w", route, err))
	}
}

// start runs the data path once the peer is known.
func (s *session) start() {
	s.startReader()
	s.startRest()
}

// startReader starts reading the local stream. An inlet starts it before
// the outlet answers: its first message goes out as early data.
func (s *session) startReader() {
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.readLoop() }()
}

// startRest starts the writer and the control loop once the peer is known.
func (s *session) startRest() {
	s.started.Store(true)
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.writeLoop() }()
	go func() { defer s.wg.Done(); s.controlLoop() }()
}

// waitCredit blocks until the peer can take more bytes and returns how
// many, or 0 once the session ends.
func (s *session) waitCredit() int {
	for {
		s.mu.Lock()
		avail := int64(s.peerConsumed + s.peerWindow - s.sent)
		if len(s.out) >= maxInFlight {
			avail = 0
		}
		if s.peer == nil && s.earlyOpen != nil && s.nextSeq == 0 {
			avail = maxEarlyData // the open's early data
		}
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
	size := minReadBuffer
	for {
		size = min(size, s.chunkLimit())
		n := min(s.waitCredit(), size)
		if n == 0 {
			return
		}
		// A buffer per message: the payload goes to the peer as it is and
		// comes back through the pool once written out (see pool.go). Its
		// size follows the traffic, so a 64-byte request does not take a
		// 64 KiB buffer while bulk data still moves in full chunks.
		buf := getBuf(size)
		h := dataHeadroom
		k, rerr := s.conn.Read(buf[h : h+n])
		if k == n {
			size = min(2*size, s.opts.ChunkSize)
		} else if k < size/4 {
			size = max(size/2, minReadBuffer)
		}
		if k > 0 {
			wire := buf[:h+k]
			keep := getBuf(k)[:h+k]
			copy(keep[h:], wire[h:])
			s.mu.Lock()
			seq := s.nextSeq
			// The message acknowledges everything that arrived so far,
			// so no separate ack is needed for it.
			putDataHeader(wire, seq, s.recvSeq, s.consumed.Load())
			s.unacked = 0
			s.ackPending.Store(false)
			copy(keep[:h], wire[:h])
			s.sent += uint64(k)
			s.nextSeq++
			tf := &txFrame{seq: seq, wire: keep, sentAt: time.Now()}
			s.out = append(s.out, tf)
			// The control loop's timer was idle: arm it for this one.
			arm := len(s.out) == 1
			rtx := s.backoff
			route := s.routeLocked()
			var early []byte
			if route == nil {
				// Not open yet: message 0 goes as early data in a
				// second open; anything else waits for opened.
				if seq == 0 && s.earlyOpen != nil {
					early = append(slices.Clip(s.earlyOpen), wire[h:]...)
				} else {
					tf.unsent = true
				}
			}
			s.mu.Unlock()
			if arm {
				s.rtxTimer.Reset(rtx)
			}
			if route != nil {
				// Handed over: the receiving session (on this node)
				// or the link that encodes it puts it back. This
				// goroutine runs no handler, so an idle next hop (the
				// peer session, a link) may handle it right here.
				if err := s.c.SendOwnedInline(s.c, route, wire); err != nil && !s.ending.Load() {
					s.pause(fmt.Errorf("send to %s: %w", route, err))
				}
			} else {
				putBuf(buf)
				if early != nil {
					// A failure here is the open's to report; the
					// message is resent after opened if it is lost.
					_ = s.c.Send(s.c, s.base, early)
				}
			}
			s.stats.bytesOut.Add(uint64(k))
		} else {
			putBuf(buf)
		}
		if rerr == io.EOF {
			s.mu.Lock()
			fin := (&frame{kind: kindFin, seq: s.nextSeq}).encode()
			route := s.routeLocked()
			s.out = append(s.out, &txFrame{seq: s.nextSeq, wire: fin, sentAt: time.Now(), unsent: route == nil})
			s.nextSeq++
			s.finSent = true
			s.mu.Unlock()
			signal(s.wake)
			if route != nil {
				s.send(route, bytes.Clone(fin))
			}
			return
		}
		if rerr != nil {
			s.end(fmt.Errorf("read from local stream: %w", rerr), true)
			return
		}
	}
}

func (s *session) writeLoop() {
	for {
		s.mu.Lock()
		for s.writing || len(s.queue) == 0 && !s.finRecv {
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
		s.writing = true
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
			s.wrote(len(it.data))
		}
		s.mu.Lock()
		if s.spare == nil {
			s.spare = items[:0]
		}
		if !fin {
			s.writing = false
		}
		s.mu.Unlock()
		if fin {
			// No ack of its own here: the fin was acknowledged as it
			// arrived, and a lingering session repeats that ack.
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

// ackLocked builds an ack of what arrived: cumulative, plus the first
// SACK ranges of what arrived early.
func (s *session) ackLocked() []byte {
	s.unacked = 0
	s.ackPending.Store(false)
	f := frame{kind: kindAck, consumed: s.consumed.Load(), next: s.recvSeq}
	if len(s.ooo) > 0 {
		seqs := make([]uint64, 0, len(s.ooo))
		for q := range s.ooo {
			seqs = append(seqs, q)
		}
		slices.Sort(seqs)
		for _, q := range seqs {
			if n := len(f.sacks); n > 0 && f.sacks[n-1].end == q {
				f.sacks[n-1].end++
				continue
			}
			if len(f.sacks) == maxSackRanges {
				break
			}
			f.sacks = append(f.sacks, sackRange{q, q + 1})
		}
	}
	return f.encode()
}

// controlLoop sends acks and keepalives, retransmits what was not
// acknowledged in time, probes a paused path and ends the session when the
// peer has been silent for the session timeout.
func (s *session) controlLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	lastAck := time.Now()
	var lastProbe time.Time
	reacked := false
	for {
		now := time.Now()
		idle := now.Sub(time.Unix(0, s.lastRecv.Load()))
		if idle > s.opts.SessionTimeout {
			s.mu.Lock()
			perr := s.pathErr
			s.mu.Unlock()
			err := fmt.Errorf("nothing from the peer for %s (session timeout %s): the path is down", idle.Round(time.Millisecond), s.opts.SessionTimeout)
			if perr != nil {
				err = fmt.Errorf("%w; last path error: %w", err, perr)
			}
			s.end(err, true)
			return
		}
		s.mu.Lock()
		linger := s.lingerUntil
		s.mu.Unlock()
		if !linger.IsZero() && !now.Before(linger) {
			s.end(nil, false)
			return
		}
		wires, route, next, paused, backoff := s.dueRetransmits(now)
		if len(wires) > 0 {
			s.shrinkChunks(now)
		}
		for _, w := range wires {
			s.stats.retransmits.Add(1)
			s.send(route, w)
		}
		probe := paused && len(wires) == 0 && now.Sub(lastProbe) >= backoff
		// A finished session repeats its last ack once while it
		// lingers: the peer may have no round-trip sample yet (1 s
		// initial timer), so if that ack is lost its retransmission
		// could come only after we are gone, and it would wait for the
		// session timeout. (Once, not periodically: every ack is one
		// more message through each node and plugin on the path.)
		reack := !linger.IsZero() && !reacked && now.Sub(lastAck) >= lingerReack
		if reack {
			reacked = true
		}
		if s.ackDue.Swap(false) || probe || reack || now.Sub(lastAck) >= s.opts.KeepaliveInterval {
			s.mu.Lock()
			ack := s.ackLocked()
			route = s.routeLocked()
			s.mu.Unlock()
			s.send(route, ack)
			lastAck = now
			if probe {
				lastProbe = now
			}
		}
		wait := min(next, s.opts.KeepaliveInterval-now.Sub(lastAck), s.opts.SessionTimeout-idle+time.Millisecond)
		if paused {
			wait = min(wait, backoff)
		}
		if !linger.IsZero() {
			wait = min(wait, linger.Sub(now))
			if !reacked {
				wait = min(wait, lingerReack-now.Sub(lastAck))
			}
		}
		timer.Reset(max(wait, time.Millisecond))
		select {
		case <-s.done:
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// dueRetransmits returns copies of the messages to send again (their
// timer ran out, or SACK showed them lost), the route, how long until the
// next timer runs out, and whether the session is paused.
func (s *session) dueRetransmits(now time.Time) (wires [][]byte, route routing.Route, next time.Duration, paused bool, backoff time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next = time.Hour
	fired := false
	for _, tf := range s.out {
		if tf.sacked {
			continue
		}
		due := tf.sentAt.Add(s.backoff)
		if tf.resend || !now.Before(due) {
			if !tf.resend {
				fired = true
			}
			tf.resend, tf.retx, tf.sentAt = false, true, now
			w := bytes.Clone(tf.wire)
			if w[0] == kindData {
				putDataAck(w, s.recvSeq, s.consumed.Load())
			}
			wires = append(wires, w)
			continue
		}
		next = min(next, due.Sub(now))
	}
	if fired {
		// The timer ran out: back off (RFC 6298 5.5).
		s.backoff = min(2*s.backoff, maxRTO)
	}
	if len(wires) > 0 {
		next = min(next, s.backoff)
	}
	return wires, s.routeLocked(), next, s.paused, s.backoff
}

// peerGone handles a report that the peer's session worker itself no
// longer exists (the node it lived on answered; not a path failure, which
// pauses). If our fin is all we still wait for and the peer's fin was
// written out, that is the acknowledgement of our fin: a session ends
// cleanly only after it has our fin, and otherwise says why it closed.
// Otherwise the session cannot resume and ends now with that error rather
// than after the session timeout. Without this, a lost last ack left the
// session retransmitting to a peer that had finished and stopped
// lingering, for 30 s.
func (s *session) peerGone(re *node.RemoteError) bool {
	if re.Code != node.CodeNoWorker {
		return false
	}
	s.mu.Lock()
	gone := len(s.peer) > 0 && re.Address == (routing.Route{s.peer[len(s.peer)-1]}).String()
	finished := gone && s.recvDone.Load() && s.finSent && len(s.out) == 1 && s.out[0].wire[0] == kindFin
	if finished {
		s.finAcked = true
		s.out[0] = nil
		s.out = s.out[:0]
	}
	s.mu.Unlock()
	switch {
	case finished:
		s.maybeFinish()
	case gone:
		s.end(fmt.Errorf("the peer's session is gone: %w", re), false)
	}
	return gone
}

// maybeFinish starts a clean end once both directions are done: our fin is
// acknowledged and the peer's fin was written out. The worker lingers a
// little to acknowledge the peer's retransmissions in case our last ack
// was lost.
func (s *session) maybeFinish() {
	if !s.recvDone.Load() {
		return
	}
	s.mu.Lock()
	if s.finAcked && s.lingerUntil.IsZero() {
		s.lingerUntil = time.Now().Add(min(2*s.rto, 2*time.Second))
		if s.log.IsDebug() {
			s.log.Debug("session finished; lingering", "session", s.addr.String(), "rto", s.rto)
		}
	}
	s.mu.Unlock()
	signal(s.wake)
}

// end tears the session down once: stops its goroutines, optionally tells
// the peer why, closes the stream and stops the worker.
func (s *session) end(err error, notifyPeer bool) {
	if !s.ending.CompareAndSwap(false, true) {
		return
	}
	close(s.done)
	s.mu.Lock()
	s.ackTimer.Stop()
	s.rtxTimer.Stop()
	peer := s.routeLocked()
	for i, tf := range s.out {
		putBuf(tf.wire)
		s.out[i] = nil
	}
	s.out = nil
	s.mu.Unlock()
	if notifyPeer && peer != nil && err != nil && s.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if serr := s.c.Send(ctx, peer, (&frame{kind: kindClose, reason: err.Error()}).encode()); serr != nil && s.log.IsDebug() {
			s.log.Debug("could not tell the peer the session closed", "session", s.addr.String(), "error", serr)
		}
		cancel()
	}
	if err != nil && peer != nil {
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

// chunkLimit is the largest chunk the reader may send now.
func (s *session) chunkLimit() int {
	limit := s.chunkCap.Load()
	if limit == 0 {
		return s.opts.ChunkSize
	}
	if limit < int64(s.opts.ChunkSize) && time.Since(time.Unix(0, s.lastShrink.Load())) > chunkRegrow {
		limit = min(2*limit, int64(s.opts.ChunkSize))
		s.chunkCap.Store(limit)
		s.lastShrink.Store(time.Now().UnixNano())
	}
	return int(limit)
}

// shrinkChunks halves the chunk size after a retransmission.
func (s *session) shrinkChunks(now time.Time) {
	limit := s.chunkCap.Load()
	if limit == 0 {
		limit = int64(s.opts.ChunkSize)
	}
	s.chunkCap.Store(max(limit/2, int64(min(minLossChunk, s.opts.ChunkSize))))
	s.lastShrink.Store(now.UnixNano())
}
