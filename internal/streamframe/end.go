package streamframe

import (
	"sync"

	"github.com/ferryhq/ferry/sdk/transport"
)

// End records, once, why a stream link ended. The first Do keeps its cause
// and closes Done; Cause is what an operation that found the connection
// closed under it reports.
type End struct {
	once  sync.Once
	done  chan struct{}
	cause error
}

// NewEnd returns the End of a link that has not ended.
func NewEnd() *End { return &End{done: make(chan struct{})} }

// Do ends the link the first time it is called: it records cause, closes
// Done and then runs release (closing the connection, giving back buffers,
// telling the owner). Later calls do nothing.
func (e *End) Do(cause error, release func()) {
	e.once.Do(func() {
		e.cause = cause
		close(e.done)
		release()
	})
}

// Done is closed once the link ended.
func (e *End) Done() <-chan struct{} { return e.done }

// Cause is the error that ended the link, or transport.ErrClosed when it
// ended without one or has not ended yet (the connection was closed under
// an operation just before Do recorded why).
func (e *End) Cause() error {
	select {
	case <-e.done:
		if e.cause != nil {
			return e.cause
		}
	default:
	}
	return transport.ErrClosed
}
