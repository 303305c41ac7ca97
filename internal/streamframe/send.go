package streamframe

import (
	"context"
	"fmt"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// CheckSizes returns an error wrapping transport.ErrTooLarge that names the
// first packet above max bytes and the peer it was for, or nil. A Send
// checks the whole batch before writing any of it.
func CheckSizes(packets [][]byte, max int, peer string) error {
	for i, p := range packets {
		if len(p) > max {
			return fmt.Errorf("send packet %d of %d bytes to %s (maximum %d): %w", i, len(p), peer, max, transport.ErrTooLarge)
		}
	}
	return nil
}

// WriteDeadliner is a connection or stream whose writes a deadline can
// interrupt (net.Conn, a QUIC stream).
type WriteDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// CancelWrites makes the end of ctx interrupt a write blocked on w, by
// moving w's write deadline into the past. Call the returned stop once the
// write returned: if ctx ended meanwhile, stop waits until that deadline
// was set and clears it, so it cannot hit the next writer. The caller must
// be w's only writer until then, and checks ctx.Err() first.
func CancelWrites(ctx context.Context, w WriteDeadliner) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	fired := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		_ = w.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !cancel() {
			<-fired
			_ = w.SetWriteDeadline(time.Time{})
		}
	}
}

// ReadDeadliner is a connection or stream whose reads a deadline can
// interrupt (net.Conn, a QUIC stream).
type ReadDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// WakeReads makes the end of ctx interrupt a read blocked on r, by moving
// r's read deadline into the past; stop unregisters it (context.AfterFunc).
// Unlike CancelWrites it does not wait for a wake-up in flight: the caller
// sets r's read deadline before each read, and tells a stale wake-up (from
// an earlier call's context) apart from its own by checking ctx and its
// own deadline when a read times out, and reads again.
func WakeReads(ctx context.Context, r ReadDeadliner) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Unix(1, 0)) })
}
