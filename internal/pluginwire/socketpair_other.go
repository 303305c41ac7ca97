//go:build !linux

package pluginwire

import (
	"errors"
	"net"
	"os"
)

// Socketpair is not available here: plugins fall back to gRPC streams.
func Socketpair() (host net.Conn, plugin *os.File, err error) {
	return nil, nil, errors.New("data channel: not supported on this system")
}
