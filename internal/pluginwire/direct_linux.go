package pluginwire

import "syscall"

// directWrites: senders may write a frame to the data channel's socket
// themselves (Mux.tryWrite).
const directWrites = true

// directWrite is one non-blocking write attempt on the data channel's
// socket.
type directWrite struct {
	b   []byte
	n   int
	err error
	f   func(fd uintptr) bool // write, bound once
}

func (d *directWrite) write(fd uintptr) bool {
	for {
		d.n, d.err = syscall.Write(int(fd), d.b)
		if d.err != syscall.EINTR {
			return true // never wait for the socket: the writer does
		}
	}
}

// tryWrite writes what it can of b without waiting: n < len(b) when the
// socket buffer is full (or a write deadline the writer set has passed);
// err only when the socket broke. The caller holds the writing flag.
func (m *Mux) tryWrite(b []byte) (n int, err error) {
	d := &m.direct
	d.b = b
	rerr := m.raw.Write(d.f)
	n, err = d.n, d.err
	d.b, d.n, d.err = nil, 0, nil
	if rerr != nil {
		// Closed (the channel fails on its own) or an expired deadline:
		// leave it to the writer.
		return 0, nil
	}
	if n < 0 {
		n = 0
	}
	if err == syscall.EAGAIN {
		err = nil
	}
	return n, err
}
