//go:build unix

package pluginwire

import (
	"errors"
	"os"
	"strings"
	"syscall"
)

// RawWriter writes bytes on a plugin's data channel past its Mux, as a
// broken or hostile plugin would: for tests of the host's defences only.
// Create it before Serve takes the channel.
type RawWriter struct {
	fd  int    // a duplicate of the data socket
	mem []byte // the rings' pages, when the host passed rings
}

// NewRawWriter duplicates the data channel the host passed this process.
func NewRawWriter() (*RawWriter, error) {
	fd, ok := envFD(os.Getenv(DataEnv))
	if !ok {
		return nil, errors.New("no data channel")
	}
	d, err := syscall.Dup(fd)
	if err != nil {
		return nil, err
	}
	w := &RawWriter{fd: d}
	if _, m, ok := strings.Cut(os.Getenv(RingEnv), ","); ok && ringSupported {
		if mfd, ok := envFD(m); ok {
			dm, err := syscall.Dup(mfd)
			if err != nil {
				return nil, err
			}
			f := os.NewFile(uintptr(dm), "ferry-data-ring")
			w.mem, err = mapRingMem(f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

// Write puts b on the channel: into the plugin → host ring, with a
// wake-up on the socket, or on the socket itself. The host uses the rings
// only if the plugin offered them, which the SDK does whenever it has them.
func (w *RawWriter) Write(b []byte) (int, error) {
	if w.mem == nil {
		return syscall.Write(w.fd, b)
	}
	n, err := ringAppend(w.mem, b)
	if err != nil {
		return 0, err
	}
	_, err = syscall.Write(w.fd, []byte{1})
	return n, err
}

// CorruptRing writes an impossible count (far more written than the ring
// holds) into the plugin → host ring's header and wakes the host.
func (w *RawWriter) CorruptRing() error {
	if w.mem == nil {
		return errors.New("no rings")
	}
	ringCorrupt(w.mem)
	_, err := syscall.Write(w.fd, []byte{1})
	return err
}
