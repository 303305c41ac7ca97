package portalclient

import (
	"context"
	"fmt"
	"sync"

	pb "github.com/ferryhq/ferry/internal/pluginpb/portalv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/portal"
)

// ctrl is the host's end of a plugin's control stream (see
// pluginwire.PortalCtrlID): Dial and Accept ask there instead of making a
// gRPC call each, which cost every new connection an HTTP/2 and TLS round
// trip on both sides.
type ctrl struct {
	r  *Remote
	ms *pluginwire.MuxStream

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan pluginwire.CtrlMsg
	dead    chan struct{} // closed once the stream ended
	err     error
}

// startCtrl opens the control stream, or returns nil when it cannot (the
// gRPC calls serve then).
func startCtrl(r *Remote) *ctrl {
	ms, err := r.mux.Open(pluginwire.PortalCtrlID)
	if err != nil {
		return nil
	}
	if err := r.mux.SendOpen(pluginwire.PortalCtrlID); err != nil {
		ms.Close()
		return nil
	}
	c := &ctrl{r: r, ms: ms, waiting: map[uint64]chan pluginwire.CtrlMsg{}, dead: make(chan struct{})}
	go c.run()
	return c
}

// run hands the plugin's answers to their callers until the channel ends.
// What the plugin sends is untrusted: a malformed message, or one only the
// host may send, fails the channel (the plugin is then restarted).
func (c *ctrl) run() {
	var err error
	defer func() {
		c.mu.Lock()
		c.err = err
		close(c.dead)
		c.mu.Unlock()
		c.ms.Close()
	}()
	for {
		var payload []byte
		payload, err = c.ms.Read(context.Background())
		if err != nil {
			return
		}
		var m pluginwire.CtrlMsg
		m, err = pluginwire.DecodeCtrl(payload)
		if err == nil && m.Op != pluginwire.CtrlStream && m.Op != pluginwire.CtrlFail {
			err = fmt.Errorf("%w: op %d from the plugin", pluginwire.ErrCtrl, m.Op)
		}
		if err != nil {
			err = fmt.Errorf("control stream: %w: %w", err, pluginwire.ErrProtocol)
			c.r.mux.Fail(err)
			return
		}
		c.mu.Lock()
		ch := c.waiting[m.Req]
		delete(c.waiting, m.Req)
		c.mu.Unlock()
		if ch != nil {
			ch <- m // buffered for one answer
			continue
		}
		c.discard(m) // its caller gave up (cancelled)
	}
}

// call sends m (its Req filled in here) and waits for the answer until
// ctx ends; then the plugin is told to cancel.
func (c *ctrl) call(ctx context.Context, m pluginwire.CtrlMsg) (pluginwire.CtrlMsg, error) {
	ch := make(chan pluginwire.CtrlMsg, 1)
	c.mu.Lock()
	select {
	case <-c.dead:
		err := c.err
		c.mu.Unlock()
		return m, fmt.Errorf("%w (%v)", portal.ErrUnavailable, err)
	default:
	}
	c.next++
	m.Req = c.next
	c.waiting[m.Req] = ch
	c.mu.Unlock()
	if err := c.send(ctx, &m); err != nil {
		c.forget(m.Req)
		return m, fmt.Errorf("%w (%v)", portal.ErrUnavailable, err)
	}
	select {
	case ans := <-ch:
		return ans, nil
	case <-c.dead:
		c.forget(m.Req)
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		return m, fmt.Errorf("%w (%v)", portal.ErrUnavailable, err)
	case <-ctx.Done():
		c.forget(m.Req)
		select {
		case ans := <-ch:
			// Answered just as ctx ended: nobody takes it now.
			c.discard(ans)
		default:
			_ = c.send(context.WithoutCancel(ctx), &pluginwire.CtrlMsg{Op: pluginwire.CtrlCancel, Req: m.Req})
		}
		return m, ctx.Err()
	}
}

// discard takes a stream nobody waits for any more and closes it, so the
// plugin does not keep it parked.
func (c *ctrl) discard(ans pluginwire.CtrlMsg) {
	if ans.Op != pluginwire.CtrlStream {
		return
	}
	if st, err := c.r.openData(&pb.StreamInfo{StreamId: ans.Stream}); err == nil {
		st.Close()
	}
}

func (c *ctrl) forget(req uint64) {
	c.mu.Lock()
	delete(c.waiting, req)
	c.mu.Unlock()
}

func (c *ctrl) send(ctx context.Context, m *pluginwire.CtrlMsg) error {
	b := m.Append(make([]byte, 0, 64))
	return c.ms.WriteFrame(ctx, len(b), func(p []byte) { copy(p, b) })
}

// answer turns the plugin's answer into a stream or an error that says
// what failed, as the gRPC calls' errors do.
func (c *ctrl) answer(what string, ans pluginwire.CtrlMsg) (portal.Stream, error) {
	if ans.Op == pluginwire.CtrlStream {
		return c.r.open(&pb.StreamInfo{StreamId: ans.Stream, Local: ans.Local, Remote: ans.Remote})
	}
	if ans.Code == pluginwire.CtrlClosed {
		return nil, fmt.Errorf("%s: %w", what, portal.ErrClosed)
	}
	return nil, fmt.Errorf("%s: %s", what, ans.Text)
}
