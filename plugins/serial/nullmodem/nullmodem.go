// Package nullmodem connects two pseudo-terminals back to back, as a
// null-modem cable connects two serial ports, for tests and benchmarks of
// serial transports on machines without serial hardware.
//
// Each side is a pty pair; the side's device path is a symbolic link in a
// directory the caller owns, pointing at the pty's slave (/dev/pts/N). A
// bridge copies what one side's slave writes (read from its master) into the
// other side's master, so it comes out of the other slave. The bridge can
// damage the bytes in flight (Filter), and a side can be unplugged (its pty
// closed and its link removed) and plugged back in (a new pty at the same
// link path), as a USB serial adapter would.
//
// Each side keeps its own slave open in raw mode, so the master never sees
// the EIO a master reads once every slave descriptor is closed, and bytes
// written before the transport opens the device are not echoed back.
package nullmodem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Filter may change the bytes crossing the bridge from side from (0: A to B,
// 1: B to A). It returns the bytes to deliver; it runs on the bridge's
// goroutine for that direction.
type Filter func(from int, p []byte) []byte

// NullModem is two connected pseudo-terminals. Open it with Open; Close it.
type NullModem struct {
	paths [2]string

	mu     sync.Mutex
	sides  [2]*side
	filter Filter
	closed bool
	stop   chan struct{}  // closed to stop the current bridge
	wg     sync.WaitGroup // the current bridge's goroutines
}

type side struct {
	master *os.File // pollable: Close interrupts a blocked Read or Write
	slave  *os.File
	dev    string
}

// Open creates the two sides, with device links dir/nameA and dir/nameB.
func Open(dir, nameA, nameB string) (*NullModem, error) {
	nm := &NullModem{paths: [2]string{filepath.Join(dir, nameA), filepath.Join(dir, nameB)}}
	for i := range nm.sides {
		if err := nm.Plug(i); err != nil {
			nm.Close()
			return nil, err
		}
	}
	return nm, nil
}

// Path is the device path of side i (0: A, 1: B).
func (nm *NullModem) Path(i int) string { return nm.paths[i] }

// Device is the pty slave side i's link points at now.
func (nm *NullModem) Device(i int) string {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if s := nm.sides[i]; s != nil {
		return s.dev
	}
	return ""
}

// SetFilter installs f for bytes crossing the bridge from now on (nil: pass
// them unchanged).
func (nm *NullModem) SetFilter(f Filter) {
	nm.mu.Lock()
	nm.filter = f
	nm.mu.Unlock()
}

func (nm *NullModem) currentFilter() Filter {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.filter
}

func newSide() (*side, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pty: %w", err)
	}
	if err := makeRaw(int(s.Fd())); err != nil {
		m.Close()
		s.Close()
		return nil, fmt.Errorf("raw mode on %s: %w", s.Name(), err)
	}
	// A non-blocking duplicate goes through Go's poller, so Close wakes a
	// goroutine blocked on it (a blocking pty descriptor would not).
	fd, err := unix.Dup(int(m.Fd()))
	if err != nil {
		m.Close()
		s.Close()
		return nil, fmt.Errorf("dup pty master: %w", err)
	}
	m.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		s.Close()
		return nil, err
	}
	return &side{master: os.NewFile(uintptr(fd), "ptmx"), slave: s, dev: s.Name()}, nil
}

func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// Plug creates a new pty for side i (after Unplug, or at Open), points the
// side's link at it and starts bridging it to the other side.
func (nm *NullModem) Plug(i int) error {
	s, err := newSide()
	if err != nil {
		return err
	}
	tmp := nm.paths[i] + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(s.dev, tmp); err != nil {
		s.close()
		return fmt.Errorf("link %s: %w", nm.paths[i], err)
	}
	if err := os.Rename(tmp, nm.paths[i]); err != nil {
		s.close()
		return fmt.Errorf("link %s: %w", nm.paths[i], err)
	}
	nm.mu.Lock()
	defer nm.mu.Unlock()
	if nm.closed {
		s.close()
		return errors.New("nullmodem: closed")
	}
	if nm.sides[i] != nil {
		nm.mu.Unlock()
		s.close()
		nm.mu.Lock()
		return fmt.Errorf("nullmodem: side %d is plugged in", i)
	}
	nm.sides[i] = s
	if other := nm.sides[1-i]; other != nil {
		nm.stop = make(chan struct{})
		nm.bridge(i, s, other)
		nm.bridge(1-i, other, s)
	}
	return nil
}

// Unplug closes side i's pty and removes its link: the device is gone, and
// whatever has it open sees read errors.
func (nm *NullModem) Unplug(i int) {
	nm.mu.Lock()
	s := nm.sides[i]
	nm.sides[i] = nil
	other := nm.sides[1-i]
	nm.mu.Unlock()
	if s == nil {
		return
	}
	nm.stopBridge(s, other)
	_ = os.Remove(nm.paths[i])
	s.close()
}

// stopBridge stops the bridge goroutines between a and b (b may be nil) and
// waits for them, so the next bridge is the only reader of each master.
func (nm *NullModem) stopBridge(a, b *side) {
	nm.mu.Lock()
	stop := nm.stop
	nm.stop = nil
	nm.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	past := time.Unix(1, 0)
	for _, s := range []*side{a, b} {
		if s != nil {
			_ = s.master.SetDeadline(past)
		}
	}
	nm.wg.Wait()
	for _, s := range []*side{a, b} {
		if s != nil {
			_ = s.master.SetDeadline(time.Time{})
		}
	}
}

func (s *side) close() {
	_ = s.master.Close()
	_ = s.slave.Close()
}

// bridge copies from's master output into to's master. It ends when either
// side is closed. Called holding nm.mu.
func (nm *NullModem) bridge(dir int, from, to *side) {
	stop := nm.stop
	nm.wg.Add(1)
	go func() {
		defer nm.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := from.master.Read(buf)
			if n > 0 {
				p := buf[:n]
				if f := nm.currentFilter(); f != nil {
					p = f(dir, p)
				}
				if _, werr := to.master.Write(p); werr != nil {
					return
				}
			}
			if err != nil {
				select {
				case <-stop:
					return
				default:
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue // a stale deadline from an earlier stop
				}
				// EIO, EOF or closed: the side is gone.
				return
			}
		}
	}()
}

// Close closes both sides and waits for the bridge to stop.
func (nm *NullModem) Close() {
	nm.mu.Lock()
	nm.closed = true
	sides := nm.sides
	nm.sides = [2]*side{}
	nm.mu.Unlock()
	nm.stopBridge(sides[0], sides[1])
	for i, s := range sides {
		if s != nil {
			s.close()
			_ = os.Remove(nm.paths[i])
		}
	}
	nm.wg.Wait()
}
