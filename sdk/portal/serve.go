package portal

import (
	"context"
	"errors"
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

	"github.com/ferryhq/ferry/sdk/internal/pluginproc"
	"github.com/ferryhq/ferry/sdk/portal/internal/pb"
)

// ProtocolMajor is the portal plugin protocol major version (go-plugin's
// handshake ProtocolVersion); a host and a plugin with different majors
// refuse each other.
const ProtocolMajor = 1

// ProtocolMinor is the highest additive protocol revision this SDK speaks.
const ProtocolMinor = 0

// PluginName is the key a portal is dispensed under in go-plugin's plugin
// set.
const PluginName = "portal"

// ErrUnavailable is returned by calls into a plugin whose process is gone.
var ErrUnavailable = errors.New("portal: plugin unavailable")

// streamIDKey names the stream in the Stream call's metadata.
const streamIDKey = "ferry-stream-id"

// chunkSize is the most bytes one Chunk carries. Reads from a stream are at
// most this large; writes are split to it.
const chunkSize = 256 << 10

// grpcLimit is the explicit gRPC message size limit on both sides: a chunk
// plus framing, far under it. go-plugin raises only the host's limits, so
// the plugin must set its own.
const grpcLimit = 4 << 20

// Flow-control windows: one stream may have streamWindow bytes in flight
// inside gRPC, which bounds a session's memory in the plugin path.
const (
	streamWindow = 1 << 20
	connWindow   = 16 << 20
	ioBuffer     = 256 << 10
)

// unclaimedTimeout closes an accepted or dialled stream the host never
// opened (it went away between Accept/Dial and Stream).
const unclaimedTimeout = 30 * time.Second

// HandshakeConfig is the go-plugin handshake shared by hosts and portal
// plugins. It differs from the transport handshake, so a transport binary
// is never mistaken for a portal.
func HandshakeConfig() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolMajor,
		MagicCookieKey:   "FERRY_PORTAL_PLUGIN",
		MagicCookieValue: "2c9e51a7-ferry-portal",
	}
}

// PluginSet returns the go-plugin plugin set for portals. A host dispenses
// PluginName, which yields a *Remote.
func PluginSet() plugin.PluginSet {
	return plugin.PluginSet{PluginName: &grpcPlugin{}}
}

// DialOptions are the gRPC options a host should use towards a portal
// plugin (pass them in go-plugin's ClientConfig.GRPCDialOptions).
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcLimit), grpc.MaxCallSendMsgSize(grpcLimit)),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
	}
}

func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(grpcLimit),
		grpc.MaxSendMsgSize(grpcLimit),
		grpc.ForceServerCodecV2(chunkCodec{}),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
	}
}

// ServeOption changes how Serve runs.
type ServeOption func(*serveConfig)

type serveConfig struct {
	logger      hclog.Logger
	parentCheck time.Duration
	test        *plugin.ServeTestConfig
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
	}
	if cfg.parentCheck > 0 {
		go pluginproc.WatchParent(cfg.parentCheck, cfg.logger, func() { srv.close() })
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: HandshakeConfig(),
		Plugins:         plugin.PluginSet{PluginName: &grpcPlugin{srv: srv}},
		GRPCServer: func(o []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(o, serverOptions()...)...)
		},
		Logger: cfg.logger,
		Test:   cfg.test,
	})
	srv.close()
}

type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv *server
}

func (g *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if g.srv == nil {
		return errors.New("portal plugin: no portal to serve")
	}
	pb.RegisterPortalServer(s, g.srv)
	return nil
}

func (g *grpcPlugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return newRemote(ctx, c)
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
	s.mu.Unlock()
	for _, l := range ls {
		l.cancel()
		l.l.Close()
	}
	for _, st := range ps {
		st.Close()
	}
	s.p.Close()
}

func (s *server) Hello(context.Context, *pb.Empty) (*pb.HelloResponse, error) {
	i := s.p.Info()
	return &pb.HelloResponse{PluginMajor: ProtocolMajor, PluginMinor: ProtocolMinor, Name: i.Name, Version: i.Version, Protocol: i.Protocol, Pid: int64(os.Getpid())}, nil
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
func (s *server) Stream(call pb.Portal_StreamServer) error {
	md, _ := metadata.FromIncomingContext(call.Context())
	vals := md.Get(streamIDKey)
	if len(vals) != 1 {
		return status.Errorf(codes.InvalidArgument, "missing %s metadata", streamIDKey)
	}
	id, err := strconv.ParseUint(vals[0], 10, 64)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "bad %s %q", streamIDKey, vals[0])
	}
	st := s.claim(id)
	if st == nil {
		return status.Errorf(codes.NotFound, "no stream %d (already claimed or timed out)", id)
	}
	defer st.Close()
	readDone := make(chan error, 1)
	writeDone := make(chan error, 1)
	go func() { // stream -> host
		for {
			bp := bufPool.Get(chunkSize)
			n, err := st.Read(*bp)
			if n > 0 {
				*bp = (*bp)[:n]
				out := &outChunk{buf: bp}
				serr := call.SendMsg(out)
				if out.buf != nil { // not handed to gRPC
					bufPool.Put(out.buf)
				}
				if serr != nil {
					readDone <- serr
					return
				}
			} else {
				bufPool.Put(bp)
			}
			if err == io.EOF {
				readDone <- call.SendMsg(&outChunk{fin: true})
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
			var c inChunk
			if err := call.RecvMsg(&c); err != nil {
				if err == io.EOF {
					err = status.Error(codes.Aborted, "host ended its side without fin")
				}
				writeDone <- err
				return
			}
			if len(c.data) > 0 {
				_, err := st.Write(c.data)
				c.free()
				if err != nil {
					writeDone <- status.Errorf(codes.FailedPrecondition, "write: %v", err)
					return
				}
			}
			c.free()
			if c.fin {
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
