package unixsock_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferryhq/ferry/examples/unixtransport/unixsock"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// socketPath returns a fresh socket path. Unix socket paths are limited to
// about 100 bytes, so it avoids t.TempDir's long per-test names.
func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ux")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Config{
		New:               func(t *testing.T) transport.Transport { return unixsock.New() },
		ListenAddressFunc: socketPath,
		RawDial:           func(addr string) (net.Conn, error) { return net.Dial("unix", addr) },
		BadInputs: []transporttest.BadInput{
			{Name: "4GiB_length", Bytes: []byte{1, 0xff, 0xff, 0xff, 0xff}},
		},
	})
}
