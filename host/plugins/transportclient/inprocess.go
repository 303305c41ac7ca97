package transportclient

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/transport"
)

// ServeInProcess serves t with transport.Serve in this process (go-plugin's
// test mode: the same handshake, Hello and gRPC glue a subprocess plugin
// uses, without a process) and returns the host side. Tests and the
// conformance suite use it. stop closes the host side, the server and t.
//
// Link data moves on a data channel (shared-memory rings with a
// socketpair for wake-ups) unless the GRPCStreams option keeps it on gRPC
// streams.
func ServeInProcess(ctx context.Context, t transport.Transport, opts ...InProcessOption) (r *Remote, stop func(), err error) {
	var o inProcess
	for _, opt := range opts {
		opt(&o)
	}
	serveOpts := []transport.ServeOption{transport.WithLogger(hclog.NewNullLogger())}
	var data *pluginwire.DataChannel
	if !o.grpcStreams {
		var err error
		data, err = pluginwire.NewDataChannel(pluginwire.DefaultRingSize)
		if err != nil {
			return nil, nil, fmt.Errorf("in-process transport: %w", err)
		}
		pc, err := data.PluginEnd()
		if err != nil {
			data.Close()
			return nil, nil, fmt.Errorf("in-process transport: %w", err)
		}
		serveOpts = append(serveOpts, transport.WithDataChannel(pc))
	}
	sctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	served := make(chan struct{})
	go transport.Serve(t, append(serveOpts,
		transport.WithTestConfig(&plugin.ServeTestConfig{Context: sctx, ReattachConfigCh: reattach, CloseCh: served}))...)
	var rc *plugin.ReattachConfig
	select {
	case rc = <-reattach:
	case <-ctx.Done():
		cancel()
		<-served
		return nil, nil, fmt.Errorf("in-process transport: %w", ctx.Err())
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginwire.Handshake(),
		Plugins:          plugin.PluginSet{pluginwire.PluginName: pluginwire.ClientPlugin{}},
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  pluginwire.DialOptions(),
		Logger:           hclog.NewNullLogger(),
	})
	var mux *pluginwire.Mux
	stop = func() {
		if r != nil {
			r.Close()
		}
		if mux != nil {
			mux.Close()
		} else if data != nil {
			data.Close()
		}
		pc.Kill()
		cancel()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
		}
	}
	rpc, err := pc.Client()
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("in-process transport: %w", err)
	}
	raw, err := rpc.Dispense(pluginwire.PluginName)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("in-process transport: %w", err)
	}
	conn := raw.(*pluginwire.Conn)
	offer := slices.DeleteFunc(slices.Clone(pluginwire.HostCapabilities), func(c pluginv1.Capability) bool {
		return slices.Contains(o.without, c)
	})
	if data != nil {
		offer = append(offer[:len(offer):len(offer)], data.Offer()...)
	}
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	hello, err := pluginwire.CallHello(hctx, conn.Conn, offer)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("in-process transport: hello: %w", err)
	}
	if data != nil && pluginwire.Has(hello.Capabilities, pluginv1.Capability_CAPABILITY_DATA_CHANNEL) {
		mux = pluginwire.NewMux(data.Use(hello.Capabilities), pluginwire.MuxConfig{MaxFrame: pluginwire.GRPCLimit(int(hello.GetTransport().GetMaxMessageSize()))})
	}
	r, err = NewWithData(conn.Conn, nil, hello, mux)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("in-process transport: %w", err)
	}
	r.caps = pluginwire.Intersect(offer, hello.Capabilities)
	return r, stop, nil
}

// InProcessOption changes ServeInProcess.
type InProcessOption func(*inProcess)

type inProcess struct {
	grpcStreams bool
	without     []pluginv1.Capability
}

// WithoutCapabilities leaves caps out of the host's offer, as for a host
// (or plugin) that does not have them.
func WithoutCapabilities(caps ...pluginv1.Capability) InProcessOption {
	return func(o *inProcess) { o.without = append(o.without, caps...) }
}

// GRPCStreams keeps link data on gRPC streams, as for a plugin without the
// data channel capability.
func GRPCStreams() InProcessOption { return func(o *inProcess) { o.grpcStreams = true } }
