//go:build !linux

package pluginwire

import (
	"errors"
	"net"
	"os"
)

// DefaultRingSize is each direction's ring size where rings exist.
const DefaultRingSize = 1 << 20

// ringSupported: no shared-memory data channel here; the socketpair (or
// gRPC) carries the data.
const ringSupported = false

var errNoRing = errors.New("data ring: not supported on this system")

type ringConn struct{ net.Conn }

func newRingMem(int) (*os.File, []byte, error) { return nil, nil, errNoRing }
func mapRingMem(*os.File) ([]byte, error)      { return nil, errNoRing }
func unmapRing([]byte)                         {}
func newRingConn([]byte, net.Conn, net.Conn, bool) (*ringConn, error) {
	return nil, errNoRing
}
func (c *ringConn) TryWrite([]byte) (int, error) { return 0, nil }
func (c *ringConn) dropRing()                    {}

func ringAppend([]byte, []byte) (int, error) { return 0, errNoRing }

func ringCorrupt([]byte) {}
