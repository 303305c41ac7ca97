package transportclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

// memTransport is a small in-memory transport for the SDK's own tests:
// "echo" links send packets back, Listen/Dial make pipes, "broken" links
// fail Recv with an error.
type memTransport struct {
	max int
	mu  sync.Mutex
	lns map[string]*memListener
}

func (m *memTransport) Info() transport.Info {
	return transport.Info{Name: "mem", Version: "1.2.3", AddressType: "mem", MaxMessageSize: m.max,
		Settings: []transport.Setting{{Name: "x", Type: transport.Int, Default: "1", Description: "d"}, {Name: "bad", Type: transport.String, Description: "fails Configure"}}}
}
func (m *memTransport) Configure(ctx context.Context, s map[string]string) error {
	if s["bad"] != "" {
		return fmt.Errorf("bad setting %q: %w", s["bad"], transport.ErrTooLarge)
	}
	return nil
}
func (m *memTransport) Listen(ctx context.Context, a string) (transport.Listener, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := &memListener{addr: a, ch: make(chan transport.Link), done: make(chan struct{})}
	m.lns[a] = l
	return l, nil
}
func (m *memTransport) Dial(ctx context.Context, a string) (transport.Link, error) {
	switch a {
	case "echo":
		e := newMemEnd(m.max)
		e.peer = e
		return e, nil
	case "broken":
		e := newMemEnd(m.max)
		e.peer = e
		e.broken = errors.New("wire cut")
		return e, nil
	}
	m.mu.Lock()
	l := m.lns[a]
	m.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: refused", a)
	}
	x, y := newMemEnd(m.max), newMemEnd(m.max)
	x.peer, y.peer = y, x
	select {
	case l.ch <- y:
		return x, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (m *memTransport) Close() error { return nil }

type memListener struct {
	addr string
	ch   chan transport.Link
	done chan struct{}
	once sync.Once
}

func (l *memListener) Addr() string { return l.addr }
func (l *memListener) Accept(ctx context.Context) (transport.Link, error) {
	select {
	case k := <-l.ch:
		return k, nil
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (l *memListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

type memEnd struct {
	max    int
	peer   *memEnd
	in     chan [][]byte
	done   chan struct{}
	once   sync.Once
	broken error
}

func newMemEnd(max int) *memEnd {
	return &memEnd{max: max, in: make(chan [][]byte, 4), done: make(chan struct{})}
}
func (e *memEnd) LocalAddr() string  { return "local" }
func (e *memEnd) RemoteAddr() string { return "remote" }
func (e *memEnd) Send(ctx context.Context, ps [][]byte) error {
	cp := make([][]byte, len(ps))
	for i, p := range ps {
		if len(p) > e.max {
			return transport.ErrTooLarge
		}
		cp[i] = bytes.Clone(p)
	}
	select {
	case e.peer.in <- cp:
		return nil
	case <-e.done:
		return transport.ErrClosed
	case <-e.peer.done:
		return transport.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (e *memEnd) Recv(ctx context.Context) ([][]byte, error) {
	if e.broken != nil {
		return nil, e.broken
	}
	select {
	case b := <-e.in:
		return b, nil
	case <-e.done:
		return nil, transport.ErrClosed
	case <-e.peer.done:
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (e *memEnd) Close() error { e.once.Do(func() { close(e.done) }); return nil }

func serveMem(t *testing.T, max int) *Remote {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, stop, err := ServeInProcess(ctx, &memTransport{max: max, lns: map[string]*memListener{}}, memOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return r
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestInProcessInfoAndErrors(t *testing.T) {
	r := serveMem(t, 1000)
	info := r.Info()
	if info.Name != "mem" || info.Version != "1.2.3" || info.MaxMessageSize != 1000 || len(info.Settings) != 2 || info.Settings[0].Type != transport.Int {
		t.Fatalf("info: %+v", info)
	}
	ctx := tctx(t)
	// Sentinels survive the boundary.
	if err := r.Configure(ctx, map[string]string{"bad": "v"}); !errors.Is(err, transport.ErrTooLarge) || !strings.Contains(err.Error(), `bad setting "v"`) {
		t.Fatalf("configure: %v", err)
	}
	if _, err := r.Dial(ctx, "nowhere"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial: %v", err)
	}
	// A link that breaks in the plugin reports why.
	l, err := r.Dial(ctx, "broken")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Recv(ctx); err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "wire cut") {
		t.Fatalf("broken link: %v", err)
	}
}

func TestInProcessEchoOrderAndSizes(t *testing.T) {
	r := serveMem(t, 3<<20)
	ctx := tctx(t)
	l, err := r.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var want [][]byte
	go func() {
		for i := range 200 {
			batch := make([][]byte, i%9+1)
			for j := range batch {
				batch[j] = []byte(fmt.Sprintf("%d.%d", i, j))
			}
			if i%50 == 0 {
				batch = append(batch, make([]byte, 3<<20), nil)
			}
			if err := l.Send(ctx, batch); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 200 {
		want = append(want, make([][]byte, i%9+1)...)
		if i%50 == 0 {
			want = append(want, nil, nil)
		}
	}
	n := 0
	for n < len(want) {
		ps, err := l.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(ps)
	}
	if n != len(want) {
		t.Fatalf("got %d packets, want %d", n, len(want))
	}
	if err := l.Send(ctx, [][]byte{make([]byte, 3<<20+1)}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
}

func TestInProcessRecvContextAndClose(t *testing.T) {
	r := serveMem(t, 1000)
	ctx := tctx(t)
	ln, err := r.Listen(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan transport.Link, 1)
	go func() {
		l, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	d, err := r.Dial(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a == nil {
		t.FailNow()
	}
	// A Recv that times out leaves the link usable.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = a.Recv(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recv with deadline: %v", err)
	}
	if err := d.Send(ctx, [][]byte{[]byte("hi")}); err != nil {
		t.Fatal(err)
	}
	ps, err := a.Recv(ctx)
	if err != nil || string(ps[0]) != "hi" {
		t.Fatalf("%v %q", err, ps)
	}
	// Closing one end: the other sees EOF; the closed end refuses use.
	a.Close()
	if _, err := d.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("peer recv after close: %v", err)
	}
	if _, err := a.Recv(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("recv on closed link: %v", err)
	}
	// Remote.Close ends everything; a blocked Accept returns.
	accepted := make(chan error, 1)
	go func() { _, err := ln.Accept(ctx); accepted <- err }()
	r.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("accept after close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("accept hung after Close")
	}
	if _, err := d.Recv(ctx); err == nil {
		t.Fatal("recv after Remote.Close succeeded")
	}
}

// Closing a link whose peer stopped reading does not hang: the flush of
// what Send accepted is bounded.
func TestCloseUnderBackpressureIsBounded(t *testing.T) {
	r := serveMem(t, 1<<20)
	r.closeFlush = 200 * time.Millisecond
	ctx := tctx(t)
	ln, err := r.Listen(ctx, "bp")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan transport.Link, 1)
	go func() {
		l, _ := ln.Accept(ctx)
		got <- l
	}()
	d, err := r.Dial(ctx, "bp")
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a == nil {
		t.Fatal("accept failed")
	}
	defer a.Close()
	chunk := [][]byte{make([]byte, 256<<10)}
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatal("sender never blocked")
		}
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := d.Send(sctx, chunk)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	d.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Close took %s", el)
	}
}

// memOpts are the ServeInProcess options serveMem uses; the tests run with
// the data channel (the default) and again over gRPC streams.
var memOpts []InProcessOption

func TestInProcessOverGRPCStreams(t *testing.T) {
	memOpts = []InProcessOption{GRPCStreams()}
	defer func() { memOpts = nil }()
	t.Run("InfoAndErrors", TestInProcessInfoAndErrors)
	t.Run("EchoOrderAndSizes", TestInProcessEchoOrderAndSizes)
	t.Run("RecvContextAndClose", TestInProcessRecvContextAndClose)
	t.Run("CloseUnderBackpressureIsBounded", TestCloseUnderBackpressureIsBounded)
	if r := serveMem(t, 10); r.DataChannel() {
		t.Fatal("GRPCStreams still uses the data channel")
	}
}

func TestInProcessUsesTheDataChannel(t *testing.T) {
	if r := serveMem(t, 10); !r.DataChannel() {
		t.Fatal("the data channel was not negotiated")
	}
}
