package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryhq/ferry/sdk/transport/internal/pb"
)

// linkIDKey is the request metadata naming the link a Link stream carries.
const linkIDKey = "ferry-link-id"

// server exposes a Transport over gRPC, inside the plugin process.
type server struct {
	pb.UnimplementedTransportServer
	t      Transport
	info   Info
	logger hclog.Logger

	mu        sync.Mutex
	nextID    uint64
	listeners map[uint64]Listener
	links     map[uint64]*serverLink
	closed    bool
	unclaimed time.Duration // how long a link may wait for its stream
}

type serverLink struct {
	Link
	streaming bool // a Link stream owns it
}

func newServer(t Transport, logger hclog.Logger) *server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &server{
		t:         t,
		info:      t.Info(),
		logger:    logger,
		listeners: map[uint64]Listener{},
		links:     map[uint64]*serverLink{},
		unclaimed: 30 * time.Second,
	}
}

func (s *server) Hello(ctx context.Context, req *pb.HelloRequest) (*pb.HelloResponse, error) {
	if req.HostMajor != ProtocolMajor {
		return nil, status.Errorf(codes.FailedPrecondition, "host speaks protocol %d, plugin speaks %d", req.HostMajor, ProtocolMajor)
	}
	return &pb.HelloResponse{
		PluginMajor: ProtocolMajor,
		PluginMinor: ProtocolMinor,
		Info:        infoToPB(s.info),
		Pid:         int64(os.Getpid()),
	}, nil
}

func (s *server) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.Empty, error) {
	if err := s.t.Configure(ctx, req.Settings); err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, nil
}

func (s *server) Listen(ctx context.Context, req *pb.ListenRequest) (*pb.ListenResponse, error) {
	l, err := s.t.Listen(ctx, req.Address)
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		l.Close()
		return nil, toStatus(ErrClosed)
	}
	s.nextID++
	s.listeners[s.nextID] = l
	return &pb.ListenResponse{ListenerId: s.nextID, Address: l.Addr()}, nil
}

func (s *server) Accept(ctx context.Context, req *pb.AcceptRequest) (*pb.LinkInfo, error) {
	s.mu.Lock()
	l := s.listeners[req.ListenerId]
	s.mu.Unlock()
	if l == nil {
		return nil, status.Errorf(codes.NotFound, "no listener %d: %v", req.ListenerId, ErrClosed)
	}
	link, err := l.Accept(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return s.addLink(link)
}

func (s *server) Dial(ctx context.Context, req *pb.DialRequest) (*pb.LinkInfo, error) {
	link, err := s.t.Dial(ctx, req.Address)
	if err != nil {
		return nil, toStatus(err)
	}
	return s.addLink(link)
}

func (s *server) addLink(link Link) (*pb.LinkInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		link.Close()
		return nil, toStatus(ErrClosed)
	}
	s.nextID++
	id := s.nextID
	s.links[id] = &serverLink{Link: link}
	// If the host never opens the link's stream (the reply was lost to a
	// cancelled call or a dying host), do not keep the link forever.
	time.AfterFunc(s.unclaimed, func() {
		s.mu.Lock()
		l := s.links[id]
		if l != nil && !l.streaming {
			delete(s.links, id)
		} else {
			l = nil
		}
		s.mu.Unlock()
		if l != nil {
			s.logger.Debug("closing a link the host never opened", "link", id, "remote", l.RemoteAddr())
			l.Close()
		}
	})
	return &pb.LinkInfo{LinkId: id, LocalAddress: link.LocalAddr(), RemoteAddress: link.RemoteAddr()}, nil
}

func (s *server) CloseLink(ctx context.Context, req *pb.CloseLinkRequest) (*pb.Empty, error) {
	s.mu.Lock()
	l := s.links[req.LinkId]
	delete(s.links, req.LinkId)
	s.mu.Unlock()
	if l != nil {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			return nil, toStatus(err)
		}
	}
	return &pb.Empty{}, nil
}

func (s *server) CloseListener(ctx context.Context, req *pb.CloseListenerRequest) (*pb.Empty, error) {
	s.mu.Lock()
	l := s.listeners[req.ListenerId]
	delete(s.listeners, req.ListenerId)
	s.mu.Unlock()
	if l != nil {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			return nil, toStatus(err)
		}
	}
	return &pb.Empty{}, nil
}

func (s *server) Status(ctx context.Context, _ *pb.Empty) (*pb.StatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &pb.StatusResponse{Listeners: uint32(len(s.listeners)), Links: uint32(len(s.links))}, nil
}

// close closes everything the host opened, then the transport.
func (s *server) close() error {
	s.mu.Lock()
	s.closed = true
	ls, links := s.listeners, s.links
	s.listeners, s.links = map[uint64]Listener{}, map[uint64]*serverLink{}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, l := range links {
		l.Close()
	}
	return s.t.Close()
}

// Link pumps one link: frames from the host are sent on the link in order,
// and batches received on the link go back as frames, in order. The stream
// ends when either side ends: the host closing its send side or cancelling
// closes the link; the link reaching EOF ends the stream with OK, and a
// broken link ends it with the error.
func (s *server) Link(stream pb.Transport_LinkServer) error {
	ctx := stream.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	var id uint64
	if v := md.Get(linkIDKey); len(v) == 1 {
		id, _ = strconv.ParseUint(v[0], 10, 64)
	}
	s.mu.Lock()
	link := s.links[id]
	if link != nil && link.streaming {
		link = nil
	}
	if link != nil {
		link.streaming = true
	}
	s.mu.Unlock()
	if link == nil {
		return status.Errorf(codes.NotFound, "link %d does not exist or already has a stream: %v", id, ErrClosed)
	}
	defer func() {
		s.mu.Lock()
		delete(s.links, id)
		s.mu.Unlock()
		link.Close()
	}()

	// Host → link. Runs until the host half-closes or the stream ends; it
	// then closes the link so the loop below returns.
	inDone := make(chan error, 1)
	go func() {
		in := &inFrame{maxPacket: s.info.MaxMessageSize}
		for {
			if err := stream.RecvMsg(in); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				inDone <- err
				link.Close()
				return
			}
			if len(in.packets) == 0 {
				continue
			}
			if err := link.Send(ctx, in.packets); err != nil {
				inDone <- fmt.Errorf("send on link %d: %w", id, err)
				link.Close()
				return
			}
		}
	}()

	// Link → host, in this goroutine so batches keep their order.
	out := &outFrame{}
	for {
		packets, err := link.Recv(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			// If the host's side ended first, the link was closed on purpose.
			select {
			case inErr := <-inDone:
				if inErr == nil || ctx.Err() != nil {
					return nil
				}
				return toStatus(inErr)
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return toStatus(fmt.Errorf("receive on link %d: %w", id, err))
		}
		for len(packets) > 0 {
			n, body := splitBatch(packets)
			out.packets, out.body = packets[:n], body
			if err := stream.SendMsg(out); err != nil {
				// The stream is gone; RecvMsg in the goroutine sees why.
				return nil
			}
			packets = packets[n:]
		}
		out.packets = nil
	}
}

// Error kinds crossing the process boundary keep their sentinel identity.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrTooLarge) {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, ErrTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrClosed):
		code = codes.Aborted
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// fromStatus turns a status from the plugin back into an error that
// matches the SDK's sentinels with errors.Is.
func fromStatus(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.ResourceExhausted:
		return fmt.Errorf("%s: %s: %w", what, msg, ErrTooLarge)
	case codes.Aborted, codes.NotFound:
		return fmt.Errorf("%s: %s: %w", what, msg, ErrClosed)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %s: %w", what, msg, context.DeadlineExceeded)
	case codes.Canceled:
		return fmt.Errorf("%s: %s: %w", what, msg, context.Canceled)
	case codes.Unavailable:
		return fmt.Errorf("%s: %s: %w", what, msg, ErrUnavailable)
	}
	return fmt.Errorf("%s: %s", what, msg)
}

func infoToPB(i Info) *pb.Info {
	out := &pb.Info{
		Name:           i.Name,
		Version:        i.Version,
		AddressType:    i.AddressType,
		MaxMessageSize: int64(i.MaxMessageSize),
		Capabilities:   i.Capabilities,
	}
	for _, s := range i.Settings {
		out.Settings = append(out.Settings, &pb.Setting{
			Name: s.Name, Type: string(s.Type), Default: s.Default, Required: s.Required, Description: s.Description,
		})
	}
	return out
}

func infoFromPB(p *pb.Info) Info {
	i := Info{
		Name:           p.GetName(),
		Version:        p.GetVersion(),
		AddressType:    p.GetAddressType(),
		MaxMessageSize: int(p.GetMaxMessageSize()),
		Capabilities:   p.GetCapabilities(),
	}
	for _, s := range p.GetSettings() {
		i.Settings = append(i.Settings, Setting{
			Name: s.Name, Type: SettingType(s.Type), Default: s.Default, Required: s.Required, Description: s.Description,
		})
	}
	return i
}

// serverOptions are the gRPC options the plugin's server needs: explicit
// size limits (gRPC's 4 MiB default must not be what limits a packet) and
// the link codec.
func serverOptions(maxPacket int) []grpc.ServerOption {
	limit := grpcLimit(maxPacket)
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(limit),
		grpc.MaxSendMsgSize(limit),
		grpc.ForceServerCodecV2(linkCodec{}),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
		experimental.BufferPool(frames),
	}
}

// Flow-control windows and socket buffers for the plugin connection. Fixed
// windows (which turn off gRPC's BDP probing) sized for a local socket: big
// enough that a stream of 64 KiB packets never waits for a window update
// round trip, small enough to bound what a stalled link holds.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
	ioBuffer     = 256 << 10
)

// Both ends of the plugin connection take gRPC's buffers from frames, which
// does not zero them on Get: gRPC fills every buffer it takes (a received
// HTTP/2 data frame is read in full into it), and its default pool's
// clearing was ~9% of the host's CPU on a 64 KiB stream.

// DialOptions are the gRPC options a host should dial a plugin with (go-plugin
// ClientConfig.GRPCDialOptions), matching the server's flow-control tuning.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
		experimental.WithBufferPool(frames),
	}
}
