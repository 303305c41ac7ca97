// Package portalclient is the host side of the portal plugin protocol:
// Remote drives a portal served by a plugin process and is itself a
// portal.Portal. Plugin authors never import it; they use sdk/portal.
package portalclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	pb "github.com/ferryhq/ferry/internal/pluginpb/portalv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/portal"
)

// Remote is a portal.Portal served by a plugin process, driven over gRPC. Hosts get
// one by dispensing PluginName from a go-plugin client.
type Remote struct {
	c     pb.PortalClient
	info  portal.Info
	pid   int
	major uint32
	minor uint32

	ctx    context.Context // ends every stream on Close
	cancel context.CancelFunc
	nowait context.Context // always done: see dataStream.TryWrite
	mux    *pluginwire.Mux // stream data, when both sides use the data channel
	ctrl   *ctrl           // dial and accept, when the plugin serves the control stream
}

// New returns the portal served on conn by a plugin that answered hello
// (pluginwire.CallHello) as a portal.
func New(conn *grpc.ClientConn, hello *pluginv1.HelloResponse) (*Remote, error) {
	return NewWithData(conn, hello, nil)
}

// NewWithData is New with stream data on mux, the host's end of the data
// channel both sides agreed to use at hello (nil: gRPC streams).
func NewWithData(conn *grpc.ClientConn, hello *pluginv1.HelloResponse, mux *pluginwire.Mux) (*Remote, error) {
	if hello.GetKind() != pluginv1.Kind_KIND_PORTAL || hello.GetPortal() == nil {
		return nil, fmt.Errorf("hello: plugin %q is not a portal plugin", hello.GetName())
	}
	r := &Remote{
		c:     pb.NewPortalClient(conn),
		info:  portal.Info{Name: hello.Name, Version: hello.Version, Protocol: hello.Portal.Protocol},
		pid:   int(hello.Pid),
		major: hello.ProtocolMajor,
		minor: min(hello.ProtocolMinor, pluginwire.ProtocolMinor),
		mux:   mux,
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	var stop context.CancelFunc
	r.nowait, stop = context.WithCancel(context.Background())
	stop()
	if mux != nil && hello.ProtocolMinor >= pluginwire.PortalCtrlMinor {
		r.ctrl = startCtrl(r)
	}
	return r, nil
}

// portal.Info describes the plugin.
func (r *Remote) Info() portal.Info { return r.info }

// Pid is the plugin's process id.
func (r *Remote) Pid() int { return r.pid }

// Close ends every stream opened through r. The plugin process itself is
// ended by whoever launched it.
func (r *Remote) Close() error {
	r.cancel()
	return nil
}

// rpcErr turns a gRPC status into an error that says what failed. The
// plugin reports its own failures (dial refused, stream reset) as
// FailedPrecondition with the reason; Unavailable and Canceled mean the
// plugin connection itself is gone.
func rpcErr(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.Unavailable, codes.Canceled:
		return fmt.Errorf("%s: %w (%s)", what, portal.ErrUnavailable, st.Message())
	case codes.Aborted:
		return fmt.Errorf("%s: %w", what, portal.ErrClosed)
	}
	return fmt.Errorf("%s: %s", what, st.Message())
}

// Listen asks the plugin to listen.
func (r *Remote) Listen(ctx context.Context, address string) (portal.Listener, error) {
	resp, err := r.c.Listen(ctx, &pb.ListenRequest{Address: address})
	if err != nil {
		return nil, rpcErr("portal plugin "+r.info.Name, err)
	}
	return &remoteListener{r: r, id: resp.ListenerId, addr: resp.Address}, nil
}

// Dial asks the plugin to open a stream to address.
func (r *Remote) Dial(ctx context.Context, address string) (portal.Stream, error) {
	req := &pb.DialRequest{Address: address}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMs = max(1, int64(timeUntilMs(dl)))
	}
	if r.ctrl != nil {
		ans, err := r.ctrl.call(ctx, pluginwire.CtrlMsg{Op: pluginwire.CtrlDial, Timeout: uint32(min(req.TimeoutMs, 1<<32-1)), Address: address})
		if err != nil {
			return nil, fmt.Errorf("portal plugin %s: dial %s: %w", r.info.Name, address, err)
		}
		return r.ctrl.answer("portal plugin "+r.info.Name, ans)
	}
	info, err := r.c.Dial(ctx, req)
	if err != nil {
		return nil, rpcErr("portal plugin "+r.info.Name, err)
	}
	return r.open(info)
}

func (r *Remote) open(info *pb.StreamInfo) (portal.Stream, error) {
	if r.mux != nil {
		return r.openData(info)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	ctx = metadata.AppendToOutgoingContext(ctx, pluginwire.StreamIDKey, strconv.FormatUint(info.StreamId, 10))
	call, err := r.c.Stream(ctx, grpc.ForceCodecV2(pluginwire.ChunkCodec{}), grpc.MaxCallRecvMsgSize(grpcLimit), grpc.MaxCallSendMsgSize(grpcLimit))
	if err != nil {
		cancel()
		return nil, rpcErr("open stream", err)
	}
	return &remoteStream{call: call, cancel: cancel, id: info.StreamId, local: info.Local, remote: info.Remote}, nil
}

type remoteListener struct {
	r    *Remote
	id   uint64
	addr string
	once sync.Once
}

func (l *remoteListener) Addr() string { return l.addr }

func (l *remoteListener) Accept(ctx context.Context) (portal.Stream, error) {
	if c := l.r.ctrl; c != nil {
		ans, err := c.call(ctx, pluginwire.CtrlMsg{Op: pluginwire.CtrlAccept, Listener: l.id})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("accept on %s: %w", l.addr, ctx.Err())
			}
			return nil, fmt.Errorf("accept on %s: %w", l.addr, err)
		}
		return c.answer("accept on "+l.addr, ans)
	}
	info, err := l.r.c.Accept(ctx, &pb.AcceptRequest{ListenerId: l.id})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("accept on %s: %w", l.addr, ctx.Err())
		}
		return nil, rpcErr("accept on "+l.addr, err)
	}
	return l.r.open(info)
}

func (l *remoteListener) Close() error {
	var err error
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(l.r.ctx, closeTimeout)
		defer cancel()
		if _, e := l.r.c.CloseListener(ctx, &pb.CloseListenerRequest{ListenerId: l.id}); e != nil && l.r.ctx.Err() == nil {
			err = rpcErr("close listener "+l.addr, e)
		}
	})
	return err
}

// remoteStream is one plugin stream. Read runs on one goroutine, Write and
// CloseWrite on another (gRPC allows one receiver and one sender).
type remoteStream struct {
	call          pb.Portal_StreamClient
	cancel        context.CancelFunc
	id            uint64
	local, remote string

	cur  pluginwire.InChunk // the chunk buf points into
	buf  []byte
	rerr error

	finSeen  atomic.Bool // Read got the plugin's fin
	finSent  atomic.Bool // CloseWrite went out
	closeOne sync.Once
}

func (s *remoteStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		s.cur.Free() // the last chunk is used up: back to the pool
		if s.rerr != nil {
			return 0, s.rerr
		}
		err := s.call.RecvMsg(&s.cur)
		switch {
		case err == io.EOF:
			s.rerr = io.EOF
		case err != nil:
			s.rerr = rpcErr(fmt.Sprintf("portal stream %d", s.id), err)
		default:
			s.buf = s.cur.Data
			if s.cur.Fin {
				s.rerr = io.EOF
				s.finSeen.Store(true)
			}
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *remoteStream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), pluginwire.ChunkSize)
		// gRPC writes after SendMsg returns, and a Writer must not keep p:
		// copy into a pooled buffer gRPC returns once written.
		bp := pluginwire.ChunkPool.Get(n)
		copy(*bp, p[:n])
		out := &pluginwire.OutChunk{Buf: bp}
		err := s.call.SendMsg(out)
		if out.Buf != nil {
			pluginwire.ChunkPool.Put(out.Buf)
		}
		if err != nil {
			return written, s.sendErr(err)
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func (s *remoteStream) sendErr(err error) error {
	if errors.Is(err, io.EOF) {
		// gRPC reports the real status to the receiver; the sender only
		// learns that the call is over.
		return fmt.Errorf("portal stream %d: %w", s.id, portal.ErrClosed)
	}
	return rpcErr(fmt.Sprintf("portal stream %d", s.id), err)
}

func (s *remoteStream) CloseWrite() error {
	if err := s.call.SendMsg(&pluginwire.OutChunk{Fin: true}); err != nil {
		return s.sendErr(err)
	}
	s.finSent.Store(true)
	return nil
}

// Close ends the stream. After a clean finish both ways it first waits
// (bounded) for the plugin to end the call: gRPC's Send returns before the
// plugin has the data, and cancelling at once would cut off the last bytes
// and the fin still in flight.
func (s *remoteStream) Close() error {
	s.closeOne.Do(func() {
		if s.finSeen.Load() && s.finSent.Load() {
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					var c pluginwire.InChunk
					err := s.call.RecvMsg(&c)
					c.Free()
					if err != nil {
						return
					}
				}
			}()
			t := time.NewTimer(closeTimeout)
			select {
			case <-done:
			case <-t.C:
			}
			t.Stop()
		}
		s.cancel()
	})
	return nil
}

// LocalAddr and RemoteAddr describe the plugin's end of the stream.
func (s *remoteStream) LocalAddr() string  { return s.local }
func (s *remoteStream) RemoteAddr() string { return s.remote }

var _ portal.Portal = (*Remote)(nil)

const closeTimeout = 5 * time.Second

// grpcLimit caps a portal call's messages: a chunk plus framing, far under
// it.
const grpcLimit = 4 << 20

func timeUntilMs(t time.Time) float64 { return float64(time.Until(t)) / float64(time.Millisecond) }

// DataChannel reports whether stream data moves on the data channel.
func (r *Remote) DataChannel() bool { return r.mux != nil }

func (r *Remote) openData(info *pb.StreamInfo) (portal.Stream, error) {
	ms, err := r.mux.Open(info.StreamId)
	if err == nil {
		err = r.mux.SendOpen(info.StreamId)
	}
	if err != nil {
		if ms != nil {
			ms.Close()
		}
		return nil, fmt.Errorf("open stream %d: %w (%w)", info.StreamId, err, portal.ErrUnavailable)
	}
	s := &dataStream{r: r, ms: ms, id: info.StreamId, local: info.Local, remote: info.Remote}
	s.ctx, s.cancel = context.WithCancel(r.ctx)
	return s, nil
}

// dataStream is one plugin stream on the data channel. Read runs on one
// goroutine, Write and CloseWrite on another.
type dataStream struct {
	r             *Remote
	ms            *pluginwire.MuxStream
	id            uint64
	local, remote string
	ctx           context.Context
	cancel        context.CancelFunc

	buf  []byte // what is left of the payload Read returned last
	once sync.Once
}

func (s *dataStream) err(what string, err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return io.EOF
	case s.r.mux.Err() != nil:
		return fmt.Errorf("portal stream %d: %s: %w (%v)", s.id, what, portal.ErrUnavailable, s.r.mux.Err())
	case errors.Is(err, pluginwire.ErrChannelClosed), errors.Is(err, context.Canceled):
		return fmt.Errorf("portal stream %d: %s: %w", s.id, what, portal.ErrClosed)
	}
	return fmt.Errorf("portal stream %d: %s: %w", s.id, what, err)
}

func (s *dataStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		payload, err := s.ms.Read(s.ctx)
		if err != nil {
			return 0, s.err("read", err)
		}
		s.buf = payload
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *dataStream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), pluginwire.ChunkSize)
		chunk := p[:n]
		if err := s.ms.WriteFrame(s.ctx, n, func(b []byte) { copy(b, chunk) }); err != nil {
			return written, s.err("write", err)
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// TryWrite writes p, at most one chunk, only if that needs no waiting for
// the plugin's credit: ok is false, and nothing written, otherwise. It lets
// a caller that must not block (a portal session's handler) write a small
// message itself instead of handing it to a goroutine that may wait.
func (s *dataStream) TryWrite(p []byte) (ok bool, err error) {
	if len(p) > pluginwire.ChunkSize {
		return false, nil
	}
	// A context that is already done makes WriteFrame return at once,
	// with that context's error, where it would wait for credit.
	err = s.ms.WriteFrame(s.r.nowait, len(p), func(b []byte) { copy(b, p) })
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, context.Canceled):
		return false, nil
	}
	return false, s.err("write", err)
}

func (s *dataStream) CloseWrite() error {
	if err := s.ms.CloseWrite(); err != nil {
		return s.err("half-close", err)
	}
	return nil
}

// Close ends the stream; what Write already queued still reaches the
// plugin first (frames keep their order on the channel).
func (s *dataStream) Close() error {
	s.once.Do(func() {
		s.ms.Close()
		s.cancel()
	})
	return nil
}

// LocalAddr and RemoteAddr describe the plugin's end of the stream.
func (s *dataStream) LocalAddr() string  { return s.local }
func (s *dataStream) RemoteAddr() string { return s.remote }
