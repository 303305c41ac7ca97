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
	// The suite picks its unreliable profile from Info, as the host sees
	// it across the plugin protocol.
	if info := p.New(t).Info(); !info.Unreliable || info.AddressType != "udp" {
		t.Fatalf("the plugin's Info as the host sees it: %+v; want Unreliable and address type udp", info)
	}
	transporttest.Run(t, transporttest.Config{
		New:           p.New,
		Kill:          p.Kill,
		ListenAddress: "127.0.0.1:0",
		RawDial:       func(addr string) (net.Conn, error) { return net.Dial("udp", addr) },
	})
}
