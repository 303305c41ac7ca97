package transports_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ferryhq/ferry/sdk/transport"
)

// memNet is an in-memory network of listeners, so tests can run nodes
// linked by a transport without sockets.
type memNet struct {
	mu        sync.Mutex
	listeners map[string]*memListener
	next      int
}

func newMemNet() *memNet { return &memNet{listeners: map[string]*memListener{}} }

// memTransport is a transport.Transport over a memNet. Its address type is
// "mem" and addresses look like "b:1"; "b:0" asks for a fresh port.
type memTransport struct {
	net *memNet

	mu        sync.Mutex
	listeners []*memListener
	links     []*memLink
	dials     int
}

func (n *memNet) transport() *memTransport { return &memTransport{net: n} }

func (t *memTransport) Info() transport.Info {
	return transport.Info{Name: "mem", Version: "0.0.0", AddressType: "mem", MaxMessageSize: 1 << 20}
}

func (t *memTransport) Configure(context.Context, map[string]string) error { return nil }

func (t *memTransport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if strings.HasSuffix(addr, ":0") {
		n.next++
		addr = fmt.Sprintf("%s:%d", strings.TrimSuffix(addr, ":0"), n.next)
	}
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("listen %s: address in use", addr)
	}
	l := &memListener{t: t, addr: addr, ch: make(chan *memLink), closed: make(chan struct{}), failed: make(chan struct{})}
	n.listeners[addr] = l
	t.mu.Lock()
	t.listeners = append(t.listeners, l)
	t.mu.Unlock()
	return l, nil
}

func (t *memTransport) Dial(ctx context.Context, addr string) (transport.Link, error) {
	t.mu.Lock()
	t.dials++
	t.mu.Unlock()
	n := t.net
	n.mu.Lock()
	l := n.listeners[addr]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	a, b := newMemPair("client", addr)
	select {
	case l.ch <- b:
	case <-l.closed:
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	t.track(a)
	return a, nil
}

func (t *memTransport) track(l *memLink) {
	t.mu.Lock()
	t.links = append(t.links, l)
	t.mu.Unlock()
}

func (t *memTransport) dialCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dials
}

// crash closes every listener and link of t, as a dying plugin would; the
// listeners' Accept calls fail with an error rather than ErrClosed.
func (t *memTransport) crash() {
	t.mu.Lock()
	ls, links := t.listeners, t.links
	t.listeners, t.links = nil, nil
	t.mu.Unlock()
	for _, l := range ls {
		l.fail()
	}
	for _, l := range links {
		l.Close()
	}
}

func (t *memTransport) Close() error {
	t.crash()
	return nil
}

type memListener struct {
	t      *memTransport
	addr   string
	ch     chan *memLink
	once   sync.Once
	closed chan struct{}
	failed chan struct{}
}

func (l *memListener) Addr() string { return l.addr }

func (l *memListener) Accept(ctx context.Context) (transport.Link, error) {
	select {
	case k := <-l.ch:
		l.t.track(k)
		return k, nil
	case <-l.failed:
		return nil, errors.New("plugin process exited")
	case <-l.closed:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *memListener) unbind() {
	l.once.Do(func() {
		close(l.closed)
		n := l.t.net
		n.mu.Lock()
		if n.listeners[l.addr] == l {
			delete(n.listeners, l.addr)
		}
		n.mu.Unlock()
	})
}

func (l *memListener) fail() {
	select {
	case <-l.failed:
	default:
		close(l.failed)
	}
	l.unbind()
}

func (l *memListener) Close() error {
	l.unbind()
	return nil
}

type memLink struct {
	local, remote string
	in            chan [][]byte
	peer          *memLink
	once          sync.Once
	closed        chan struct{}
}

func newMemPair(client, server string) (*memLink, *memLink) {
	a := &memLink{local: client, remote: server, in: make(chan [][]byte, 16), closed: make(chan struct{})}
	b := &memLink{local: server, remote: client, in: make(chan [][]byte, 16), closed: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

func (l *memLink) LocalAddr() string  { return l.local }
func (l *memLink) RemoteAddr() string { return l.remote }

func (l *memLink) Send(ctx context.Context, pkts [][]byte) error {
	cp := make([][]byte, len(pkts))
	for i, p := range pkts {
		if len(p) > 1<<20 {
			return transport.ErrTooLarge
		}
		cp[i] = append([]byte(nil), p...)
	}
	select {
	case <-l.closed:
		return transport.ErrClosed
	case <-l.peer.closed:
		return errors.New("broken pipe")
	default:
	}
	select {
	case l.peer.in <- cp:
		return nil
	case <-l.closed:
		return transport.ErrClosed
	case <-l.peer.closed:
		return errors.New("broken pipe")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *memLink) Recv(ctx context.Context) ([][]byte, error) {
	select {
	case b := <-l.in:
		return b, nil
	default:
	}
	select {
	case b := <-l.in:
		return b, nil
	case <-l.closed:
		return nil, transport.ErrClosed
	case <-l.peer.closed:
		select {
		case b := <-l.in:
			return b, nil
		default:
		}
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *memLink) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}
