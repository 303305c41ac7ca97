//go:build unix

package pluginproc

import (
	"os"

	"golang.org/x/sys/unix"
)

// ReserveStdout keeps file descriptor 1 for the go-plugin handshake only.
// The handshake is written through os.Stdout, which is pointed at a
// duplicate of the original descriptor; descriptor 1 itself is pointed at
// stderr, so anything else that writes to it (a goroutine racing the
// handshake, C code, a child process) lands in the host's log instead of
// corrupting the handshake.
func ReserveStdout() {
	hs, err := unix.Dup(1)
	if err != nil {
		return
	}
	unix.CloseOnExec(hs)
	if err := unix.Dup2(2, 1); err != nil {
		unix.Close(hs)
		return
	}
	os.Stdout = os.NewFile(uintptr(hs), "/dev/stdout (plugin handshake)")
}
