package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	pb "github.com/ferryhq/ferry/internal/pluginpb/transportv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
)

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
	hostCaps  []pluginv1.Capability

	// data is the plugin's end of the data channel, if the host passed
	// one; mux runs on it once both sides agreed at Hello.
	data net.Conn
	mux  *pluginwire.Mux

	fwd forwarding
}

// capabilities are what this SDK offers a host at minor ProtocolMinor.
var capabilities = []pluginv1.Capability{
	pluginv1.Capability_CAPABILITY_COUNTERS,
	pluginv1.Capability_CAPABILITY_PROPERTIES,
	pluginv1.Capability_CAPABILITY_FORWARD_RULES,
}

type serverLink struct {
	Link
	streaming bool // a Link stream owns it

	// rules are the forwarding rules involving this link, read by its pump
	// per batch; nil when there are none.
	rules atomic.Pointer[[]*fwdRule]
	// sendMu orders Sends from the link's own pump and from rules that
	// forward onto it.
	sendMu sync.Mutex
	// ruleDeadline is when a rule's Send in progress counts as stalled
	// (Unix nanoseconds; 0: none in progress).
	ruleDeadline atomic.Int64
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

// plugin is the go-plugin glue serving s.
func (s *server) plugin() *pluginwire.ServerPlugin {
	return &pluginwire.ServerPlugin{
		Hello:    s.Hello,
		Register: func(gs *grpc.Server) { pb.RegisterTransportServer(gs, s) },
	}
}

// Hello answers the base Hello every plugin kind answers.
func (s *server) Hello(ctx context.Context, req *pluginv1.HelloRequest) (*pluginv1.HelloResponse, error) {
	if req.HostMajor != ProtocolMajor {
		return nil, status.Errorf(codes.FailedPrecondition, "host speaks protocol %d, plugin speaks %d", req.HostMajor, ProtocolMajor)
	}
	offer := capabilities
	if s.data != nil {
		offer = append(slices.Clip(offer), pluginwire.DataOffer(s.data)...)
	}
	s.mu.Lock()
	s.hostCaps = pluginwire.Intersect(offer, req.HostCapabilities)
	if s.data != nil && s.mux == nil && pluginwire.Has(s.hostCaps, pluginv1.Capability_CAPABILITY_DATA_CHANNEL) {
		s.mux = pluginwire.NewMux(pluginwire.DataConn(s.data, s.hostCaps), pluginwire.MuxConfig{
			MaxFrame: pluginwire.GRPCLimit(s.info.MaxMessageSize),
			OnOpen:   s.openData,
			Logger:   s.logger,
		})
	}
	s.mu.Unlock()
	resp := helloResponse(s.info)
	resp.Capabilities = offer
	return resp, nil
}

func (s *server) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.Empty, error) {
	if err := Apply(ctx, s.t, req.Settings); err != nil {
		return nil, toStatus(err)
	}
	// The host checks sends against the configured limit before they
	// cross, so an oversized packet fails on its sender's side with
	// ErrTooLarge instead of breaking the link in here.
	max := EffectiveMaxMessageSize(s.t, req.Settings)
	if max > 0 {
		if err := grpc.SetHeader(ctx, metadata.Pairs(pluginwire.MaxMessageSizeKey, strconv.Itoa(max))); err != nil {
			s.logger.Debug("could not report the configured max message size", "error", err)
		}
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
	resp := &pb.ListenResponse{ListenerId: s.nextID, Address: l.Addr()}
	if p, ok := l.(Properties); ok {
		resp.HasProperties, resp.Properties = true, p.Properties()
	}
	_, resp.HasCounters = l.(Counters)
	return resp, nil
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
	_, counts := link.(Counters)
	return &pb.LinkInfo{LinkId: id, LocalAddress: link.LocalAddr(), RemoteAddress: link.RemoteAddr(), HasCounters: counts}, nil
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

// Counters reports the counters of a listener or link that has them.
func (s *server) Counters(ctx context.Context, req *pb.CountersRequest) (*pb.CountersResponse, error) {
	s.mu.Lock()
	var v any
	if req.ListenerId != 0 {
		if l := s.listeners[req.ListenerId]; l != nil {
			v = l
		}
	} else if l := s.links[req.LinkId]; l != nil {
		v = l.Link
	}
	s.mu.Unlock()
	if v == nil {
		return nil, status.Errorf(codes.NotFound, "no listener %d or link %d: %v", req.ListenerId, req.LinkId, ErrClosed)
	}
	c, ok := v.(Counters)
	if !ok {
		return &pb.CountersResponse{}, nil
	}
	return &pb.CountersResponse{Counters: c.Counters()}, nil
}

// close closes everything the host opened, then the transport.
func (s *server) close() error {
	s.mu.Lock()
	s.closed = true
	ls, links := s.listeners, s.links
	s.listeners, s.links = map[uint64]Listener{}, map[uint64]*serverLink{}
	mux := s.mux
	s.mu.Unlock()
	if mux != nil {
		defer mux.Close()
	}
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
	if v := md.Get(pluginwire.LinkIDKey); len(v) == 1 {
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
		s.dropLinkRules(link)
		link.Close()
	}()

	// Host → link. Runs until the host half-closes or the stream ends; it
	// then closes the link so the loop below returns.
	inDone := make(chan error, 1)
	go func() {
		in := &pluginwire.InFrame{MaxPacket: s.info.MaxMessageSize}
		for {
			if err := stream.RecvMsg(in); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				inDone <- err
				link.Close()
				return
			}
			if len(in.Packets) == 0 {
				continue
			}
			if err := link.sendFromHost(ctx, in.Packets); err != nil {
				inDone <- fmt.Errorf("send on link %d: %w", id, err)
				link.Close()
				return
			}
		}
	}()

	// Link → host, in this goroutine so batches keep their order.
	out := &pluginwire.OutFrame{}
	var st *fwdScratch
	for {
		packets, err := link.Recv(ctx)
		if rs := link.rules.Load(); rs != nil && err == nil {
			if st == nil {
				st = newFwdScratch()
			}
			packets = s.forwardBatch(link, *rs, packets, st)
		}
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
			n, body := pluginwire.SplitBatch(packets)
			out.Packets, out.Body = packets[:n], body
			if err := stream.SendMsg(out); err != nil {
				// The stream is gone; RecvMsg in the goroutine sees why.
				return nil
			}
			packets = packets[n:]
		}
		out.Packets = nil
		if st != nil {
			st.awaitFences()
		}
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

// helloResponse describes a transport in the base Hello.
func helloResponse(i Info) *pluginv1.HelloResponse {
	out := &pluginv1.HelloResponse{
		Kind:          pluginv1.Kind_KIND_TRANSPORT,
		Name:          i.Name,
		Version:       i.Version,
		ProtocolMajor: ProtocolMajor,
		ProtocolMinor: ProtocolMinor,
		Capabilities:  capabilities,
		Pid:           int64(os.Getpid()),
		Transport: &pluginv1.TransportDetails{
			AddressType:    i.AddressType,
			MaxMessageSize: int64(i.MaxMessageSize),
			Unreliable:     i.Unreliable,
		},
		Features: i.Capabilities,
	}
	for _, s := range i.Settings {
		out.Settings = append(out.Settings, &pluginv1.Setting{
			Name: s.Name, Type: string(s.Type), Default: s.Default, Required: s.Required, Description: s.Description,
		})
	}
	return out
}

// serverOptions are the gRPC options the plugin's server needs for this
// transport's packet size.
func (s *server) serverOptions() []grpc.ServerOption {
	return pluginwire.ServerOptions(pluginwire.GRPCLimit(s.info.MaxMessageSize), pluginwire.LinkCodec{})
}

// openData starts moving link id's data on the data channel, which the
// host asked for with OPEN. It runs on the channel's reader goroutine and
// must not block.
func (s *server) openData(id uint64) {
	s.mu.Lock()
	mux := s.mux
	link := s.links[id]
	if link != nil && link.streaming {
		link = nil
	}
	if link != nil {
		link.streaming = true
	}
	s.mu.Unlock()
	ms, err := mux.Open(id)
	if err != nil {
		return // the channel is gone, or id is in use: nothing to answer on
	}
	if link == nil {
		ms.Fail(fmt.Errorf("link %d does not exist or already carries data: %w", id, ErrClosed))
		ms.Close()
		return
	}
	go s.pumpData(id, link, ms)
}

// pumpData moves one link's data over the data channel, as Link does over
// a gRPC stream: host → link in one goroutine, link → host in this one,
// batches in order both ways. The host's CLOSE ends the link.
func (s *server) pumpData(id uint64, link *serverLink, ms *pluginwire.MuxStream) {
	// Nothing here waits on a cancellation: the data channel ends its own
	// waits, and closing the link ends the link's. A context that cannot
	// end spares a transport the per-call work of watching one (a context
	// AfterFunc and deadline juggling on every Send and Recv of tcp).
	ctx := context.Background()
	inDone := make(chan struct{})
	go func() {
		defer close(inDone)
		defer link.Close()
		var packets [][]byte
		for {
			payload, err := ms.Read(ctx)
			if err != nil {
				return // the host closed the link, or the channel is gone
			}
			packets, err = pluginwire.ParseFrame(payload, packets, s.info.MaxMessageSize)
			if err != nil {
				ms.Fail(fmt.Errorf("bad frame from the host on link %d: %w", id, err))
				return
			}
			if len(packets) == 0 {
				continue
			}
			if err := link.sendFromHost(ctx, packets); err != nil {
				ms.Fail(fmt.Errorf("send on link %d: %w", id, err))
				return
			}
		}
	}()
	var st *fwdScratch
	for {
		packets, err := link.Recv(ctx)
		if rs := link.rules.Load(); rs != nil && err == nil {
			if st == nil {
				st = newFwdScratch()
			}
			packets = s.forwardBatch(link, *rs, packets, st)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				ms.CloseWrite()
			} else {
				select {
				case <-inDone: // the host closed it: not worth a report
				default:
					ms.Fail(fmt.Errorf("receive on link %d: %w", id, err))
				}
			}
			break
		}
		for len(packets) > 0 {
			n, body := pluginwire.SplitBatch(packets)
			batch := packets[:n]
			if err := ms.WriteFrame(ctx, pluginwire.FrameSize(body), func(b []byte) {
				pluginwire.AppendFrame(b[:0], batch, body)
			}); err != nil {
				link.Close()
				break
			}
			packets = packets[n:]
		}
		if st != nil && len(packets) == 0 {
			st.awaitFences()
		}
	}
	<-inDone
	s.mu.Lock()
	delete(s.links, id)
	s.mu.Unlock()
	s.dropLinkRules(link)
	ms.Close()
}
