// Package pluginwire is the wire side of Ferry's plugin protocol shared by
// the plugin SDK (sdk/transport, sdk/portal) and the host (host/plugins):
// the one go-plugin handshake, the base Hello service every plugin kind
// answers, the gRPC options both ends of a plugin connection use, and the
// hand-written codecs for link frames and portal chunks.
//
// It is internal to the module so that neither side imports the other:
// nothing under sdk/ imports host/, and the host-side clients are not in a
// plugin author's packages.
package pluginwire

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
)

// ProtocolMajor is the plugin protocol major version, go-plugin's handshake
// ProtocolVersion, shared by every plugin kind. Changing it breaks every
// plugin.
const ProtocolMajor = 1

// ProtocolMinor is the highest additive revision this module speaks.
// Minor 1: the base Hello service, typed capabilities, counters and
// listener properties.
const ProtocolMinor = 1

// PluginName is the key every plugin is dispensed under in go-plugin's
// plugin set; the kind comes from Hello, not from the key.
const PluginName = "ferry"

// LinkIDKey names the link a transport Link stream carries (request
// metadata); StreamIDKey the stream a portal Stream call carries.
const (
	LinkIDKey   = "ferry-link-id"
	StreamIDKey = "ferry-stream-id"
	// MaxMessageSizeKey carries, in the header of a transport plugin's
	// answer to Configure, the largest packet the configured transport
	// takes (its settings may lower Hello's maximum). A host that does not
	// know it ignores it; a plugin that does not send it leaves the host to
	// read the max_message_size setting.
	MaxMessageSizeKey = "ferry-max-message-size"
)

// Handshake is the one go-plugin handshake of every Ferry plugin, whatever
// its kind.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolMajor,
		MagicCookieKey:   "FERRY_PLUGIN",
		MagicCookieValue: "5f0c9a3e-ferry-plugin",
	}
}

// Flow-control windows and socket buffers for a plugin connection. Fixed
// windows (which turn off gRPC's BDP probing) sized for a local socket:
// big enough that a stream of 64 KiB packets never waits for a window
// update round trip, small enough to bound what a stalled link holds.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
	ioBuffer     = 256 << 10
)

// DialOptions are the gRPC options a host dials every plugin with
// (go-plugin ClientConfig.GRPCDialOptions). Both ends take gRPC's buffers
// from Frames, which does not zero them on Get: gRPC fills every buffer it
// takes, and its default pool's clearing was ~9% of the host's CPU on a
// 64 KiB stream.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer),
		grpc.WithWriteBufferSize(ioBuffer),
		experimental.WithBufferPool(Frames),
	}
}

// ControlDialOptions are DialOptions for a plugin the host has handed a
// data channel: link data then moves on that channel and the gRPC
// connection carries control calls only, so it gets gRPC's default 32 KiB
// read and write buffers instead of ioBuffer. The host's buffers are the
// ones that cost resident memory: the node allocates them after its
// start-up garbage was collected, so they are zeroed (touched) in full;
// 256 KiB ones made an idle node 0.7 MB bigger per plugin. A plugin that
// declines the data channel still works over gRPC streams, with these
// smaller host buffers.
func ControlDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		experimental.WithBufferPool(Frames),
	}
}

// ServerOptions are the gRPC options a plugin's server needs: explicit
// size limits (go-plugin raises only the host's, and gRPC's 4 MiB default
// must not be what limits a packet), the kind's codec and the tuning that
// matches DialOptions.
func ServerOptions(limit int, codec any) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(limit),
		grpc.MaxSendMsgSize(limit),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer),
		grpc.WriteBufferSize(ioBuffer),
		experimental.BufferPool(Frames),
	}
	switch c := codec.(type) {
	case LinkCodec:
		opts = append(opts, grpc.ForceServerCodecV2(c))
	case ChunkCodec:
		opts = append(opts, grpc.ForceServerCodecV2(c))
	}
	return opts
}

// ServerPlugin is the plugin side of the go-plugin glue: it registers the
// base Hello service and the kind's own service.
type ServerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Hello answers the host's Hello.
	Hello func(context.Context, *pluginv1.HelloRequest) (*pluginv1.HelloResponse, error)
	// Register registers the kind's service.
	Register func(*grpc.Server)
}

// GRPCServer implements plugin.GRPCPlugin.
func (p *ServerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Hello == nil || p.Register == nil {
		return errors.New("ferry plugin: nothing to serve")
	}
	pluginv1.RegisterPluginServer(s, helloServer{hello: p.Hello})
	p.Register(s)
	return nil
}

// GRPCClient implements plugin.GRPCPlugin; a plugin never dispenses.
func (p *ServerPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("ferry plugin: the plugin side has no client")
}

type helloServer struct {
	pluginv1.UnimplementedPluginServer
	hello func(context.Context, *pluginv1.HelloRequest) (*pluginv1.HelloResponse, error)
}

func (h helloServer) Hello(ctx context.Context, req *pluginv1.HelloRequest) (*pluginv1.HelloResponse, error) {
	return h.hello(ctx, req)
}

// Conn is what a host dispenses: the plugin's gRPC connection and a
// channel closed when the plugin process has ended.
type Conn struct {
	Conn *grpc.ClientConn
	Done <-chan struct{}
}

// ClientPlugin is the host side of the go-plugin glue: dispensing
// PluginName yields a *Conn, on which the host calls Hello and then the
// kind's service.
type ClientPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

// GRPCServer implements plugin.GRPCPlugin; a host never serves.
func (ClientPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("ferry plugin: the host side serves nothing")
}

// GRPCClient implements plugin.GRPCPlugin.
func (ClientPlugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Conn{Conn: c, Done: ctx.Done()}, nil
}

// Capabilities: what each side offers is compared as sets.

// Intersect returns the capabilities in both a and b, in a's order.
func Intersect(a, b []pluginv1.Capability) []pluginv1.Capability {
	var out []pluginv1.Capability
	for _, c := range a {
		for _, d := range b {
			if c == d && c != pluginv1.Capability_CAPABILITY_UNSPECIFIED {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// Has reports whether cs holds c.
func Has(cs []pluginv1.Capability, c pluginv1.Capability) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// HostCapabilities are what this module's host offers a plugin.
var HostCapabilities = []pluginv1.Capability{
	pluginv1.Capability_CAPABILITY_COUNTERS,
	pluginv1.Capability_CAPABILITY_PROPERTIES,
	pluginv1.Capability_CAPABILITY_FORWARD_RULES,
}

// CallHello sends the host's Hello, offering caps, on conn and checks the
// major version.
func CallHello(ctx context.Context, conn grpc.ClientConnInterface, caps []pluginv1.Capability) (*pluginv1.HelloResponse, error) {
	resp, err := pluginv1.NewPluginClient(conn).Hello(ctx, &pluginv1.HelloRequest{
		HostMajor: ProtocolMajor, HostMinor: ProtocolMinor, HostCapabilities: caps,
	})
	if err != nil {
		return nil, err
	}
	if resp.ProtocolMajor != ProtocolMajor {
		return nil, fmt.Errorf("plugin %q speaks protocol %d, host %d; rebuild the plugin against this SDK", resp.Name, resp.ProtocolMajor, ProtocolMajor)
	}
	return resp, nil
}

// FenceMagic starts the payload of a forwarding rule's fence: a packet the
// plugin sends through the host's forwarder behind the messages already on
// their way there, so that the rule starts only once they are through. The
// host forwards a fence like any message but does not count it, which keeps
// a forwarder's counters exact at every moment, not only once the plugin
// has reported the fence back.
const FenceMagic = "\x00\xffferry-fence\x00"

// FenceSize is the size of a fence payload: FenceMagic, the rule id (u64),
// a nonce (u64) and the direction (u8).
const FenceSize = len(FenceMagic) + 17

// IsFence reports whether p is a fence payload.
func IsFence(p []byte) bool {
	return len(p) == FenceSize && string(p[:len(FenceMagic)]) == FenceMagic
}
