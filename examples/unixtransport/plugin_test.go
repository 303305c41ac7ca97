package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// TestConformanceAsPlugin builds this directory as the "unix" plugin and
// runs the conformance suite against it as a subprocess, as a node uses it.
func TestConformanceAsPlugin(t *testing.T) {
	p := plugintest.Build(t, ".")
	transporttest.Run(t, transporttest.Config{
		New:  p.New,
		Kill: p.Kill,
		ListenAddressFunc: func(t *testing.T) string {
			// Unix socket paths are limited to ~100 bytes: keep it short.
			dir, err := os.MkdirTemp("", "ux")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			return filepath.Join(dir, "s")
		},
		RawDial: func(addr string) (net.Conn, error) { return net.Dial("unix", addr) },
	})
}
