package tcptransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryhq/ferry/internal/streamframe"
	"github.com/ferryhq/ferry/sdk/transport"
)

// closeGrace bounds how long Close waits for a Send in progress before it
// drops the connection without a close frame.
const closeGrace = time.Second

// ErrIdle is wrapped by the error Recv returns when nothing (not even a
// heartbeat) arrived within the idle timeout.
var ErrIdle = errors.New("tcp transport: link idle")

// ErrPeerVanished is wrapped by the error Recv returns when the connection
// ended without the peer's close frame: the peer process died, the network
// dropped the connection, or the peer is not a ferry tcp transport.
var ErrPeerVanished = errors.New("tcp transport: connection ended without a close frame")

// ErrSlowFrame is wrapped by the error Recv returns when a frame did not
// arrive within frame_timeout plus its size at min_data_rate: the peer
// trickles bytes (slowloris) or its path is too slow for its messages.
var ErrSlowFrame = errors.New("tcp transport: frame arrived too slowly")

// frameAllowance is how long Recv may wait for a frame of size bytes.
func (l *link) frameAllowance(size int) time.Duration {
	return l.cfg.frameTimeout + time.Duration(float64(size)/float64(l.cfg.minDataRate)*float64(time.Second))
}

type link struct {
	conn  *net.TCPConn
	cfg   config
	local string
	peer  string
	onEnd func(*link)

	// Writing side: Send and the heartbeat share the buffered writer. wsem
	// is a one-slot semaphore rather than a mutex so a Send waiting for
	// another writer still honours its context.
	wsem      chan struct{}
	fw        streamframe.Writer
	lastWrite atomic.Int64 // unix nanos of the last frame written
	werr      error        // sticky: the byte stream can no longer be trusted

	// Reading side: one Recv at a time.
	rmu      sync.Mutex
	fr       *streamframe.Reader
	out      [][]byte
	rerr     error // sticky, returned once buffered frames were delivered
	lastRead time.Time
	// frameWait is how long Recv has waited for the bytes of the frame
	// being read (time the node spent not calling Recv does not count, so
	// a busy node does not cut off its peers).
	frameWait time.Duration

	closed    atomic.Bool // Close was called
	closeOnce sync.Once
	ended     *streamframe.End
}

func newLink(conn *net.TCPConn, cfg config, mem *streamframe.Budget, onEnd func(*link)) *link {
	_ = conn.SetNoDelay(true)
	_ = conn.SetKeepAliveConfig(net.KeepAliveConfig{
		Enable:   true,
		Idle:     cfg.keepAlive,
		Interval: cfg.keepAlive,
		Count:    3,
	})
	l := &link{
		conn:     conn,
		cfg:      cfg,
		local:    conn.LocalAddr().String(),
		peer:     conn.RemoteAddr().String(),
		onEnd:    onEnd,
		wsem:     make(chan struct{}, 1),
		fr:       streamframe.NewReader(conn, cfg.maxMessageSize, cfg.bufferSize, mem, frameErrors),
		lastRead: time.Now(),
		ended:    streamframe.NewEnd(),
	}
	l.lastWrite.Store(time.Now().UnixNano())
	go l.heartbeat()
	return l
}

func (l *link) LocalAddr() string  { return l.local }
func (l *link) RemoteAddr() string { return l.peer }

// Send writes packets as data frames and flushes once. If ctx ends while the
// kernel buffer is full the link is closed: part of a frame may already be on
// the wire and the stream cannot be resynchronised.
func (l *link) Send(ctx context.Context, packets [][]byte) error {
	if err := streamframe.CheckSizes(packets, l.cfg.maxMessageSize, l.peer); err != nil {
		return err
	}
	if len(packets) == 0 {
		return nil
	}
	if l.closed.Load() {
		return transport.ErrClosed
	}
	select {
	case l.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.wsem }()
	if l.werr != nil {
		return l.werr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer streamframe.CancelWrites(ctx, l.conn)()
	vec := l.fw.Build(packets)
	_, err := vec.WriteTo(l.conn)
	l.fw.Release()
	if err != nil {
		return l.failWrite(ctx, err)
	}
	l.lastWrite.Store(time.Now().UnixNano())
	return nil
}

// failWrite turns a write error into the link's sticky error and closes the
// connection. Called holding wsem.
func (l *link) failWrite(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, net.ErrClosed):
		return l.ended.Cause()
	case ctx.Err() != nil:
		err = fmt.Errorf("send to %s interrupted, link closed because a frame may be cut: %w", l.peer, ctx.Err())
	default:
		err = fmt.Errorf("send to %s: %w", l.peer, err)
	}
	l.werr = err
	l.abort(err)
	return err
}

// Recv returns every complete data frame already buffered, reading from the
// connection only when none is. Heartbeats are consumed here.
func (l *link) Recv(ctx context.Context) ([][]byte, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	l.out = l.out[:0]
	if l.rerr != nil {
		return nil, l.rerr
	}
	if l.closed.Load() {
		return nil, transport.ErrClosed
	}
	l.fr.Shrink(l.cfg.bufferSize)
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		for {
			typ, p, ok, err := l.fr.Next()
			if err != nil {
				return l.failRead(fmt.Errorf("receive from %s: %w", l.peer, err))
			}
			if !ok {
				break
			}
			l.frameWait = 0 // a frame completed; the next one has its own clock
			switch typ {
			case frameData:
				l.out = append(l.out, p)
			case frameClose:
				return l.failRead(io.EOF)
			}
		}
		if len(l.out) > 0 {
			return l.out, nil
		}
		if stop == nil && ctx.Done() != nil {
			// A stale wake-up is told apart below by checking ctx and the
			// idle deadline, and the read is simply retried.
			stop = streamframe.WakeReads(ctx, l.conn)
		}
		deadline := l.lastRead.Add(l.cfg.idleTimeout)
		// When Recv was not called for a while the deadline may have
		// passed although heartbeats sit unread in the socket: give the
		// read a moment to find them before declaring the link idle.
		readBy := deadline
		if floor := time.Now().Add(l.cfg.idleTimeout / 10); readBy.Before(floor) {
			readBy = floor
		}
		var frameLeft time.Duration
		need := l.fr.Pending()
		if need > 0 {
			frameLeft = l.frameAllowance(need) - l.frameWait
			if frameLeft <= 0 {
				return l.failRead(fmt.Errorf("receive from %s: a frame of %d bytes did not arrive within %s: %w", l.peer, need, l.frameAllowance(need), ErrSlowFrame))
			}
			if by := time.Now().Add(frameLeft); by.Before(readBy) {
				readBy = by
			}
		}
		_ = l.conn.SetReadDeadline(readBy)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		waitStart := time.Now()
		n, err := l.fr.Fill()
		if need > 0 {
			l.frameWait += time.Since(waitStart)
		}
		if n > 0 {
			l.fr.Advance(n)
			l.lastRead = time.Now()
		}
		if err == nil {
			continue
		}
		var ne net.Error
		switch {
		case errors.Is(err, ErrBadFrame), errors.Is(err, ErrReceiveMemory):
			return l.failRead(fmt.Errorf("receive from %s: %w", l.peer, err))
		case errors.Is(err, net.ErrClosed):
			return nil, l.ended.Cause()
		case errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded):
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			if n == 0 && !time.Now().Before(deadline) {
				return l.failRead(fmt.Errorf("receive from %s: nothing received for %s: %w", l.peer, l.cfg.idleTimeout, ErrIdle))
			}
			// A frame past its allowance is caught at the top of the loop.
		case errors.Is(err, io.EOF):
			if l.fr.Buffered() > 0 {
				return l.failRead(fmt.Errorf("receive from %s: connection ended in the middle of a frame: %w", l.peer, ErrPeerVanished))
			}
			return l.failRead(fmt.Errorf("receive from %s: %w", l.peer, ErrPeerVanished))
		default:
			return l.failRead(fmt.Errorf("receive from %s: %w", l.peer, err))
		}
	}
}

// failRead records the link's terminal read error. Frames already collected
// in this call are returned first; the error comes with the next Recv. A
// broken stream closes the connection (that link only).
func (l *link) failRead(err error) ([][]byte, error) {
	l.rerr = err
	if err == io.EOF {
		// The peer is gone; later Sends fail as on a closed link.
		l.abort(fmt.Errorf("%s closed the link: %w", l.peer, transport.ErrClosed))
	} else {
		l.abort(err)
	}
	if len(l.out) > 0 {
		return l.out, nil
	}
	return nil, err
}

// heartbeat keeps an otherwise quiet link alive so the peer's idle timeout
// only fires when this side is really gone.
func (l *link) heartbeat() {
	// Ticking at half the interval keeps the gap between frames below 1.5
	// intervals, well inside the peer's idle timeout (at least 2 intervals).
	t := time.NewTicker(l.cfg.heartbeatInterval / 2)
	defer t.Stop()
	hb := streamframe.AppendHeader(nil, frameHeartbeat, 0)
	for {
		select {
		case <-l.ended.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, l.lastWrite.Load())) < l.cfg.heartbeatInterval {
			continue
		}
		// A Send in progress is as good as a heartbeat; do not queue behind it.
		select {
		case l.wsem <- struct{}{}:
		default:
			continue
		}
		if l.werr == nil {
			if _, err := l.conn.Write(hb); err != nil {
				l.werr = fmt.Errorf("send heartbeat to %s: %w", l.peer, err)
				l.abort(l.werr)
			} else {
				l.lastWrite.Store(time.Now().UnixNano())
			}
		}
		<-l.wsem
	}
}

// Close sends a close frame so the peer's Recv returns io.EOF after every
// packet sent before, then closes the connection.
func (l *link) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		timer := time.NewTimer(closeGrace)
		defer timer.Stop()
		select {
		case l.wsem <- struct{}{}:
		case <-timer.C:
			// A Send is stuck on a full socket: drop the connection to
			// release it.
			l.end(transport.ErrClosed)
			l.wsem <- struct{}{}
		}
		if l.werr == nil {
			_ = l.conn.SetWriteDeadline(time.Now().Add(closeGrace))
			if _, err := l.conn.Write(streamframe.AppendHeader(nil, frameClose, 0)); err == nil {
				_ = l.conn.CloseWrite()
			}
			l.werr = transport.ErrClosed
		}
		<-l.wsem
		l.end(transport.ErrClosed)
	})
	return nil
}

// abort closes the connection at once, without a close frame; cause is what
// a Recv or Send blocked on the connection reports.
func (l *link) abort(cause error) { l.end(cause) }

func (l *link) end(cause error) {
	l.ended.Do(cause, func() {
		_ = l.conn.Close()
		l.fr.Release()
		if l.onEnd != nil {
			l.onEnd(l)
		}
	})
}

var _ transport.Link = (*link)(nil)
