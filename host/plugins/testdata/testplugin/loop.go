package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/transport"
)

// loop is an in-memory transport. Dial("echo") returns a link that sends
// every packet straight back; Listen(name) and Dial(name) make in-process
// pipes; Dial("panic") crashes the process, for crash tests.
type loop struct {
	name string
	max  int
	log  hclog.Logger

	mu        sync.Mutex
	listeners map[string]*loopListener
}

func newLoop(name string, log hclog.Logger) *loop {
	max := 1 << 20
	if v, err := strconv.Atoi(os.Getenv("FERRY_LOOP_MAX")); err == nil && v > 0 {
		max = v
	}
	return &loop{name: name, max: max, log: log, listeners: map[string]*loopListener{}}
}

func (t *loop) Info() transport.Info {
	return transport.Info{
		Name:           t.name,
		Version:        "0.0.1-test",
		AddressType:    "loop",
		MaxMessageSize: t.max,
		Settings: []transport.Setting{
			{Name: "greeting", Type: transport.String, Description: "ignored; lets tests check Configure"},
		},
	}
}

func (t *loop) Configure(ctx context.Context, settings map[string]string) error {
	if v, ok := settings["fail"]; ok {
		return fmt.Errorf("configure: asked to fail: %s", v)
	}
	if v, ok := settings["raw_stdout"]; ok {
		// Bypass os.Stdout: Serve must have pointed descriptor 1 away
		// from the handshake pipe.
		syscall.Write(1, []byte(v+"\n"))
	}
	t.log.Info("configured", "greeting", settings["greeting"])
	return nil
}

func (t *loop) Listen(ctx context.Context, address string) (transport.Listener, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.listeners[address]; ok {
		return nil, fmt.Errorf("listen %s: address in use", address)
	}
	l := &loopListener{t: t, addr: address, ch: make(chan transport.Link), done: make(chan struct{})}
	t.listeners[address] = l
	return l, nil
}

func (t *loop) Dial(ctx context.Context, address string) (transport.Link, error) {
	switch address {
	case "echo":
		e := newEnd(t.max, "echo", "echo")
		e.peer = e
		return e, nil
	case "panic":
		panic("testplugin: asked to crash by dialling \"panic\"")
	case "evil:garbage", "evil:4gib", "evil:unknown-id", "evil:ring-counts":
		if err := writeEvil(address); err != nil {
			return nil, err
		}
		e := newEnd(t.max, "echo", "echo")
		e.peer = e
		return e, nil
	}
	t.mu.Lock()
	l := t.listeners[address]
	t.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: nothing listens there", address)
	}
	a := newEnd(t.max, "dialer", address)
	b := newEnd(t.max, address, "dialer")
	a.peer, b.peer = b, a
	select {
	case l.ch <- b:
		return a, nil
	case <-l.done:
		return nil, fmt.Errorf("dial %s: listener closed", address)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (t *loop) Close() error {
	t.mu.Lock()
	ls := t.listeners
	t.listeners = map[string]*loopListener{}
	t.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	return nil
}

type loopListener struct {
	t    *loop
	addr string
	ch   chan transport.Link
	done chan struct{}
	once sync.Once
}

func (l *loopListener) Addr() string { return l.addr }

func (l *loopListener) Accept(ctx context.Context) (transport.Link, error) {
	select {
	case link := <-l.ch:
		return link, nil
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *loopListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.t.mu.Lock()
		if l.t.listeners[l.addr] == l {
			delete(l.t.listeners, l.addr)
		}
		l.t.mu.Unlock()
	})
	return nil
}

// end is one end of an in-memory link. Batches sent on an end arrive at
// its peer in order. Each end owns a few reusable batch buffers: Send
// copies into a free one (waiting for one is the backpressure), and Recv
// hands the previous one back, so steady traffic allocates nothing.
type end struct {
	max           int
	local, remote string
	peer          *end
	in            chan *batch
	free          chan *batch
	cur           *batch
	done          chan struct{} // this end closed
	once          sync.Once
}

type batch struct {
	buf     []byte
	packets [][]byte
}

const endBuffers = 4

func newEnd(max int, local, remote string) *end {
	e := &end{max: max, local: local, remote: remote, in: make(chan *batch, endBuffers), free: make(chan *batch, endBuffers), done: make(chan struct{})}
	for range endBuffers {
		e.free <- &batch{}
	}
	return e
}

func (e *end) LocalAddr() string  { return e.local }
func (e *end) RemoteAddr() string { return e.remote }

func (e *end) Send(ctx context.Context, packets [][]byte) error {
	total := 0
	for _, p := range packets {
		if len(p) > e.max {
			return fmt.Errorf("send %d bytes: %w", len(p), transport.ErrTooLarge)
		}
		total += len(p)
	}
	var b *batch
	select {
	case b = <-e.peer.free:
	case <-e.done:
		return transport.ErrClosed
	case <-e.peer.done:
		return fmt.Errorf("send: peer closed: %w", transport.ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
	// Copy: the caller reuses its packets once Send returns.
	if cap(b.buf) < total {
		b.buf = make([]byte, 0, total)
	}
	b.buf, b.packets = b.buf[:0], b.packets[:0]
	for _, p := range packets {
		b.buf = append(b.buf, p...)
		b.packets = append(b.packets, b.buf[len(b.buf)-len(p):len(b.buf):len(b.buf)])
	}
	e.peer.in <- b // never blocks: there are as many buffers as slots
	return nil
}

func (e *end) Recv(ctx context.Context) ([][]byte, error) {
	if e.cur != nil {
		e.free <- e.cur
		e.cur = nil
	}
	select {
	case b := <-e.in:
		e.cur = b
		return b.packets, nil
	default:
	}
	select {
	case b := <-e.in:
		e.cur = b
		return b.packets, nil
	case <-e.done:
		return nil, transport.ErrClosed
	case <-e.peer.done:
		select {
		case b := <-e.in:
			e.cur = b
			return b.packets, nil
		default:
		}
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *end) Close() error {
	e.once.Do(func() { close(e.done) })
	return nil
}
