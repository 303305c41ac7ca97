package quictransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ferryhq/ferry/internal/streamframe"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Application error codes in CONNECTION_CLOSE frames.
const (
	codeClosed    quic.ApplicationErrorCode = 0 // clean close, after the close frame was read
	codeBadFrame  quic.ApplicationErrorCode = 1 // the peer sent malformed frames
	codeNoStream  quic.ApplicationErrorCode = 2 // the dialer opened no stream in time
	codeGoingAway quic.ApplicationErrorCode = 3 // the transport or listener is closing
	codeInternal  quic.ApplicationErrorCode = 4 // a local failure (a send cut short, ...)
	codeProtocol  quic.ApplicationErrorCode = 5 // the peer is not a ferry quic transport
)

// closeGrace bounds how long Close waits for a Send in progress and for the
// close frame to be taken by the stream.
const closeGrace = time.Second

// ErrIdle is wrapped by the error Recv returns when nothing (not even a
// keepalive) arrived within the idle timeout.
var ErrIdle = errors.New("quic transport: link idle")

// ErrPeerVanished is wrapped by the error Recv returns when the connection
// ended without the peer's close frame: the peer process died or restarted,
// or closed the connection abruptly.
var ErrPeerVanished = errors.New("quic transport: connection ended without a close frame")

type link struct {
	conn  *quic.Conn
	str   *quic.Stream
	cfg   config
	local string
	peer  string
	onEnd func(*link) // releases what the link owns and untracks it

	// Writing side. wsem is a one-slot semaphore rather than a mutex so a
	// Send waiting for another writer still honours its context.
	wsem chan struct{}
	fw   streamframe.Writer
	werr error // sticky: the stream can no longer be trusted

	// Reading side: one Recv at a time.
	rmu      sync.Mutex
	fr       *streamframe.Reader
	out      [][]byte
	rerr     error
	pending  error     // a read error that came with bytes, reported once they are parsed
	progress time.Time // when the last bytes arrived

	closed    atomic.Bool
	closeOnce sync.Once
	ended     *streamframe.End

	msgsSent, bytesSent, msgsRecv, bytesRecv atomic.Uint64
	final                                    atomic.Pointer[quic.ConnectionStats]
}

func newLink(conn *quic.Conn, str *quic.Stream, cfg config, local, peer string, onEnd func(*link)) *link {
	l := &link{
		conn:  conn,
		str:   str,
		cfg:   cfg,
		local: local,
		peer:  peer,
		onEnd: onEnd,
		wsem:  make(chan struct{}, 1),
		fr:    streamframe.NewReader(str, cfg.maxMessageSize, streamframe.MinReadBuffer, nil, frameErrors),
		ended: streamframe.NewEnd(),

		progress: time.Now(),
	}
	// A connection closed by the peer, by the idle timeout or by a dead
	// socket ends the link even when nobody is reading it, so its slot and
	// socket are released.
	context.AfterFunc(conn.Context(), func() {
		l.end(connCause(conn), codeClosed, "")
	})
	return l
}

func (l *link) LocalAddr() string  { return l.local }
func (l *link) RemoteAddr() string { return l.peer }

// connCause is why a connection was closed, as quic-go reports it.
func connCause(conn *quic.Conn) error {
	if err := context.Cause(conn.Context()); err != nil {
		return err
	}
	return transport.ErrClosed
}

// Send writes packets as data frames. If ctx ends while the stream cannot
// take more the link is closed: part of a frame may already be sent and the
// stream cannot be resynchronised.
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
	defer streamframe.CancelWrites(ctx, l.str)()
	vec := l.fw.Build(packets)
	var err error
	for _, b := range vec {
		if _, err = l.str.Write(b); err != nil {
			break
		}
	}
	l.fw.Release()
	if err != nil {
		return l.failWrite(ctx, err)
	}
	l.msgsSent.Add(uint64(len(packets)))
	var n uint64
	for _, p := range packets {
		n += uint64(len(p))
	}
	l.bytesSent.Add(n)
	return nil
}

// failWrite turns a write error into the link's sticky error and closes the
// connection. Called holding wsem.
func (l *link) failWrite(ctx context.Context, err error) error {
	select {
	case <-l.ended.Done():
		return l.ended.Cause()
	default:
	}
	if ctx.Err() != nil && isTimeout(err) {
		err = fmt.Errorf("send to %s interrupted, link closed because a frame may be cut: %w", l.peer, ctx.Err())
	} else {
		err = fmt.Errorf("send to %s: %w", l.peer, l.explain(err))
	}
	l.werr = err
	l.end(err, codeInternal, "send interrupted")
	return err
}

// isTimeout reports a deadline set on the stream (by a context or Close).
// quic-go's idle timeout error also says Timeout() but is not one of them.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// Recv returns every complete data frame already buffered, reading from the
// stream only when none is.
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
	l.fr.Shrink(streamframe.MinReadBuffer)
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
			_ = l.str.SetReadDeadline(time.Time{})
		}
	}()
	for {
		for {
			typ, p, ok, err := l.fr.Next()
			if err != nil {
				return l.failRead(fmt.Errorf("receive from %s: %w", l.peer, err), codeBadFrame)
			}
			if !ok {
				break
			}
			switch typ {
			case frameData:
				l.out = append(l.out, p)
				l.bytesRecv.Add(uint64(len(p)))
			case frameClose:
				return l.failRead(io.EOF, codeClosed)
			}
		}
		if len(l.out) > 0 {
			l.msgsRecv.Add(uint64(len(l.out)))
			return l.out, nil
		}
		if stop == nil && ctx.Done() != nil {
			// A stale wake-up is told apart below by checking ctx, and the
			// read is retried.
			stop = streamframe.WakeReads(ctx, l.str)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := l.pending; err != nil {
			l.pending = nil
			return l.readError(ctx, err)
		}
		partial := l.fr.Buffered() > 0
		if partial {
			// QUIC keepalives keep a connection open whatever the stream
			// does, so a peer that stops in the middle of a frame is caught
			// here: a frame is sent in one go, and only a peer that
			// stopped sending leaves one unfinished this long.
			readBy := l.progress.Add(l.cfg.idleTimeout)
			// quic-go fails a read past its deadline even when bytes are
			// waiting (Recv may not have been called for a while): give
			// the read a moment to find them.
			if floor := time.Now().Add(l.cfg.idleTimeout / 10); readBy.Before(floor) {
				readBy = floor
			}
			_ = l.str.SetReadDeadline(readBy)
			if ctx.Err() != nil || l.closed.Load() {
				// Their wake-up may have been overwritten just now.
				_ = l.str.SetReadDeadline(time.Unix(1, 0))
			}
		}
		n, err := l.fr.Fill()
		if n > 0 {
			l.fr.Advance(n)
			l.progress = time.Now()
		}
		if partial {
			_ = l.str.SetReadDeadline(time.Time{})
			if ctx.Err() != nil || l.closed.Load() {
				_ = l.str.SetReadDeadline(time.Unix(1, 0))
			}
		}
		if err == nil {
			continue
		}
		if n > 0 && !errors.Is(err, ErrBadFrame) && !isTimeout(err) {
			// quic-go returns the last bytes of a stream together with
			// io.EOF (or the connection's error): parse them first.
			l.pending = err
			continue
		}
		if partial && isTimeout(err) && ctx.Err() == nil && !l.closed.Load() && time.Since(l.progress) >= l.cfg.idleTimeout {
			return l.failRead(fmt.Errorf("receive from %s: a frame stalled unfinished for %s (%s): %w", l.peer, l.cfg.idleTimeout, SettingIdleTimeout, ErrIdle), codeProtocol)
		}
		if out, err, done := l.readErrorOrRetry(ctx, err); done {
			return out, err
		}
	}
}

// readError is readErrorOrRetry for an error that cannot be a stale
// deadline.
func (l *link) readError(ctx context.Context, err error) ([][]byte, error) {
	out, err, _ := l.readErrorOrRetry(ctx, err)
	return out, err
}

// readErrorOrRetry turns a stream read error into Recv's result; done is
// false when the read should be retried (a stale deadline).
func (l *link) readErrorOrRetry(ctx context.Context, err error) (out [][]byte, _ error, done bool) {
	switch {
	case errors.Is(err, ErrBadFrame):
		out, err := l.failRead(fmt.Errorf("receive from %s: %w", l.peer, err), codeBadFrame)
		return out, err, true
	case l.closed.Load():
		return nil, transport.ErrClosed, true
	case isTimeout(err):
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr, true
		}
		// A stale wake-up from an earlier call's context.
		_ = l.str.SetReadDeadline(time.Time{})
		if l.closed.Load() {
			// Close's wake-up may have been undone just now.
			return nil, transport.ErrClosed, true
		}
		return nil, nil, false
	case errors.Is(err, io.EOF):
		// The peer finished the stream without a close frame.
		out, err := l.failRead(fmt.Errorf("receive from %s: the stream ended without a close frame: %w", l.peer, ErrPeerVanished), codeProtocol)
		return out, err, true
	default:
		out, err := l.failRead(fmt.Errorf("receive from %s: %w", l.peer, l.explain(err)), codeInternal)
		return out, err, true
	}
}

// explain turns quic-go's connection errors into the package's.
func (l *link) explain(err error) error {
	var idle *quic.IdleTimeoutError
	var app *quic.ApplicationError
	var reset *quic.StatelessResetError
	switch {
	case errors.As(err, &idle):
		return fmt.Errorf("nothing received for %s (%s): %w", l.cfg.idleTimeout, SettingIdleTimeout, errors.Join(ErrIdle, err))
	case errors.As(err, &reset):
		return fmt.Errorf("the peer lost the connection (restarted?): %w", errors.Join(ErrPeerVanished, err))
	case errors.As(err, &app) && app.Remote:
		if app.ErrorCode == codeClosed {
			return fmt.Errorf("the peer closed the connection before its close frame arrived: %w", errors.Join(ErrPeerVanished, err))
		}
		return fmt.Errorf("the peer closed the connection: %w", err)
	case errors.As(err, &app):
		return l.ended.Cause()
	}
	return err
}

// failRead records the link's terminal read error. Frames already collected
// in this call are returned first; the error comes with the next Recv.
func (l *link) failRead(err error, code quic.ApplicationErrorCode) ([][]byte, error) {
	l.rerr = err
	if err == io.EOF {
		// The peer is gone, and waits for this side to close the
		// connection; later Sends fail as on a closed link.
		l.end(fmt.Errorf("%s closed the link: %w", l.peer, transport.ErrClosed), codeClosed, "closed")
	} else {
		l.end(err, code, err.Error())
	}
	if len(l.out) > 0 {
		l.msgsRecv.Add(uint64(len(l.out)))
		return l.out, nil
	}
	return nil, err
}

// Close sends a close frame and finishes the stream, so the peer's Recv
// returns io.EOF after every packet sent before. The connection itself is
// closed once the peer confirms (by closing it) or after idle_timeout:
// closing it earlier would discard what the peer has not read yet.
func (l *link) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		_ = l.str.SetReadDeadline(time.Unix(1, 0)) // wake a blocked Recv
		timer := time.NewTimer(closeGrace)
		defer timer.Stop()
		select {
		case l.wsem <- struct{}{}:
		case <-timer.C:
			// A Send is stuck on flow control: drop the connection to
			// release it.
			l.end(transport.ErrClosed, codeGoingAway, "closed")
			l.wsem <- struct{}{}
		}
		ok := false
		if l.werr == nil {
			_ = l.str.SetWriteDeadline(time.Now().Add(closeGrace))
			if _, err := l.str.Write(streamframe.AppendHeader(nil, frameClose, 0)); err == nil {
				ok = l.str.Close() == nil
			}
			l.werr = transport.ErrClosed
		}
		<-l.wsem
		if !ok {
			l.end(transport.ErrClosed, codeGoingAway, "closed")
			return
		}
		go l.linger()
	})
	return nil
}

func (l *link) linger() {
	t := time.NewTimer(l.cfg.idleTimeout)
	defer t.Stop()
	select {
	case <-l.ended.Done():
	case <-t.C:
	}
	l.end(transport.ErrClosed, codeClosed, "closed")
}

// end closes the connection at once; cause is what operations blocked on
// the link report.
func (l *link) end(cause error, code quic.ApplicationErrorCode, msg string) {
	l.ended.Do(cause, func() {
		st := l.conn.ConnectionStats()
		l.final.Store(&st)
		_ = l.conn.CloseWithError(code, msg)
		if l.onEnd != nil {
			l.onEnd(l)
		}
	})
}

// Counters counts packets and payload bytes both ways and the QUIC
// packets and bytes (with retransmissions) underneath.
func (l *link) Counters() map[string]uint64 {
	st := l.final.Load()
	if st == nil {
		s := l.conn.ConnectionStats()
		st = &s
	}
	return map[string]uint64{
		"messages_sent":         l.msgsSent.Load(),
		"bytes_sent":            l.bytesSent.Load(),
		"messages_received":     l.msgsRecv.Load(),
		"bytes_received":        l.bytesRecv.Load(),
		"quic_packets_sent":     st.PacketsSent,
		"quic_packets_received": st.PacketsReceived,
		"quic_bytes_sent":       st.BytesSent,
		"quic_bytes_received":   st.BytesReceived,
	}
}

var _ transport.Link = (*link)(nil)
