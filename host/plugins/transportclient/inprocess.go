package transportclient

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/transport"
)

// ServeInProcess serves t with transport.Serve in this process (go-plugin's
// test mode: the same handshake, Hello and gRPC glue a subprocess plugin
// uses, without a process) and returns the host side. Tests and the
// conformance suite use it. stop closes the host side, the server and t.
func ServeInProcess(ctx context.Context, t transport.Transport) (r *Remote, stop func(), err error) {
	sctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	served := make(chan struct{})
	go transport.Serve(t, transport.WithLogger(hclog.NewNullLogger()),
		transport.WithTestConfig(&plugin.ServeTestConfig{Context: sctx, ReattachConfigCh: reattach, CloseCh: served}))
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
	stop = func() {
		if r != nil {
			r.Close()
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
	r, err = Dial(ctx, conn.Conn, nil)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("in-process transport: %w", err)
	}
	return r, stop, nil
}
