package logging

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// DefaultMaxLogBytes is the size at which a node's log file is rotated when
// RotatingFile.MaxBytes is zero: node.log is renamed to node.log.1
// (replacing the previous one) and a new node.log is started, so a node's
// logs take at most twice this on disk, whatever the network sends it.
const DefaultMaxLogBytes = 10 << 20

// RotatingFile is an io.Writer appending to a file that is rotated once it
// would grow past MaxBytes. Use OpenRotating.
type RotatingFile struct {
	path   string
	max    int64
	stderr bool

	mu   sync.Mutex
	f    *os.File
	size int64
	err  error
}

// RotateOptions configures OpenRotating.
type RotateOptions struct {
	// MaxBytes caps the current file; default DefaultMaxLogBytes.
	MaxBytes int64
	// Stderr, when true, makes the process's standard error point at the
	// current file after each rotation (on Linux), so what the runtime
	// writes there (a panic, a fatal error) lands in the current log
	// rather than in the rotated one.
	Stderr bool
}

// OpenRotating opens (creating with mode 0600) path for appending.
func OpenRotating(path string, opts RotateOptions) (*RotatingFile, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxLogBytes
	}
	r := &RotatingFile{path: path, max: opts.MaxBytes, stderr: opts.Stderr}
	if err := r.open(); err != nil {
		return nil, err
	}
	if r.size >= r.max {
		if err := r.rotate(); err != nil {
			r.f.Close()
			return nil, err
		}
	}
	return r, nil
}

func (r *RotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log %s: %w", r.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log %s: %w", r.path, err)
	}
	r.f, r.size = f, st.Size()
	if r.stderr {
		redirectStderr(f)
	}
	return nil
}

// rotate renames the current file to path.1 and opens a new one. The caller
// holds mu (or owns r exclusively).
func (r *RotatingFile) rotate() error {
	if err := os.Rename(r.path, r.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate log %s: %w", r.path, err)
	}
	old := r.f
	if err := r.open(); err != nil {
		return err
	}
	old.Close()
	return nil
}

// Write appends p, rotating first when p would take the file past the cap.
// A write larger than the cap on its own is cut to the cap: one line must
// not be able to fill a disk either.
func (r *RotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		if err := r.rotate(); err != nil {
			// Keep writing to the old file rather than lose the log, but
			// never past twice the cap.
			if r.err == nil {
				r.err = err
			}
			if r.size+int64(len(p)) > 2*r.max {
				return len(p), nil
			}
		}
	}
	q := p
	if int64(len(q)) > r.max {
		q = q[:r.max]
	}
	n, err := r.f.Write(q)
	r.size += int64(n)
	if err != nil {
		return n, err
	}
	return len(p), nil
}

// Err returns the first rotation error, if any.
func (r *RotatingFile) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close closes the current file.
func (r *RotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
