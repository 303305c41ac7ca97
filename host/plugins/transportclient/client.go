// Package transportclient is the host side of the transport plugin
// protocol: Remote drives a transport served by a plugin process (or
// in-process over the same gRPC glue, ServeInProcess) and is itself a
// transport.Transport. Plugin authors never import it; they use
// sdk/transport.
package transportclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	pb "github.com/ferryhq/ferry/internal/pluginpb/transportv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/transport"
)

// defaultCloseFlush bounds how long closing a link waits for packets
// already accepted by Send to reach the plugin.
const defaultCloseFlush = 5 * time.Second

// Remote is a transport.Transport served by a plugin process, driven over
// gRPC. The host uses it like any in-process Transport. When the plugin process is
// gone, calls and links fail with errors matching transport.ErrUnavailable.
type Remote struct {
	conn  *grpc.ClientConn
	c     pb.TransportClient
	info  transport.Info
	minor int
	pid   int
	done  <-chan struct{}
	limit int
	// max is the largest packet the plugin takes as configured: Hello's
	// maximum, lowered by Configure's answer (or its max_message_size
	// setting). Sends above it fail here, before they cross.
	max  atomic.Int64
	caps []pluginv1.Capability
	// mux is the data channel, when both sides use it; nil: gRPC streams.
	mux *pluginwire.Mux
	// closeFlush bounds how long closing a link waits for packets already
	// accepted by Send to reach the plugin.
	closeFlush time.Duration
	// ruleIDs numbers the forwarding rules installed in the plugin.
	ruleIDs atomic.Uint64

	mu        sync.Mutex
	links     map[*remoteLink]struct{}
	listeners map[*remoteListener]struct{}
	closed    bool
}

var _ transport.Transport = (*Remote)(nil)

// New returns the transport served on conn by a plugin that answered
// hello (pluginwire.CallHello) as a transport. done, if not nil, is closed
// when the plugin process ends; errors then say so.
func New(conn *grpc.ClientConn, done <-chan struct{}, hello *pluginv1.HelloResponse) (*Remote, error) {
	return NewWithData(conn, done, hello, nil)
}

// NewWithData is New with link data on mux, the host's end of the data
// channel both sides agreed to use at hello (nil: gRPC streams).
func NewWithData(conn *grpc.ClientConn, done <-chan struct{}, hello *pluginv1.HelloResponse, mux *pluginwire.Mux) (*Remote, error) {
	if hello.GetKind() != pluginv1.Kind_KIND_TRANSPORT || hello.GetTransport() == nil {
		return nil, fmt.Errorf("hello: plugin %q is a %s plugin, not a transport", hello.GetName(), KindName(hello.GetKind()))
	}
	r := &Remote{
		conn:      conn,
		c:         pb.NewTransportClient(conn),
		done:      done,
		links:     map[*remoteLink]struct{}{},
		listeners: map[*remoteListener]struct{}{},

		closeFlush: defaultCloseFlush,
	}
	r.info = InfoFromHello(hello)
	if r.info.MaxMessageSize <= 0 {
		return nil, fmt.Errorf("hello: plugin %q reports max message size %d; it must be positive", r.info.Name, r.info.MaxMessageSize)
	}
	r.minor = int(min(hello.ProtocolMinor, pluginwire.ProtocolMinor))
	r.caps = pluginwire.Intersect(pluginwire.HostCapabilities, hello.Capabilities)
	r.pid = int(hello.Pid)
	r.limit = pluginwire.GRPCLimit(r.info.MaxMessageSize)
	r.max.Store(int64(r.info.MaxMessageSize))
	r.mux = mux
	return r, nil
}

// Dial says hello to the plugin served on conn and returns its transport.
func Dial(ctx context.Context, conn *grpc.ClientConn, done <-chan struct{}) (*Remote, error) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hello, err := pluginwire.CallHello(hctx, conn, pluginwire.HostCapabilities)
	if err != nil {
		return nil, fromStatus("hello", err)
	}
	return New(conn, done, hello)
}

// KindName is a plugin kind's name as the host shows it.
func KindName(k pluginv1.Kind) string {
	switch k {
	case pluginv1.Kind_KIND_TRANSPORT:
		return "transport"
	case pluginv1.Kind_KIND_PORTAL:
		return "portal"
	}
	return "unknown kind of"
}

// InfoFromHello is the transport.Info a transport plugin's Hello describes.
func InfoFromHello(h *pluginv1.HelloResponse) transport.Info {
	i := transport.Info{
		Name:           h.GetName(),
		Version:        h.GetVersion(),
		AddressType:    h.GetTransport().GetAddressType(),
		MaxMessageSize: int(h.GetTransport().GetMaxMessageSize()),
		Unreliable:     h.GetTransport().GetUnreliable(),
		Capabilities:   h.GetFeatures(),
	}
	for _, s := range h.GetSettings() {
		i.Settings = append(i.Settings, transport.Setting{
			Name: s.Name, Type: transport.SettingType(s.Type), Default: s.Default, Required: s.Required, Description: s.Description,
		})
	}
	return i
}

// Info returns the plugin's Info, as it reported it at hello.
func (r *Remote) Info() transport.Info { return r.info }

// Capabilities are the protocol capabilities both sides offered.
func (r *Remote) Capabilities() []pluginv1.Capability { return r.caps }

// ProtocolMinor is the minor protocol version both sides speak.
func (r *Remote) ProtocolMinor() int { return r.minor }

// Pid is the plugin's process id.
func (r *Remote) Pid() int { return r.pid }

// Done is closed when the plugin process has ended (nil if unknown).
func (r *Remote) Done() <-chan struct{} { return r.done }

// Status reports how many listeners and links the plugin holds for the host.
func (r *Remote) Status(ctx context.Context) (listeners, links int, err error) {
	resp, err := r.c.Status(ctx, &pb.Empty{})
	if err != nil {
		return 0, 0, r.wrap("status", err)
	}
	return int(resp.Listeners), int(resp.Links), nil
}

func (r *Remote) gone() bool {
	if r.done == nil {
		return false
	}
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wrap explains an error from a call into the plugin.
func (r *Remote) wrap(what string, err error) error {
	if status.Code(err) == codes.Unavailable && r.done != nil {
		// The connection usually breaks a moment before the process is
		// reaped; wait briefly so the error can say what happened.
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-r.done:
		case <-t.C:
		}
		t.Stop()
	}
	if r.gone() {
		return fmt.Errorf("%s: transport plugin %q has exited: %w", what, r.info.Name, transport.ErrUnavailable)
	}
	return fromStatus(what, err)
}

// Configure implements Transport.
func (r *Remote) Configure(ctx context.Context, settings map[string]string) error {
	var header metadata.MD
	if _, err := r.c.Configure(ctx, &pb.ConfigureRequest{Settings: settings}, grpc.Header(&header)); err != nil {
		return r.wrap("configure", err)
	}
	// The plugin says what its settings made of its maximum; one that
	// does not say is taken at its max_message_size setting.
	max := transport.MaxMessageSizeFor(r.info, settings)
	if v := header.Get(pluginwire.MaxMessageSizeKey); len(v) == 1 {
		if n, err := strconv.Atoi(v[0]); err == nil && n > 0 {
			max = n
		}
	}
	r.max.Store(int64(min(max, r.info.MaxMessageSize)))
	return nil
}

// MaxMessageSize implements transport.MaxMessageSizer: the largest packet
// the plugin takes as configured, at most Info().MaxMessageSize.
func (r *Remote) MaxMessageSize() int { return int(r.max.Load()) }

// checkSizes fails a batch holding a packet above the configured maximum
// with ErrTooLarge, naming the size, the limit and where the limit comes
// from, before any of the batch crosses into the plugin.
func (r *Remote) checkSizes(remote string, packets [][]byte) error {
	max := r.MaxMessageSize()
	for i, p := range packets {
		if len(p) <= max {
			continue
		}
		if max < r.info.MaxMessageSize {
			return fmt.Errorf("send to %s: packet %d: message of %d bytes exceeds the %s transport's max_message_size %d (setting %s): %w",
				remote, i, len(p), r.info.Name, max, transport.SettingMaxMessageSize, transport.ErrTooLarge)
		}
		return fmt.Errorf("send to %s: packet %d: message of %d bytes exceeds the %s transport's maximum message size %d: %w",
			remote, i, len(p), r.info.Name, max, transport.ErrTooLarge)
	}
	return nil
}

// Listen implements Transport.
func (r *Remote) Listen(ctx context.Context, address string) (transport.Listener, error) {
	resp, err := r.c.Listen(ctx, &pb.ListenRequest{Address: address})
	if err != nil {
		return nil, r.wrap("listen "+address, err)
	}
	l := &remoteListener{r: r, id: resp.ListenerId, addr: resp.Address, ch: make(chan transport.Link), failed: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.listeners[l] = struct{}{}
	}
	r.mu.Unlock()
	if closed {
		l.Close()
		return nil, fmt.Errorf("listen %s: %w", address, transport.ErrClosed)
	}
	return exposeListener(l, resp), nil
}

// Dial implements Transport.
func (r *Remote) Dial(ctx context.Context, address string) (transport.Link, error) {
	li, err := r.c.Dial(ctx, &pb.DialRequest{Address: address})
	if err != nil {
		return nil, r.wrap("dial "+address, err)
	}
	l, err := r.openLink(li)
	if err != nil {
		return nil, err
	}
	return l.exposed(), nil
}

// Close closes every listener and link opened through r. It does not end
// the plugin process; whoever launched it does that.
func (r *Remote) Close() error {
	r.mu.Lock()
	r.closed = true
	links, ls := r.links, r.listeners
	r.links, r.listeners = map[*remoteLink]struct{}{}, map[*remoteListener]struct{}{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for l := range ls {
		wg.Go(func() { l.Close() })
	}
	for l := range links {
		wg.Go(func() { l.Close() })
	}
	wg.Wait()
	return nil
}

func (r *Remote) openLink(li *pb.LinkInfo) (*remoteLink, error) {
	l := &remoteLink{
		r:          r,
		id:         li.LinkId,
		counts:     li.HasCounters && pluginwire.Has(r.caps, pluginv1.Capability_CAPABILITY_COUNTERS),
		local:      li.LocalAddress,
		remote:     li.RemoteAddress,
		sendq:      make(chan *[]byte, 2),
		closing:    make(chan struct{}),
		closed:     make(chan struct{}),
		writerDone: make(chan struct{}),
		recvDone:   make(chan struct{}),
		full:       make(chan *pluginwire.InFrame, 1),
		free:       make(chan *pluginwire.InFrame, 3),
	}
	if r.mux != nil {
		return r.openDataLink(l)
	}
	for range 3 {
		l.free <- &pluginwire.InFrame{MaxPacket: r.info.MaxMessageSize}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ctx = metadata.AppendToOutgoingContext(ctx, pluginwire.LinkIDKey, strconv.FormatUint(li.LinkId, 10))
	stream, err := r.conn.NewStream(ctx, &pb.Transport_ServiceDesc.Streams[0], pb.Transport_Link_FullMethodName,
		grpc.ForceCodecV2(pluginwire.LinkCodec{}), grpc.MaxCallRecvMsgSize(r.limit), grpc.MaxCallSendMsgSize(r.limit))
	if err != nil {
		cancel()
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		r.c.CloseLink(cctx, &pb.CloseLinkRequest{LinkId: li.LinkId})
		return nil, r.wrap(fmt.Sprintf("open link %d to %s", li.LinkId, li.RemoteAddress), err)
	}
	l.stream, l.cancel = stream, cancel
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.links[l] = struct{}{}
	}
	r.mu.Unlock()
	go l.writer()
	go l.reader()
	if closed {
		l.Close()
		return nil, fmt.Errorf("open link to %s: %w", li.RemoteAddress, transport.ErrClosed)
	}
	return l, nil
}

func (r *Remote) forgetLink(l *remoteLink) {
	r.mu.Lock()
	delete(r.links, l)
	r.mu.Unlock()
}

func (r *Remote) forgetListener(l *remoteListener) {
	r.mu.Lock()
	delete(r.listeners, l)
	r.mu.Unlock()
}

// remoteListener accepts links from a listener inside the plugin. Once
// Accept is first called, one Accept call at a time is kept outstanding in
// the plugin, so at most one link waits on the host side.
type remoteListener struct {
	r      *Remote
	id     uint64
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	start  sync.Once
	ch     chan transport.Link
	failed chan struct{}
	err    error
	once   sync.Once
}

func (l *remoteListener) Addr() string { return l.addr }

func (l *remoteListener) Accept(ctx context.Context) (transport.Link, error) {
	l.start.Do(func() { go l.loop() })
	select {
	case link := <-l.ch:
		return link, nil
	case <-l.failed:
		return nil, l.err
	case <-ctx.Done():
		return nil, fmt.Errorf("accept on %s: %w", l.addr, ctx.Err())
	}
}

func (l *remoteListener) loop() {
	defer close(l.failed)
	for {
		li, err := l.r.c.Accept(l.ctx, &pb.AcceptRequest{ListenerId: l.id})
		if err != nil {
			if l.ctx.Err() != nil {
				l.err = fmt.Errorf("accept on %s: %w", l.addr, transport.ErrClosed)
			} else {
				l.err = l.r.wrap("accept on "+l.addr, err)
			}
			return
		}
		link, err := l.r.openLink(li)
		if err != nil {
			l.err = err
			return
		}
		select {
		case l.ch <- link.exposed():
		case <-l.ctx.Done():
			link.Close()
			l.err = fmt.Errorf("accept on %s: %w", l.addr, transport.ErrClosed)
			return
		}
	}
}

func (l *remoteListener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		l.r.forgetListener(l)
		if l.r.gone() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, e := l.r.c.CloseListener(ctx, &pb.CloseListenerRequest{ListenerId: l.id}); e != nil {
			err = l.r.wrap("close listener "+l.addr, e)
		}
	})
	return err
}

// remoteLink is one link inside the plugin. A writer goroutine owns the
// stream's send side so Send can honour its context without breaking the
// stream; a reader goroutine fills a small ring of reused frames ahead of
// Recv.
type remoteLink struct {
	r             *Remote
	id            uint64
	local, remote string
	counts        bool // the plugin's link implements transport.Counters
	// ms carries the link's data when the data channel is in use; the
	// gRPC stream fields below are then unused.
	ms       *pluginwire.MuxStream
	dataIn   [][]byte // packets of the last frame Recv returned
	dataOnce sync.Once
	stream   grpc.ClientStream
	cancel   context.CancelFunc

	sendMu     sync.Mutex
	sendq      chan *[]byte
	closing    chan struct{} // Close started: refuse new sends
	writerDone chan struct{}
	sendErr    error

	recvMu   sync.Mutex
	full     chan *pluginwire.InFrame
	free     chan *pluginwire.InFrame
	cur      *pluginwire.InFrame
	closed   chan struct{} // Close flushed the send side: discard input
	recvDone chan struct{}
	recvErr  error

	once     sync.Once
	closeErr error // why the link is closed; set before closing is closed
}

func (l *remoteLink) LocalAddr() string  { return l.local }
func (l *remoteLink) RemoteAddr() string { return l.remote }

func (l *remoteLink) Send(ctx context.Context, packets [][]byte) error {
	if l.ms != nil {
		return l.sendData(ctx, packets)
	}
	if err := l.r.checkSizes(l.remote, packets); err != nil {
		return err
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	pool := pluginwire.Frames
	for len(packets) > 0 {
		select {
		case <-l.closing:
			return l.closeErr
		default:
		}
		select {
		case <-l.writerDone:
			return l.sendErr
		default:
		}
		n, body := pluginwire.SplitBatch(packets)
		buf := pool.Get(pluginwire.FrameSize(body))
		*buf = pluginwire.AppendFrame((*buf)[:0], packets[:n], body)
		select {
		case l.sendq <- buf:
		case <-l.closing:
			pool.Put(buf)
			return l.closeErr
		case <-l.writerDone:
			pool.Put(buf)
			return l.sendErr
		case <-ctx.Done():
			pool.Put(buf)
			return fmt.Errorf("send to %s: %w", l.remote, ctx.Err())
		}
		packets = packets[n:]
	}
	return nil
}

func (l *remoteLink) writer() {
	defer close(l.writerDone)
	var f pluginwire.EncodedFrame
	for buf := range l.sendq {
		f.Buf = buf
		if err := l.stream.SendMsg(&f); err != nil {
			if f.Buf != nil {
				pluginwire.Frames.Put(f.Buf)
			}
			// The real reason comes from the receive side of the stream.
			var recvErr error
			select {
			case <-l.recvDone:
				recvErr = l.recvErr
			case <-time.After(time.Second):
			}
			switch {
			case recvErr != nil && !errors.Is(recvErr, io.EOF):
				l.sendErr = recvErr
			case l.r.gone():
				l.sendErr = fmt.Errorf("send to %s: transport plugin %q has exited: %w", l.remote, l.r.info.Name, transport.ErrUnavailable)
			default:
				l.sendErr = fmt.Errorf("send to %s: link closed by the remote end: %w", l.remote, transport.ErrClosed)
			}
			go func() {
				for b := range l.sendq {
					pluginwire.Frames.Put(b)
				}
			}()
			return
		}
	}
	l.sendErr = fmt.Errorf("send to %s: %w", l.remote, transport.ErrClosed)
	l.stream.CloseSend()
}

func (l *remoteLink) reader() {
	defer close(l.recvDone)
	discard := &pluginwire.InFrame{MaxPacket: l.r.info.MaxMessageSize}
	for {
		var f *pluginwire.InFrame
		select {
		case f = <-l.free:
		case <-l.closed:
			f = discard
		}
		if err := l.stream.RecvMsg(f); err != nil {
			switch {
			case errors.Is(err, io.EOF):
				l.recvErr = io.EOF
			case isClosed(l.closed):
				l.recvErr = l.closeErr
			default:
				l.recvErr = l.r.wrap("receive from "+l.remote, err)
				l.cancel()
			}
			return
		}
		if f == discard || len(f.Packets) == 0 {
			if f != discard {
				l.free <- f
			}
			continue
		}
		select {
		case l.full <- f:
		case <-l.closed:
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (l *remoteLink) Recv(ctx context.Context) ([][]byte, error) {
	if l.ms != nil {
		return l.recvData(ctx)
	}
	l.recvMu.Lock()
	defer l.recvMu.Unlock()
	if l.cur != nil {
		l.free <- l.cur
		l.cur = nil
	}
	if isClosed(l.closed) {
		return nil, l.closeErr
	}
	select {
	case f := <-l.full:
		l.cur = f
		return f.Packets, nil
	default:
	}
	select {
	case f := <-l.full:
		l.cur = f
		return f.Packets, nil
	case <-l.recvDone:
		select {
		case f := <-l.full:
			l.cur = f
			return f.Packets, nil
		default:
		}
		return nil, l.recvErr
	case <-l.closed:
		return nil, l.closeErr
	case <-ctx.Done():
		return nil, fmt.Errorf("receive from %s: %w", l.remote, ctx.Err())
	}
}

// Close sends what Send already accepted, ends the link in the plugin and
// waits (bounded) for the plugin to confirm before releasing the stream.
func (l *remoteLink) Close() error {
	if l.ms != nil {
		return l.closeData()
	}
	l.once.Do(func() {
		if l.r.gone() {
			l.closeErr = fmt.Errorf("link to %s: transport plugin %q has exited: %w", l.remote, l.r.info.Name, transport.ErrUnavailable)
		} else {
			l.closeErr = fmt.Errorf("link to %s: %w", l.remote, transport.ErrClosed)
		}
		close(l.closing)
		l.sendMu.Lock()
		close(l.sendq)
		l.sendMu.Unlock()
		// One deadline for both waits: a plugin that stopped reading must
		// not hold Close beyond closeFlush.
		t := time.NewTimer(l.r.closeFlush)
		defer t.Stop()
		expired := false
		select {
		case <-l.writerDone:
		case <-l.r.done:
		case <-t.C:
			expired = true
		}
		close(l.closed)
		if !expired {
			select {
			case <-l.recvDone:
			case <-l.r.done:
			case <-t.C:
			}
		}
		l.cancel()
		l.r.forgetLink(l)
	})
	return nil
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
		return fmt.Errorf("%s: %s: %w", what, msg, transport.ErrTooLarge)
	case codes.Aborted, codes.NotFound:
		return fmt.Errorf("%s: %s: %w", what, msg, transport.ErrClosed)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %s: %w", what, msg, context.DeadlineExceeded)
	case codes.Canceled:
		return fmt.Errorf("%s: %s: %w", what, msg, context.Canceled)
	case codes.Unavailable:
		return fmt.Errorf("%s: %s: %w", what, msg, transport.ErrUnavailable)
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// countersTimeout bounds a Counters call into the plugin (the method has no
// context).
const countersTimeout = 2 * time.Second

func (r *Remote) counters(req *pb.CountersRequest) map[string]uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), countersTimeout)
	defer cancel()
	resp, err := r.c.Counters(ctx, req)
	if err != nil {
		return nil
	}
	return resp.Counters
}

// A plugin's listener or link implements transport.Counters or
// transport.Properties exactly when the one inside the plugin does: the
// host sees the same optional interfaces as in-process.

type countingLink struct{ *remoteLink }

func (l countingLink) Counters() map[string]uint64 {
	return l.r.counters(&pb.CountersRequest{LinkId: l.id})
}

func (l *remoteLink) exposed() transport.Link {
	if l.counts {
		return countingLink{l}
	}
	return l
}

type countingListener struct{ *remoteListener }

func (l countingListener) Counters() map[string]uint64 {
	return l.r.counters(&pb.CountersRequest{ListenerId: l.id})
}

type propertiesListener struct {
	*remoteListener
	props map[string]string
}

func (l propertiesListener) Properties() map[string]string { return maps.Clone(l.props) }

type countingPropertiesListener struct {
	countingListener
	props map[string]string
}

func (l countingPropertiesListener) Properties() map[string]string { return maps.Clone(l.props) }

func exposeListener(l *remoteListener, resp *pb.ListenResponse) transport.Listener {
	counts := resp.HasCounters && pluginwire.Has(l.r.caps, pluginv1.Capability_CAPABILITY_COUNTERS)
	props := resp.HasProperties && pluginwire.Has(l.r.caps, pluginv1.Capability_CAPABILITY_PROPERTIES)
	switch {
	case counts && props:
		return countingPropertiesListener{countingListener{l}, resp.Properties}
	case counts:
		return countingListener{l}
	case props:
		return propertiesListener{l, resp.Properties}
	}
	return l
}

// DataChannel reports whether link data moves on the data channel.
func (r *Remote) DataChannel() bool { return r.mux != nil }

// openDataLink registers l's id on the data channel, then asks the plugin
// to start moving its data.
func (r *Remote) openDataLink(l *remoteLink) (*remoteLink, error) {
	ms, err := r.mux.Open(l.id)
	if err == nil {
		err = r.mux.SendOpen(l.id)
	}
	if err != nil {
		if ms != nil {
			ms.Close()
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		r.c.CloseLink(cctx, &pb.CloseLinkRequest{LinkId: l.id})
		return nil, r.dataErr(fmt.Sprintf("open link %d to %s", l.id, l.remote), err)
	}
	l.ms = ms
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.links[l] = struct{}{}
	}
	r.mu.Unlock()
	if closed {
		l.Close()
		return nil, fmt.Errorf("open link to %s: %w", l.remote, transport.ErrClosed)
	}
	return l, nil
}

// dataErr explains a data channel failure: the plugin is gone, or it broke
// the protocol (and is being restarted).
func (r *Remote) dataErr(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if r.done != nil {
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-r.done:
		case <-t.C:
		}
		t.Stop()
	}
	if r.gone() {
		return fmt.Errorf("%s: transport plugin %q has exited: %w", what, r.info.Name, transport.ErrUnavailable)
	}
	if merr := r.mux.Err(); merr != nil {
		return fmt.Errorf("%s: %w (%w)", what, merr, transport.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (l *remoteLink) sendData(ctx context.Context, packets [][]byte) error {
	if err := l.r.checkSizes(l.remote, packets); err != nil {
		return err
	}
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	for len(packets) > 0 {
		n, body := pluginwire.SplitBatch(packets)
		batch := packets[:n]
		err := l.ms.WriteFrame(ctx, pluginwire.FrameSize(body), func(b []byte) {
			pluginwire.AppendFrame(b[:0], batch, body)
		})
		if err != nil {
			if l.ms.PeerClosed() {
				return fmt.Errorf("send to %s: link closed by the remote end: %w", l.remote, transport.ErrClosed)
			}
			// Closed by this host: ErrClosed, unless it was closed
			// because the plugin died (the supervisor releases a dead
			// plugin's client), which dataErr reports as ErrUnavailable.
			if errors.Is(err, pluginwire.ErrChannelClosed) && l.r.mux.Err() == nil && !l.r.gone() {
				return fmt.Errorf("send to %s: %w", l.remote, transport.ErrClosed)
			}
			return l.r.dataErr("send to "+l.remote, err)
		}
		packets = packets[n:]
	}
	return nil
}

func (l *remoteLink) recvData(ctx context.Context) ([][]byte, error) {
	l.recvMu.Lock()
	defer l.recvMu.Unlock()
	for {
		payload, err := l.ms.Read(ctx)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return nil, io.EOF
			case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
				return nil, fmt.Errorf("receive from %s: %w", l.remote, err)
			case errors.Is(err, pluginwire.ErrChannelClosed) && l.r.mux.Err() == nil && !l.r.gone():
				return nil, fmt.Errorf("receive from %s: %w", l.remote, transport.ErrClosed)
			case l.r.mux.Err() != nil, l.r.gone():
				return nil, l.r.dataErr("receive from "+l.remote, err)
			}
			// The plugin's link broke; err says why.
			return nil, fmt.Errorf("receive from %s: %w", l.remote, err)
		}
		l.dataIn, err = pluginwire.ParseFrame(payload, l.dataIn, l.r.info.MaxMessageSize)
		if err != nil {
			if errors.Is(err, pluginwire.ErrTooLarge) {
				err = fmt.Errorf("%w: %w", err, transport.ErrTooLarge)
			}
			// Untrusted input: the plugin broke the protocol.
			l.r.mux.Fail(fmt.Errorf("bad frame on link %d: %w (%w)", l.id, err, pluginwire.ErrProtocol))
			return nil, l.r.dataErr("receive from "+l.remote, err)
		}
		if len(l.dataIn) > 0 {
			return l.dataIn, nil
		}
	}
}

func (l *remoteLink) closeData() error {
	l.dataOnce.Do(func() {
		l.ms.Close()
		l.r.forgetLink(l)
	})
	return nil
}
