package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/serial/nullmodem"
	"github.com/ferryhq/ferry/plugins/serial/serialtransport"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// crossed dials the far end of the null modem whose near end a listener
// opened: the suite dials the listener's own address.
type crossed struct {
	transport.Transport
	peers *sync.Map
}

func (c crossed) Dial(ctx context.Context, addr string) (transport.Link, error) {
	if b, ok := c.peers.Load(addr); ok {
		addr = b.(string)
	}
	return c.Transport.Dial(ctx, addr)
}

// TestConformanceAsPlugin runs the conformance suite (unreliable profile)
// against the serial plugin binary, launched as a subprocess and driven over
// gRPC as a node does, over a fresh pair of connected pseudo-terminals per
// listener.
func TestConformanceAsPlugin(t *testing.T) {
	p := plugintest.Build(t, ".")
	p.Settings = map[string]string{
		serialtransport.SettingHeartbeatInterval: "200ms",
		serialtransport.SettingIdleTimeout:       "3s",
		serialtransport.SettingDialTimeout:       "2s",
	}
	peers := &sync.Map{}
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport { return crossed{p.New(t), peers} },
		Kill: func(t *testing.T, tr transport.Transport) {
			p.Kill(t, tr.(crossed).Transport)
		},
		ListenAddressFunc: func(t *testing.T) string {
			nm, err := nullmodem.Open(t.TempDir(), "a", "b")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nm.Close)
			peers.Store(nm.Path(0), nm.Path(1))
			return nm.Path(0)
		},
		// The Unreliable flag does not cross the plugin protocol yet.
		Unreliable: true,
		Links:      1,
		Timeout:    30 * time.Second,
	})
}
