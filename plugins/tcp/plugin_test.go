package main

import (
	"net"
	"testing"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// TestConformanceAsPlugin runs the conformance suite against the tcp plugin
// binary, launched as a subprocess and driven over gRPC as a node does.
func TestConformanceAsPlugin(t *testing.T) {
	conformanceAsPlugin(t, false)
}

// TestConformanceAsPluginOverGRPC runs the suite with the data channel
// capability disabled: link data moves on gRPC streams, as with a plugin
// that does not offer the channel.
func TestConformanceAsPluginOverGRPC(t *testing.T) {
	conformanceAsPlugin(t, true)
}

func conformanceAsPlugin(t *testing.T, disableDataChannel bool) {
	p := plugintest.Build(t, ".")
	p.DisableDataChannel = disableDataChannel
	p.Settings = map[string]string{
		tcptransport.SettingHeartbeatInterval: "200ms",
		tcptransport.SettingIdleTimeout:       "2s",
	}
	transporttest.Run(t, transporttest.Config{
		New:           p.New,
		Kill:          p.Kill,
		ListenAddress: "127.0.0.1:0",
		RawDial:       func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
		BadInputs: []transporttest.BadInput{
			{Name: "4GiB_length", Bytes: []byte{tcptransport.FrameVersion, 1, 0xff, 0xff, 0xff, 0xff}},
		},
	})
}
