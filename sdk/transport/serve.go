package transport

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/internal/pluginproc"
)

// ErrUnavailable is returned by calls into a plugin whose process is gone
// (crashed, killed or shut down).
var ErrUnavailable = errors.New("transport: plugin unavailable")

// ServeOption changes how Serve runs.
type ServeOption func(*serveConfig)

type serveConfig struct {
	logger      hclog.Logger
	parentCheck time.Duration
	test        *plugin.ServeTestConfig
	data        net.Conn
}

// WithDataChannel serves link data on conn, the plugin's end of a data
// channel, when serving in-process (WithTestConfig); a plugin process
// uses the channel its host passed it. A test host holds the other end.
func WithDataChannel(conn net.Conn) ServeOption {
	return func(c *serveConfig) { c.data = conn }
}

// WithLogger sets the logger Serve and the gRPC glue log to. The default
// writes JSON to stderr, which the host parses and forwards into its own
// log under the plugin's name with the right levels; a transport should log
// the same way (see NewPluginLogger).
func WithLogger(l hclog.Logger) ServeOption {
	return func(c *serveConfig) { c.logger = l }
}

// WithParentCheck sets how often Serve checks that the host process is
// still its parent (default 250ms; 0 disables). On Linux the host also sets
// a parent-death signal; the check covers other systems and the case where
// the thread that started the plugin ended.
func WithParentCheck(every time.Duration) ServeOption {
	return func(c *serveConfig) { c.parentCheck = every }
}

// WithTestConfig serves in-process for a test host (go-plugin's
// ServeTestConfig): the host attaches with the reattach config the test
// receives, and no parent check runs.
func WithTestConfig(tc *plugin.ServeTestConfig) ServeOption {
	return func(c *serveConfig) { c.test = tc; c.parentCheck = 0 }
}

// NewPluginLogger returns a logger for code inside a plugin: JSON on stderr
// at trace level, so the host's log level decides what is shown.
func NewPluginLogger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.Trace,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// Serve serves t to the host that launched this process and returns when
// the host ends the plugin. A plugin's main is:
//
//	func main() { transport.Serve(mytransport.New()) }
//
// Stdout belongs to the go-plugin handshake: nothing may be printed on it
// before Serve. Serve points file descriptor 1 at stderr (Unix) so stray
// writes cannot corrupt the handshake, and once serving go-plugin sends
// os.Stdout and os.Stderr to the host, which logs them. Serve exits the
// process if the host dies.
func Serve(t Transport, opts ...ServeOption) {
	cfg := serveConfig{parentCheck: 250 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = NewPluginLogger("transport")
	}
	srv := newServer(t, cfg.logger)
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
		Plugins:         plugin.PluginSet{pluginwire.PluginName: srv.plugin()},
		GRPCServer: func(o []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(o, srv.serverOptions()...)...)
		},
		Logger: cfg.logger,
		Test:   cfg.test,
	})
	if err := srv.close(); err != nil {
		cfg.logger.Debug("closing transport", "error", err)
	}
}
