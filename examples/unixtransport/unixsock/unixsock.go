// Package unixsock is the smallest complete Ferry transport: links are
// Unix-domain stream sockets, addresses are socket paths, and the route
// address type is "unix" (routes like /unix/%2Ftmp%2Fn1.sock/service/echo,
// or through the connection worker).
//
// It is an example for third-party transport authors (see sdk/README.md):
// the plugin binary is ../main.go, a one-line call to transport.Serve, and
// unixsock_test.go checks it with sdk/transporttest.
//
// Frames are a version byte, a 4-byte big-endian length and the payload.
// The length is checked against the maximum before anything is allocated;
// bad bytes fail the link with a clear error and close it. A clean Close
// ends the stream at a frame boundary, which the peer's Recv reports as
// io.EOF; a stream that ends inside a frame is an error. (A Unix socket
// cannot tell a clean Close from a peer process that died between frames;
// a transport that must tell them apart sends a close frame, as tcp does.)
package unixsock

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// frameVersion is the first byte of every frame.
const frameVersion = 1

// defaultMax is the default maximum packet size (16 MiB).
const defaultMax = 16 << 20

// Transport is the Unix-socket transport. Use New.
type Transport struct {
	mu     sync.Mutex
	max    int
	closed bool
	closer map[io.Closer]struct{} // open listeners and links
}

// New returns a Unix-socket transport with default settings.
func New() *Transport {
	return &Transport{max: defaultMax, closer: map[io.Closer]struct{}{}}
}

// Info describes the transport and its one setting.
func (t *Transport) Info() transport.Info {
	return transport.Info{
		Name:           "unix",
		Version:        "0.1.0",
		AddressType:    "unix",
		MaxMessageSize: defaultMax,
		Settings: []transport.Setting{{
			Name: "max_message_size", Type: transport.Int, Default: strconv.Itoa(defaultMax),
			Description: "largest packet in bytes",
		}},
	}
}

// Configure applies settings; unknown names are refused.
func (t *Transport) Configure(_ context.Context, settings map[string]string) error {
	for k, v := range settings {
		if k != "max_message_size" {
			return fmt.Errorf("unix transport: unknown setting %q (known: max_message_size)", k)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("unix transport: max_message_size=%q: want a positive number of bytes", v)
		}
		t.mu.Lock()
		t.max = n
		t.mu.Unlock()
	}
	return nil
}

// track registers c to be closed by Close; false if already closed.
func (t *Transport) track(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.closer[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c io.Closer) {
	t.mu.Lock()
	delete(t.closer, c)
	t.mu.Unlock()
}

func (t *Transport) maxSize() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.max
}

// Listen creates the socket file at path and accepts links on it.
func (t *Transport) Listen(ctx context.Context, path string) (transport.Listener, error) {
	var lc net.ListenConfig
	nl, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("unix transport: listen %s: %w", path, err)
	}
	l := &listener{t: t, nl: nl, conns: make(chan net.Conn), done: make(chan struct{})}
	if !t.track(l) {
		_ = nl.Close()
		return nil, transport.ErrClosed
	}
	go l.acceptLoop()
	return l, nil
}

// Dial connects to the socket at path.
func (t *Transport) Dial(ctx context.Context, path string) (transport.Link, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("unix transport: dial %s: %w", path, err)
	}
	return t.newLink(c)
}

// Close closes every listener and link.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	cs := t.closer
	t.closer = map[io.Closer]struct{}{}
	t.mu.Unlock()
	for c := range cs {
		_ = c.Close()
	}
	return nil
}

type listener struct {
	t     *Transport
	nl    net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *listener) Addr() string { return l.nl.Addr().String() }

// acceptLoop hands accepted connections to Accept callers, so Accept can
// honour its context.
func (l *listener) acceptLoop() {
	for {
		c, err := l.nl.Accept()
		if err != nil {
			_ = l.Close()
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			_ = c.Close()
			return
		}
	}
}

func (l *listener) Accept(ctx context.Context) (transport.Link, error) {
	select {
	case c := <-l.conns:
		return l.t.newLink(c)
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		_ = l.nl.Close()
		l.t.untrack(l)
	})
	return nil
}

// link reads frames in its own goroutine so Recv can wait on a context; the
// goroutine ends when the connection does.
type link struct {
	t    *Transport
	c    net.Conn
	max  int
	in   chan []byte
	rerr error // set before in is closed
	out  [][]byte

	wmu  sync.Mutex
	w    *bufio.Writer
	werr error

	done chan struct{}
	once sync.Once
}

func (t *Transport) newLink(c net.Conn) (*link, error) {
	l := &link{t: t, c: c, max: t.maxSize(), in: make(chan []byte, 64),
		w: bufio.NewWriterSize(c, 64<<10), done: make(chan struct{})}
	if !t.track(l) {
		_ = c.Close()
		return nil, transport.ErrClosed
	}
	go l.readLoop()
	return l, nil
}

func (l *link) LocalAddr() string  { return l.c.LocalAddr().String() }
func (l *link) RemoteAddr() string { return l.c.RemoteAddr().String() }

func (l *link) readLoop() {
	defer close(l.in)
	r := bufio.NewReaderSize(l.c, 64<<10)
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:1]); err != nil {
			l.rerr = l.readErr(err, io.EOF) // EOF between frames: clean close
			return
		}
		if _, err := io.ReadFull(r, hdr[1:]); err != nil {
			l.rerr = l.readErr(err, io.ErrUnexpectedEOF)
			return
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		switch {
		case hdr[0] != frameVersion:
			l.rerr = fmt.Errorf("unix transport: receive from %s: bad frame version %d, want %d", l.RemoteAddr(), hdr[0], frameVersion)
		case uint64(n) > uint64(l.max):
			l.rerr = fmt.Errorf("unix transport: receive from %s: frame of %d bytes exceeds the maximum %d", l.RemoteAddr(), n, l.max)
		}
		if l.rerr != nil {
			_ = l.c.Close() // bad bytes: drop this link only
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			l.rerr = l.readErr(err, io.ErrUnexpectedEOF)
			return
		}
		select {
		case l.in <- p:
		case <-l.done:
			return
		}
	}
}

func (l *link) readErr(err, atEOF error) error {
	select {
	case <-l.done:
		return transport.ErrClosed
	default:
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if atEOF == io.EOF {
			return io.EOF
		}
		return fmt.Errorf("unix transport: receive from %s: stream ended inside a frame: %w", l.RemoteAddr(), atEOF)
	}
	return fmt.Errorf("unix transport: receive from %s: %w", l.RemoteAddr(), err)
}

// Recv waits for one packet, then takes whatever else already arrived.
func (l *link) Recv(ctx context.Context) ([][]byte, error) {
	l.out = l.out[:0]
	select {
	case p, ok := <-l.in:
		if !ok {
			return nil, l.rerr
		}
		l.out = append(l.out, p)
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(l.out) < cap(l.in) {
		select {
		case p, ok := <-l.in:
			if !ok {
				return l.out, nil // the error comes with the next Recv
			}
			l.out = append(l.out, p)
		default:
			return l.out, nil
		}
	}
	return l.out, nil
}

// Send writes the batch and flushes once. An interrupted write may cut a
// frame, so it closes the link.
func (l *link) Send(ctx context.Context, packets [][]byte) error {
	for _, p := range packets {
		if len(p) > l.max {
			return fmt.Errorf("unix transport: packet of %d bytes (maximum %d): %w", len(p), l.max, transport.ErrTooLarge)
		}
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.werr != nil {
		return l.werr
	}
	stop := context.AfterFunc(ctx, func() { _ = l.c.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var hdr [5]byte
	hdr[0] = frameVersion
	for _, p := range packets {
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
		_, _ = l.w.Write(hdr[:])
		_, _ = l.w.Write(p)
	}
	if err := l.w.Flush(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		l.werr = fmt.Errorf("unix transport: send to %s: %w", l.RemoteAddr(), err)
		_ = l.Close()
		return l.werr
	}
	return nil
}

// Close ends the stream between frames (the peer sees io.EOF).
func (l *link) Close() error {
	l.once.Do(func() {
		close(l.done)
		_ = l.c.Close()
		l.t.untrack(l)
	})
	return nil
}
