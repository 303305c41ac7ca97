package pluginwire

import (
	"net"
	"testing"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
)

var ringCaps = []pluginv1.Capability{pluginv1.Capability_CAPABILITY_DATA_CHANNEL, pluginv1.Capability_CAPABILITY_DATA_RING}

// ringPair returns the host and plugin ends of a ring pair of size bytes
// per direction, as the Mux sees them.
func ringPair(t testing.TB, size int) (net.Conn, net.Conn) {
	t.Helper()
	if !ringSupported {
		t.Skip("no shared-memory rings on this system")
	}
	d, err := NewDataChannel(size)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Ring() {
		d.Close()
		t.Fatal("no ring created")
	}
	p, err := d.PluginEnd()
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	if !p.Ring() {
		d.Close()
		p.Close()
		t.Fatal("the plugin end has no ring")
	}
	h, pc := d.Use(ringCaps), p.Use(ringCaps)
	if _, ok := h.(*ringConn); !ok {
		t.Fatalf("host end is %T", h)
	}
	t.Cleanup(func() { h.Close(); pc.Close() })
	return h, pc
}
