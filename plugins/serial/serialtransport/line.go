package serialtransport

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

const (
	// closeGrace bounds how long Close waits for its close frame to be
	// written.
	closeGrace = time.Second
	// writeChunk is the most one Write call takes, so a closing line never
	// waits behind a multi-megabyte write.
	writeChunk = 64 << 10
	// sendChunk is how many encoded bytes Send hands to the writer at once;
	// with writeQueue it bounds the encoded bytes a line holds.
	sendChunk  = 256 << 10
	poolCap    = sendChunk + 72<<10 // a chunk plus one encoded maximum frame
	writeQueue = 4
	// helloMin and helloMax bound the interval between hellos while a
	// handshake is unanswered.
	helloMin = 50 * time.Millisecond
	helloMax = time.Second
	// staleHelloEvery rate-limits the hello sent in answer to frames of a
	// session this side does not know.
	staleHelloEvery = 200 * time.Millisecond
	readBuffer      = 64 << 10
)

// counters are shared by a listener and every line it opened, or owned by a
// dialled line. Values only grow.
type counters struct {
	framesIn, framesOut     atomic.Uint64
	bytesIn, bytesOut       atomic.Uint64
	messagesIn, messagesOut atomic.Uint64
	crcErrors               atomic.Uint64
	badFrames               atomic.Uint64
	oversizedFrames         atomic.Uint64
	resyncs                 atomic.Uint64
	staleFrames             atomic.Uint64
	droppedMessages         atomic.Uint64
	droppedFragments        atomic.Uint64
	reassemblyTimeouts      atomic.Uint64
	links                   atomic.Uint64
	opens                   atomic.Uint64
	openFailures            atomic.Uint64
}

func (c *counters) snapshot() map[string]uint64 {
	return map[string]uint64{
		"frames_in":           c.framesIn.Load(),
		"frames_out":          c.framesOut.Load(),
		"bytes_in":            c.bytesIn.Load(),
		"bytes_out":           c.bytesOut.Load(),
		"messages_in":         c.messagesIn.Load(),
		"messages_out":        c.messagesOut.Load(),
		"crc_errors":          c.crcErrors.Load(),
		"bad_frames":          c.badFrames.Load(),
		"oversized_frames":    c.oversizedFrames.Load(),
		"resyncs":             c.resyncs.Load(),
		"stale_frames":        c.staleFrames.Load(),
		"dropped_messages":    c.droppedMessages.Load(),
		"dropped_fragments":   c.droppedFragments.Load(),
		"reassembly_timeouts": c.reassemblyTimeouts.Load(),
		"links":               c.links.Load(),
		"opens":               c.opens.Load(),
		"open_failures":       c.openFailures.Load(),
	}
}

// wreq is one buffer for the writer goroutine.
type wreq struct {
	buf    []byte
	frames int
	msgs   int
	done   chan error // optional; told when the buffer was written
}

// line is one open device: the reader, writer and ticker goroutines, the
// session handshake, and the current link. A dialled line ends with its
// first link; a listener's line carries one link after another until the
// device fails or the listener closes.
type line struct {
	port     *device
	path     string
	cfg      config
	ctr      *counters
	listener *listener // nil for a dialled line
	onEnd    func(*line)

	wq          chan *wreq
	established chan *link // a dialled line's link, once

	mu           sync.Mutex
	local, peer  uint32
	peerKnowsUs  bool
	cur          *link
	helloNext    time.Time
	helloBackoff time.Duration
	staleHello   time.Time
	handshaking  bool // send hellos until the peer knows us

	lastRx        atomic.Int64 // unix nanos of the last frame of this session
	lastTx        atomic.Int64
	readerBlocked atomic.Bool

	stopping  atomic.Bool
	closing   chan struct{}
	done      chan struct{}
	endOnce   sync.Once
	endCause  error
	dec       *decoder
	frameBufs sync.Pool
}

func newLine(port *device, path string, cfg config, ctr *counters, l *listener) *line {
	ln := &line{
		port:        port,
		path:        path,
		cfg:         cfg,
		ctr:         ctr,
		listener:    l,
		wq:          make(chan *wreq, writeQueue),
		established: make(chan *link, 1),
		closing:     make(chan struct{}),
		done:        make(chan struct{}),
		dec:         newDecoder(cfg.maxFrameSize),
	}
	now := time.Now().UnixNano()
	ln.lastRx.Store(now)
	ln.lastTx.Store(now)
	return ln
}

func newSession() uint32 {
	for {
		if s := rand.Uint32(); s != 0 {
			return s
		}
	}
}

// start runs the line. A dialler starts the handshake at once; a listener
// announces its new session once (so a far end still holding a link from
// before this side restarted drops it) and then answers hellos.
func (ln *line) start(dial bool) {
	ln.mu.Lock()
	ln.local = newSession()
	ln.handshaking = dial
	ln.helloBackoff = helloMin
	ln.helloNext = time.Now().Add(helloMin)
	local := ln.local
	ln.mu.Unlock()
	ln.ctr.opens.Add(1)
	go ln.writer()
	go ln.reader()
	go ln.ticker()
	ln.sendControl(frameHello, local, 0)
}

func (ln *line) cause() error {
	<-ln.done
	return ln.endCause
}

// sendControl queues a control frame without blocking: when the queue is
// full, data is flowing and the frame is not needed now (a lost hello is
// repeated, a heartbeat is implied by the data).
func (ln *line) sendControl(typ byte, src, dst uint32) {
	buf, _ := appendFrame(make([]byte, 0, 2*frameOverhead), make([]byte, 0, frameOverhead), header{typ: typ, src: src, dst: dst, fragCount: 1}, nil)
	select {
	case ln.wq <- &wreq{buf: buf, frames: 1}:
	default:
	}
}

func (ln *line) writer() {
	for {
		select {
		case w := <-ln.wq:
			err := ln.writeAll(w.buf)
			if w.done != nil {
				w.done <- err
			}
			if err != nil {
				ln.shutdown(fmt.Errorf("write to %s: %w: %w", ln.path, ErrDeviceGone, err))
				return
			}
			ln.ctr.framesOut.Add(uint64(w.frames))
			ln.ctr.messagesOut.Add(uint64(w.msgs))
			ln.lastTx.Store(time.Now().UnixNano())
			if cap(w.buf) == poolCap {
				b := w.buf[:0]
				ln.frameBufs.Put(&b)
			}
		case <-ln.closing:
			return
		}
	}
}

// writeAll writes b completely, in chunks so a closing line is noticed
// between them: a device write may take less than asked without an error
// (go.bug.st/serial's Write does; the loop keeps that harmless whichever
// descriptor writes).
func (ln *line) writeAll(b []byte) error {
	zero := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), writeChunk)]
		if ln.stopping.Load() {
			return transport.ErrClosed
		}
		n, err := ln.port.Write(chunk)
		ln.ctr.bytesOut.Add(uint64(n))
		b = b[n:]
		if err != nil {
			return err
		}
		if n == 0 {
			// No progress and no error: do not spin on the device.
			zero++
			if zero > 1000 {
				return errors.New("the device accepts no bytes")
			}
			time.Sleep(time.Millisecond)
			continue
		}
		zero = 0
	}
	return nil
}

func (ln *line) reader() {
	buf := make([]byte, readBuffer)
	for {
		n, err := ln.port.Read(buf)
		if n > 0 {
			ln.ctr.bytesIn.Add(uint64(n))
			ln.dec.feed(buf[:n], ln.onChunk)
		}
		if err != nil {
			ln.shutdown(fmt.Errorf("read from %s: %w: %w", ln.path, ErrDeviceGone, err))
			return
		}
		if ln.stopping.Load() {
			return
		}
	}
}

func (ln *line) onChunk(res decodeResult, frame []byte) {
	switch res {
	case decodedOversized:
		ln.ctr.oversizedFrames.Add(1)
		ln.ctr.resyncs.Add(1)
		return
	case decodedMalformed:
		ln.ctr.badFrames.Add(1)
		ln.ctr.resyncs.Add(1)
		return
	}
	h, payload, err := parseFrame(frame)
	if err != nil {
		if errors.Is(err, errBadCRC) {
			ln.ctr.crcErrors.Add(1)
		} else {
			ln.ctr.badFrames.Add(1)
		}
		ln.ctr.resyncs.Add(1)
		return
	}
	ln.ctr.framesIn.Add(1)
	ln.handle(h, payload)
}

// handle acts on one valid frame. It runs on the reader goroutine only.
func (ln *line) handle(h header, payload []byte) {
	ln.mu.Lock()
	if ln.stopping.Load() {
		ln.mu.Unlock()
		return
	}
	if h.typ == frameHello {
		ln.onHello(h) // unlocks
		return
	}
	if ln.peer == 0 || h.src != ln.peer || h.dst != ln.local {
		// A frame of a session this side does not know (it restarted,
		// or ended that link): tell the far end our current session.
		ln.ctr.staleFrames.Add(1)
		now := time.Now()
		send := now.Sub(ln.staleHello) >= staleHelloEvery
		if send {
			ln.staleHello = now
		}
		local, peer := ln.local, ln.peer
		ln.mu.Unlock()
		if send {
			ln.sendControl(frameHello, local, peer)
		}
		return
	}
	var newLink *link
	if !ln.peerKnowsUs {
		// The far end sends us frames for our session: it knows us.
		newLink = ln.establishLocked()
	}
	lk := ln.cur
	ln.lastRx.Store(time.Now().UnixNano())
	ln.mu.Unlock()
	ln.offer(newLink)
	if lk == nil {
		return
	}
	switch h.typ {
	case frameData:
		ln.reassemble(lk, h, payload)
	case frameClose:
		ln.linkEnded(lk, io.EOF)
	}
}

// onHello runs the handshake; called holding ln.mu, returns unlocked.
func (ln *line) onHello(h header) {
	var ended *link
	if h.src != ln.peer {
		if ln.cur != nil {
			// The far end has a new session: it restarted.
			ended = ln.cur
			if ln.listener == nil {
				ln.mu.Unlock()
				ln.linkEnded(ended, fmt.Errorf("%s: %w", ln.path, ErrPeerRestarted))
				return
			}
			ln.cur = nil
			ln.local = newSession()
		}
		ln.peer = h.src
		ln.peerKnowsUs = false
	}
	ln.lastRx.Store(time.Now().UnixNano())
	reply := h.dst != ln.local
	var newLink *link
	if !reply && !ln.peerKnowsUs {
		newLink = ln.establishLocked()
		reply = true // confirm, so the far end's handshake ends too
	}
	if reply && ln.cur == nil && ln.listener == nil && !ln.handshaking {
		reply = false // a dialled line whose link ended
	}
	local, peer := ln.local, ln.peer
	ln.mu.Unlock()
	if ended != nil {
		ended.end(fmt.Errorf("%s: %w", ln.path, ErrPeerRestarted))
	}
	if reply {
		ln.sendControl(frameHello, local, peer)
	}
	ln.offer(newLink)
}

// establishLocked makes the link for the current session pair.
func (ln *line) establishLocked() *link {
	ln.peerKnowsUs = true
	ln.handshaking = false
	lk := newLink(ln, ln.local, ln.peer)
	ln.cur = lk
	ln.lastRx.Store(time.Now().UnixNano())
	ln.ctr.links.Add(1)
	return lk
}

// offer hands a new link to Dial or the listener's Accept.
func (ln *line) offer(lk *link) {
	if lk == nil {
		return
	}
	if ln.listener == nil {
		select {
		case ln.established <- lk:
		default:
		}
		return
	}
	ln.listener.offer(lk)
}

// reassemble collects a packet's fragments (they arrive in order: a line
// does not reorder) and queues complete packets on lk.
func (ln *line) reassemble(lk *link, h header, payload []byte) {
	a := &lk.asm
	now := time.Now()
	if a.active && now.Sub(a.last) > ln.cfg.reassemblyTimeout {
		ln.ctr.reassemblyTimeouts.Add(1)
		ln.ctr.droppedMessages.Add(1)
		a.reset()
	}
	if a.active && (h.msgID != a.id || h.fragIndex != a.next || h.fragCount != a.count) {
		// A fragment went missing: the packet it belonged to is lost.
		ln.ctr.droppedMessages.Add(1)
		a.reset()
	}
	if h.fragCount == 1 {
		if len(payload) > ln.cfg.maxMessageSize {
			ln.ctr.droppedMessages.Add(1)
			return
		}
		ln.deliver(lk, append([]byte(nil), payload...))
		return
	}
	if !a.active {
		if h.fragIndex != 0 {
			ln.ctr.droppedFragments.Add(1)
			return
		}
		a.active = true
		a.id, a.count, a.next = h.msgID, h.fragCount, 0
		// The claimed size only sizes the buffer up to the limit.
		a.buf = make([]byte, 0, min(int(h.fragCount)*len(payload), ln.cfg.maxMessageSize))
	}
	if len(a.buf)+len(payload) > ln.cfg.maxMessageSize {
		ln.ctr.droppedMessages.Add(1)
		a.reset()
		return
	}
	a.buf = append(a.buf, payload...)
	a.next++
	a.last = now
	if a.next == a.count {
		p := a.buf
		a.buf = nil
		a.reset()
		ln.deliver(lk, p)
	}
}

func (ln *line) deliver(lk *link, p []byte) {
	ln.readerBlocked.Store(true)
	ok := lk.rq.push(p, lk.done)
	ln.readerBlocked.Store(false)
	if ok {
		ln.ctr.messagesIn.Add(1)
	}
}

// ticker repeats unanswered hellos, sends heartbeats and ends idle links.
func (ln *line) ticker() {
	every := min(ln.cfg.heartbeatInterval/4, helloMin)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ln.closing:
			return
		case <-t.C:
		}
		now := time.Now()
		ln.mu.Lock()
		local, peer := ln.local, ln.peer
		var hello, heartbeat bool
		var idle *link
		if ln.handshaking && !now.Before(ln.helloNext) {
			hello = true
			ln.helloBackoff = min(2*ln.helloBackoff, helloMax)
			ln.helloNext = now.Add(ln.helloBackoff)
		}
		if ln.cur != nil {
			if now.Sub(time.Unix(0, ln.lastTx.Load())) >= ln.cfg.heartbeatInterval {
				heartbeat = true
			}
			if ln.readerBlocked.Load() {
				// The reader waits for Recv, not for the line.
				ln.lastRx.Store(now.UnixNano())
			} else if now.Sub(time.Unix(0, ln.lastRx.Load())) > ln.cfg.idleTimeout {
				idle = ln.cur
			}
		}
		ln.mu.Unlock()
		if hello {
			ln.sendControl(frameHello, local, peer)
		}
		if heartbeat {
			ln.sendControl(frameHeartbeat, local, peer)
			ln.lastTx.Store(now.UnixNano())
		}
		if idle != nil {
			ln.linkEnded(idle, fmt.Errorf("receive from %s: nothing received for %s: %w", ln.path, ln.cfg.idleTimeout, ErrIdle))
		}
	}
}

// linkEnded ends lk (if it is still the line's link) with cause. A
// listener's line starts a new session and waits for the next hello; a
// dialled line, or one whose listener closed, shuts down.
func (ln *line) linkEnded(lk *link, cause error) {
	ln.mu.Lock()
	if ln.cur != lk {
		ln.mu.Unlock()
		lk.end(cause)
		return
	}
	if ln.listener == nil || ln.listener.isClosed() {
		ln.mu.Unlock()
		// The device is closed (and free to open again) before the link
		// reports its end.
		ln.shutdown(cause)
		lk.end(cause)
		return
	}
	ln.cur = nil
	ln.local = newSession()
	ln.peer = 0
	ln.peerKnowsUs = false
	ln.handshaking = false
	ln.mu.Unlock()
	lk.end(cause)
}

// closeLink closes the line's current link cleanly (with a close frame) and
// shuts the line down.
func (ln *line) closeLink() {
	ln.mu.Lock()
	lk := ln.cur
	ln.mu.Unlock()
	if lk != nil {
		_ = lk.Close()
	}
	ln.shutdown(transport.ErrClosed)
}

// idleLink reports whether the line carries no link.
func (ln *line) idleLink() bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return ln.cur == nil
}

// shutdown closes the device and ends the current link with cause.
func (ln *line) shutdown(cause error) {
	ln.endOnce.Do(func() {
		ln.stopping.Store(true)
		ln.endCause = cause
		close(ln.closing)
		ln.mu.Lock()
		cur := ln.cur
		ln.cur = nil
		ln.mu.Unlock()
		// Closing wakes a read or write blocked on the device.
		_ = ln.port.Close()
		close(ln.done)
		if ln.onEnd != nil {
			ln.onEnd(ln)
		}
		// Links learn of the end once the device is closed and released.
		if cur != nil {
			cur.end(cause)
		}
		select {
		case lk := <-ln.established:
			lk.end(cause)
		default:
		}
	})
}
