// Command tcp is Ferry's TCP transport plugin. The host launches it from
// the plugin directory (bin/plugins/tcp); it is not meant to be run by hand.
// The implementation is package tcptransport, which embedding programs can
// also use in-process.
package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() {
	t := tcptransport.New()
	sc, ok := t.(transport.SettingsConfigurer)
	if _, userLimit := os.LookupEnv("GOMEMLIMIT"); userLimit || !ok {
		transport.Serve(t)
		return
	}
	transport.Serve(&memoryLimited{Transport: t, inner: sc, apply: debug.SetMemoryLimit})
}

// memoryLimited gives the plugin process a soft memory limit (the Go
// collector's, debug.SetMemoryLimit) that follows the transport's own
// bounds once they are configured: max_receive_memory for large frames of
// all links together, buffer_size per connection for max_connections
// connections, plus headroom for everything else. The transport keeps
// what peers can make it hold under those bounds, but with the default
// GOGC the heap may grow to about twice what is live before a collection
// (a slowloris flood left 186 MiB resident against a ~150 MiB budget); the
// limit makes the collector run before that. A GOMEMLIMIT in the
// environment wins. The process is the plugin's own, so a process-wide
// setting is right here and wrong in tcptransport, which programs embed.
type memoryLimited struct {
	transport.Transport
	inner transport.SettingsConfigurer
	apply func(int64) int64
}

// memoryHeadroom is what the limit allows beyond the transport's buffers:
// the runtime, gRPC and data channel buffers and goroutine stacks (an idle
// plugin holds about 3 MB).
const memoryHeadroom = 32 << 20

// Configure parses settings as Serve does (transport.Apply).
func (m *memoryLimited) Configure(ctx context.Context, settings map[string]string) error {
	return transport.Apply(ctx, m, settings)
}

// ConfigureSettings configures the transport and then sets the limit its
// settings imply (defaults filled in).
func (m *memoryLimited) ConfigureSettings(ctx context.Context, s transport.Settings) error {
	if err := m.inner.ConfigureSettings(ctx, s); err != nil {
		return err
	}
	m.apply(s.Int(tcptransport.SettingMaxReceiveMemory) +
		s.Int(tcptransport.SettingMaxConnections)*s.Int(tcptransport.SettingBufferSize) +
		memoryHeadroom)
	return nil
}
