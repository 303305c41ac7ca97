package main

import (
	"net"
	"testing"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/udp/udptransport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// TestConformanceAsPlugin runs the unreliable profile of the conformance
// suite against the udp plugin binary, launched as a subprocess and driven
// over gRPC as a node does.
func TestConformanceAsPlugin(t *testing.T) {
	p := plugintest.Build(t, ".")
	p.Settings = map[string]string{
		udptransport.SettingKeepaliveInterval: "200ms",
		udptransport.SettingIdleTimeout:       "2s",
	}
	transporttest.Run(t, transporttest.Config{
		New:  p.New,
		Kill: p.Kill,
		// The plugin protocol does not carry Info.Unreliable yet; the
		// in-process Info says true (checked in udptransport).
		Unreliable:    true,
		ListenAddress: "127.0.0.1:0",
		RawDial:       func(addr string) (net.Conn, error) { return net.Dial("udp", addr) },
	})
}
