package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ferryhq/ferry/sdk/routing"
)

// Defaults for the error-message rate limits (Config).
const (
	// DefaultErrorsPerSecond is the sustained rate of error messages a node
	// sends back towards one source (a link, or local workers as one).
	DefaultErrorsPerSecond = 10
	// DefaultErrorBurst is how many error messages one source may get at
	// once before the rate applies.
	DefaultErrorBurst = 20
	// DefaultNodeErrorsPerSecond bounds error messages from the whole node;
	// the burst is twice the rate.
	DefaultNodeErrorsPerSecond = 200
	// maxErrorSources bounds the sources tracked at once.
	maxErrorSources = 4096
	// errorSendTimeout bounds the wait for room in the first hop's mailbox;
	// an error that cannot be queued by then is dropped.
	errorSendTimeout = 2 * time.Second
)

// tokenBucket allows rate events per second with bursts of burst.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// errorLimiter holds a bucket per source plus one for the node.
type errorLimiter struct {
	rate, burst, nodeRate float64

	mu      sync.Mutex
	node    tokenBucket
	sources map[string]*tokenBucket
	dropped uint64
}

func (l *errorLimiter) allow(source string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[source]
	if b == nil {
		if len(l.sources) >= maxErrorSources {
			// Forget sources whose buckets are full again: they behave.
			for k, s := range l.sources {
				if s.tokens+now.Sub(s.last).Seconds()*l.rate >= l.burst {
					delete(l.sources, k)
				}
			}
			if len(l.sources) >= maxErrorSources {
				l.dropped++
				return false
			}
		}
		b = &tokenBucket{}
		l.sources[source] = b
	}
	if !b.take(now, l.rate, l.burst) {
		l.dropped++
		return false
	}
	if !l.node.take(now, l.nodeRate, 2*l.nodeRate) {
		l.dropped++
		return false
	}
	return true
}

// ErrorsSuppressed returns how many error messages the rate limits kept
// this node from sending.
func (n *Node) ErrorsSuppressed() uint64 {
	n.errs.mu.Lock()
	defer n.errs.mu.Unlock()
	return n.errs.dropped
}

func originOf(m *routing.Message) string {
	if m.Local.Origin != "" {
		return m.Local.Origin
	}
	return m.Local.Flow
}

// ReportUndeliverable sends an error message for msg, which could not be
// delivered because of err, back along msg's return route. Workers that pass
// messages on for others (hops, relays) call it when they cannot; the node
// calls it itself for what it routes on someone's behalf. Nothing is sent for
// an error message, a message without a return route, a node shutting down or
// a sender that gave up; and at most the configured rate per source.
func (n *Node) ReportUndeliverable(msg *routing.Message, err error) {
	n.bounce(msg, nil, err)
}

// ReportUndeliverableVia is ReportUndeliverable for a message whose return
// route is the far side of the local worker via (a link that could not put
// itself on a full return route): the error goes out through via.
func (n *Node) ReportUndeliverableVia(msg *routing.Message, via routing.Address, err error) {
	n.bounce(msg, &via, err)
}

func (n *Node) bounce(msg *routing.Message, via *routing.Address, cause error) {
	if cause == nil || len(msg.Return) == 0 || IsErrorPayload(msg.Payload) || n.stopping.Load() {
		return
	}
	if errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) || errors.Is(cause, ErrNodeStopped) {
		return
	}
	origin := originOf(msg)
	source := origin
	if source == "" {
		source = "local"
	}
	if !n.errs.allow(source, time.Now()) {
		return
	}
	re := &RemoteError{Code: codeOf(cause), Node: n.name, Address: msg.Onward.String(), Cause: cause.Error()}
	onward := msg.Return
	if via != nil {
		onward = append(routing.Route{*via}, msg.Return...)
	}
	em := &routing.Message{Onward: onward, Payload: EncodeError(re), Local: routing.LocalInfo{Origin: origin}}
	// Routed from its own goroutine so a link reader or a hop never waits
	// on the sender's path; the rate limit bounds these goroutines.
	go func() {
		ctx, cancel := context.WithTimeout(n.life, errorSendTimeout)
		defer cancel()
		if err := n.routeMsg(ctx, nil, em, false); err != nil && n.log.IsDebug() {
			n.log.Debug("could not send an error back", "to", em.Onward.String(), "cause", re.Error(), "error", err)
		}
	}()
}

// noDialKey marks a routing context whose message came from a network.
type noDialKey struct{}

// MayDial reports whether a Resolver called with ctx may open a new link.
// It is false while the node routes a message that came from a network to
// an address Config.NetworkDialAllow does not name: such a message may go
// out only over links that exist.
func MayDial(ctx context.Context) bool { return ctx.Value(noDialKey{}) == nil }
