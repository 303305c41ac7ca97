package portal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	pb "github.com/ferryhq/ferry/internal/pluginpb/portalv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/internal/pluginproc"
)

// ProtocolMajor is the portal plugin protocol major version (go-plugin's
// handshake ProtocolVersion); a host and a plugin with different majors
// refuse each other.
const ProtocolMajor = 1

// ProtocolMinor is the highest additive protocol revision this SDK speaks.
// Minor 2 adds the control stream on the data channel
// (pluginwire.PortalCtrlID): dial and accept without a gRPC call each.
const ProtocolMinor = pluginwire.PortalCtrlMinor

// ErrUnavailable is returned by calls into a plugin whose process is gone.
var ErrUnavailable = errors.New("portal: plugin unavailable")

// unclaimedTimeout closes an accepted or dialled stream the host never
// opened (it went away between Accept/Dial and Stream).
const unclaimedTimeout = 30 * time.Second

// grpcLimit is the explicit gRPC message size limit of the plugin's
// server: a chunk plus framing, far under it. go-plugin raises only the
// host's limits, so the plugin must set its own.
const grpcLimit = 4 << 20

// ServeOption changes how Serve runs.
type ServeOption func(*serveConfig)

type serveConfig struct {
	logger      hclog.Logger
	parentCheck time.Duration
	test        *plugin.ServeTestConfig
	data        net.Conn
}

// WithDataChannel serves stream data on conn, the plugin's end of a data
// channel, when serving in-process (WithTestConfig); a plugin process uses
// the channel its host passed it.
func WithDataChannel(conn net.Conn) ServeOption {
	return func(c *serveConfig) { c.data = conn }
}

// WithLogger sets the logger Serve logs to (default: JSON on stderr, which
// the host forwards into its own log).
func WithLogger(l hclog.Logger) ServeOption { return func(c *serveConfig) { c.logger = l } }

// WithParentCheck sets how often Serve checks that the host is still its
// parent (default 250ms; 0 disables).
func WithParentCheck(every time.Duration) ServeOption {
	return func(c *serveConfig) { c.parentCheck = every }
}

// WithTestConfig serves in-process for a test host (go-plugin's
// ServeTestConfig); no parent check runs.
func WithTestConfig(tc *plugin.ServeTestConfig) ServeOption {
	return func(c *serveConfig) { c.test = tc; c.parentCheck = 0 }
}

// Serve serves p to the host that launched this process and returns when
// the host ends the plugin. A plugin's main is:
//
//	func main() { portal.Serve(myportal.New()) }
//
// Nothing may be printed on stdout before Serve (it carries the go-plugin
// handshake); Serve points descriptor 1 at stderr so stray writes cannot
// corrupt it. Serve exits the process if the host dies.
func Serve(p Portal, opts ...ServeOption) {
	cfg := serveConfig{parentCheck: 250 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = hclog.New(&hclog.LoggerOptions{Name: "portal", Level: hclog.Trace, Output: os.Stderr, JSONFormat: true})
	}
	srv := newServer(p, cfg.logger)
	if cfg.test == nil {
		pluginproc.ReserveStdout()
		cfg.data = pluginwire.InheritedConn()
	}
	srv.data = cfg.data
	if cfg.parentCheck > 0 {
		go pluginproc.WatchParent(cfg.parentCheck, cfg.logger, func() { srv.close() })
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginwire.Handshake(),
		Plugins: plugin.PluginSet{pluginwire.PluginName: &pluginwire.ServerPlugin{
			Hello:    srv.Hello,
			Register: func(gs *grpc.Server) { pb.RegisterPortalServer(gs, srv) },
		}},
		GRPCServer: func(o []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(o, pluginwire.ServerOptions(grpcLimit, pluginwire.ChunkCodec{})...)...)
		},
		Logger: cfg.logger,
		Test:   cfg.test,
	})
	srv.close()
}

// server is the plugin side: it owns the real listeners and streams.
type server struct {
	pb.UnimplementedPortalServer
	p   Portal
	log hclog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	nextID    uint64
	listeners map[uint64]*srvListener
	pending   map[uint64]Stream // accepted or dialled, not yet claimed by Stream

	// data is the plugin's end of the data channel, if the host passed
	// one; mux runs on it once both sides agreed at Hello.
	data net.Conn
	mux  *pluginwire.Mux
}

type srvListener struct {
	l      Listener
	ch     chan Stream
	cancel context.CancelFunc
}

func newServer(p Portal, log hclog.Logger) *server {
	s := &server{p: p, log: log, listeners: map[uint64]*srvListener{}, pending: map[uint64]Stream{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *server) close() {
	s.cancel()
	s.mu.Lock()
	ls, ps := s.listeners, s.pending
	s.listeners, s.pending = map[uint64]*srvListener{}, map[uint64]Stream{}
	mux := s.mux
	s.mu.Unlock()
	if mux != nil {
		defer mux.Close()
	}
	for _, l := range ls {
		l.cancel()
		l.l.Close()
	}
	for _, st := range ps {
		st.Close()
	}
	s.p.Close()
}

// Hello answers the base Hello every plugin kind answers.
func (s *server) Hello(_ context.Context, req *pluginv1.HelloRequest) (*pluginv1.HelloResponse, error) {
	if req.HostMajor != ProtocolMajor {
		return nil, status.Errorf(codes.FailedPrecondition, "host speaks protocol %d, plugin speaks %d", req.HostMajor, ProtocolMajor)
	}
	var offer []pluginv1.Capability
	if s.data != nil {
		offer = pluginwire.DataOffer(s.data)
		s.mu.Lock()
		if s.mux == nil && pluginwire.Has(req.HostCapabilities, pluginv1.Capability_CAPABILITY_DATA_CHANNEL) {
			cfg := pluginwire.PortalMuxConfig()
			cfg.OnOpen, cfg.Logger = s.openData, s.log
			s.mux = pluginwire.NewMux(pluginwire.DataConn(s.data, req.HostCapabilities), cfg)
		}
		s.mu.Unlock()
	}
	i := s.p.Info()
	return &pluginv1.HelloResponse{
		Capabilities: offer,
		Kind:         pluginv1.Kind_KIND_PORTAL, Name: i.Name, Version: i.Version,
		ProtocolMajor: ProtocolMajor, ProtocolMinor: ProtocolMinor,
		Pid:    int64(os.Getpid()),
		Portal: &pluginv1.PortalDetails{Protocol: i.Protocol},
	}, nil
}

func (s *server) Listen(ctx context.Context, req *pb.ListenRequest) (*pb.ListenResponse, error) {
	l, err := s.p.Listen(ctx, req.Address)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	lctx, cancel := context.WithCancel(s.ctx)
	sl := &srvListener{l: l, ch: make(chan Stream), cancel: cancel}
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.listeners[id] = sl
	s.mu.Unlock()
	// One accept loop per listener, independent of the Accept calls, so a
	// cancelled Accept call loses no connection.
	go func() {
		for {
			st, err := l.Accept(lctx)
			if err != nil {
				close(sl.ch)
				return
			}
			select {
			case sl.ch <- st:
			case <-lctx.Done():
				st.Close()
				close(sl.ch)
				return
			}
		}
	}()
	return &pb.ListenResponse{ListenerId: id, Address: l.Addr()}, nil
}

func (s *server) Accept(ctx context.Context, req *pb.AcceptRequest) (*pb.StreamInfo, error) {
	s.mu.Lock()
	sl := s.listeners[req.ListenerId]
	s.mu.Unlock()
	if sl == nil {
		return nil, status.Errorf(codes.NotFound, "no listener %d", req.ListenerId)
	}
	select {
	case st, ok := <-sl.ch:
		if !ok {
			return nil, status.Error(codes.Aborted, ErrClosed.Error())
		}
		return s.park(st), nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (s *server) CloseListener(_ context.Context, req *pb.CloseListenerRequest) (*pb.Empty, error) {
	s.mu.Lock()
	sl := s.listeners[req.ListenerId]
	delete(s.listeners, req.ListenerId)
	s.mu.Unlock()
	if sl != nil {
		sl.cancel()
		sl.l.Close()
	}
	return &pb.Empty{}, nil
}

func (s *server) Dial(ctx context.Context, req *pb.DialRequest) (*pb.StreamInfo, error) {
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	st, err := s.p.Dial(ctx, req.Address)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return s.park(st), nil
}

// park keeps st until the host opens its Stream call.
func (s *server) park(st Stream) *pb.StreamInfo {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.pending[id] = st
	s.mu.Unlock()
	time.AfterFunc(unclaimedTimeout, func() {
		if st := s.claim(id); st != nil {
			s.log.Warn("stream never claimed by the host; closed", "stream", id)
			st.Close()
		}
	})
	info := &pb.StreamInfo{StreamId: id}
	if a, ok := st.(interface {
		LocalAddr() net.Addr
		RemoteAddr() net.Addr
	}); ok {
		info.Local, info.Remote = a.LocalAddr().String(), a.RemoteAddr().String()
	}
	return info
}

func (s *server) claim(id uint64) Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.pending[id]
	delete(s.pending, id)
	return st
}

// Stream pumps one stream both ways until both directions finished, the
// stream broke or the host cancelled.
func (s *server) Stream(call pb.Portal_StreamServer) (err error) {
	md, _ := metadata.FromIncomingContext(call.Context())
	vals := md.Get(pluginwire.StreamIDKey)
	if len(vals) != 1 {
		return status.Errorf(codes.InvalidArgument, "missing %s metadata", pluginwire.StreamIDKey)
	}
	id, err := strconv.ParseUint(vals[0], 10, 64)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "bad %s %q", pluginwire.StreamIDKey, vals[0])
	}
	st := s.claim(id)
	if st == nil {
		return status.Errorf(codes.NotFound, "no stream %d (already claimed or timed out)", id)
	}
	defer func() {
		// A stream that ends in failure (the host's session broke or the
		// host went away) is reset (RST for TCP), so its client sees an
		// error instead of a clean end of a short transfer.
		if l, ok := st.(interface{ SetLinger(int) error }); ok && err != nil {
			_ = l.SetLinger(0)
		}
		st.Close()
	}()
	readDone := make(chan error, 1)
	writeDone := make(chan error, 1)
	go func() { // stream -> host
		for {
			bp := pluginwire.ChunkPool.Get(pluginwire.ChunkSize)
			n, err := st.Read(*bp)
			if n > 0 {
				*bp = (*bp)[:n]
				out := &pluginwire.OutChunk{Buf: bp}
				serr := call.SendMsg(out)
				if out.Buf != nil { // not handed to gRPC
					pluginwire.ChunkPool.Put(out.Buf)
				}
				if serr != nil {
					readDone <- serr
					return
				}
			} else {
				pluginwire.ChunkPool.Put(bp)
			}
			if err == io.EOF {
				readDone <- call.SendMsg(&pluginwire.OutChunk{Fin: true})
				return
			}
			if err != nil {
				readDone <- status.Errorf(codes.FailedPrecondition, "read: %v", err)
				return
			}
		}
	}()
	go func() { // host -> stream
		for {
			var c pluginwire.InChunk
			if err := call.RecvMsg(&c); err != nil {
				if err == io.EOF {
					err = status.Error(codes.Aborted, "host ended its side without fin")
				}
				writeDone <- err
				return
			}
			if len(c.Data) > 0 {
				_, err := st.Write(c.Data)
				c.Free()
				if err != nil {
					writeDone <- status.Errorf(codes.FailedPrecondition, "write: %v", err)
					return
				}
			}
			c.Free()
			if c.Fin {
				if err := st.CloseWrite(); err != nil {
					writeDone <- status.Errorf(codes.FailedPrecondition, "half-close: %v", err)
					return
				}
				writeDone <- nil
				return
			}
		}
	}()
	var rd, wd bool
	for !rd || !wd {
		select {
		case err := <-readDone:
			if err != nil {
				return err
			}
			rd = true
		case err := <-writeDone:
			if err != nil {
				return err
			}
			wd = true
		case <-call.Context().Done():
			return status.FromContextError(call.Context().Err()).Err()
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "plugin shutting down")
		}
	}
	return nil
}

// openData starts moving stream id's bytes on the data channel, which the
// host asked for with OPEN. It runs on the channel's reader goroutine and
// must not block.
func (s *server) openData(id uint64) {
	s.mu.Lock()
	mux := s.mux
	s.mu.Unlock()
	ms, err := mux.Open(id)
	if err != nil {
		return
	}
	if id == pluginwire.PortalCtrlID {
		go s.control(ms)
		return
	}
	st := s.claim(id)
	if st == nil {
		ms.Fail(fmt.Errorf("no stream %d (already claimed or timed out)", id))
		ms.Close()
		return
	}
	go s.pumpData(st, ms)
}

// pumpData moves one stream's bytes both ways on the data channel until
// the host closes it: a clean end of either direction is a half-close
// (EOF), a broken one an error the other side sees.
func (s *server) pumpData(st Stream, ms *pluginwire.MuxStream) {
	defer ms.Close()
	defer st.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	inDone := make(chan struct{})
	go func() { // host -> stream
		defer close(inDone)
		for {
			payload, err := ms.Read(ctx)
			if err == io.EOF {
				if err := st.CloseWrite(); err != nil {
					ms.Fail(fmt.Errorf("half-close: %w", err))
				}
				return
			}
			if err != nil {
				// The host ended the stream without a fin (its session
				// failed), or the channel is gone: reset (RST for TCP) so
				// the client sees an error, not a clean end of a short
				// transfer.
				if l, ok := st.(interface{ SetLinger(int) error }); ok {
					_ = l.SetLinger(0)
				}
				st.Close()
				return
			}
			if _, err := st.Write(payload); err != nil {
				ms.Fail(fmt.Errorf("write: %w", err))
				st.Close()
				return
			}
		}
	}()
	bp := pluginwire.ChunkPool.Get(pluginwire.ChunkSize)
	defer pluginwire.ChunkPool.Put(bp)
	buf := *bp
	for { // stream -> host
		n, err := st.Read(buf)
		if n > 0 {
			if werr := ms.WriteFrame(ctx, n, func(b []byte) { copy(b, buf[:n]) }); werr != nil {
				break
			}
		}
		if err == io.EOF {
			ms.CloseWrite()
			break
		}
		if err != nil {
			ms.Fail(fmt.Errorf("read: %w", err))
			break
		}
	}
	// The host's CLOSE (or the channel's end) ends the other direction.
	<-inDone
}

// control serves the host's dial and accept requests on the control
// stream (see pluginwire.PortalCtrlID) until the channel ends. Each
// request runs on its own goroutine, as a gRPC call would; CtrlCancel
// ends a request the host no longer waits for.
func (s *server) control(ms *pluginwire.MuxStream) {
	ctx, cancel := context.WithCancel(s.ctx)
	var mu sync.Mutex
	live := map[uint64]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		ms.Close()
	}()
	reply := func(m *pluginwire.CtrlMsg) {
		b := m.Append(make([]byte, 0, 64))
		if err := ms.WriteFrame(ctx, len(b), func(p []byte) { copy(p, b) }); err != nil {
			s.log.Debug("control answer not sent", "error", err)
		}
	}
	// run starts request req with its own context; done forgets it.
	run := func(req uint64, timeout time.Duration, f func(ctx context.Context)) {
		rctx, rcancel := context.WithCancel(ctx)
		if timeout > 0 {
			rctx, rcancel = context.WithTimeout(ctx, timeout)
		}
		mu.Lock()
		if old := live[req]; old != nil {
			old()
		}
		live[req] = rcancel
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rcancel()
			f(rctx)
			mu.Lock()
			delete(live, req)
			mu.Unlock()
		}()
	}
	stream := func(req uint64, st Stream) *pluginwire.CtrlMsg {
		info := s.park(st)
		return &pluginwire.CtrlMsg{Op: pluginwire.CtrlStream, Req: req, Stream: info.StreamId, Local: info.Local, Remote: info.Remote}
	}
	for {
		payload, err := ms.Read(ctx)
		if err != nil {
			return
		}
		m, err := pluginwire.DecodeCtrl(payload)
		if err != nil {
			s.log.Warn("bad control message from the host", "error", err)
			continue
		}
		switch m.Op {
		case pluginwire.CtrlDial:
			run(m.Req, time.Duration(m.Timeout)*time.Millisecond, func(ctx context.Context) {
				st, err := s.p.Dial(ctx, m.Address)
				if err != nil {
					reply(&pluginwire.CtrlMsg{Op: pluginwire.CtrlFail, Req: m.Req, Code: pluginwire.CtrlFailed, Text: err.Error()})
					return
				}
				reply(stream(m.Req, st))
			})
		case pluginwire.CtrlAccept:
			s.mu.Lock()
			sl := s.listeners[m.Listener]
			s.mu.Unlock()
			if sl == nil {
				reply(&pluginwire.CtrlMsg{Op: pluginwire.CtrlFail, Req: m.Req, Code: pluginwire.CtrlNotFound, Text: fmt.Sprintf("no listener %d", m.Listener)})
				continue
			}
			run(m.Req, 0, func(ctx context.Context) {
				select {
				case st, ok := <-sl.ch:
					if !ok {
						reply(&pluginwire.CtrlMsg{Op: pluginwire.CtrlFail, Req: m.Req, Code: pluginwire.CtrlClosed, Text: ErrClosed.Error()})
						return
					}
					reply(stream(m.Req, st))
				case <-ctx.Done():
					reply(&pluginwire.CtrlMsg{Op: pluginwire.CtrlFail, Req: m.Req, Code: pluginwire.CtrlFailed, Text: ctx.Err().Error()})
				}
			})
		case pluginwire.CtrlCancel:
			mu.Lock()
			c := live[m.Req]
			mu.Unlock()
			if c != nil {
				c()
			}
		default:
			s.log.Warn("unexpected control message from the host", "op", m.Op)
		}
	}
}
