package pluginwire

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// Socketpair returns the two ends of a new data channel: the host keeps
// host, the plugin inherits plugin (exec.Cmd.ExtraFiles, so it becomes
// DataFD). Both have large socket buffers so a batch costs few system
// calls. The caller closes plugin once the child has started.
func Socketpair() (host net.Conn, plugin *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("data channel socketpair: %w", err)
	}
	for _, fd := range fds {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, socketBuffer)
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, socketBuffer)
	}
	hf := os.NewFile(uintptr(fds[0]), "ferry-data-host")
	defer hf.Close()
	host, err = net.FileConn(hf)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("data channel: %w", err)
	}
	return host, os.NewFile(uintptr(fds[1]), "ferry-data-plugin"), nil
}

// socketBuffer is the send and receive buffer size of a data channel end.
const socketBuffer = 4 << 20
