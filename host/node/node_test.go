package node_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

func TestStartStopWorker(t *testing.T) {
	n := newNode(t, nil, node.Config{Name: "t"})
	ctx := testCtx(t)
	base := n.WorkerCount()
	addr, err := n.StartWorker("echoer", services.Echo{})
	if err != nil || addr != routing.Local("echoer") {
		t.Fatalf("StartWorker = %v, %v", addr, err)
	}
	if n.WorkerCount() != base+1 {
		t.Fatalf("WorkerCount = %d, want %d", n.WorkerCount(), base+1)
	}
	got, err := node.Request(ctx, n, route("/service/echoer"), "Hello Ferry!")
	if err != nil || got != "Hello Ferry!" {
		t.Fatalf("Request = %q, %v", got, err)
	}
	if err := n.StopWorker(ctx, "echoer"); err != nil {
		t.Fatal(err)
	}
	if n.WorkerCount() != base {
		t.Fatalf("WorkerCount after stop = %d, want %d", n.WorkerCount(), base)
	}
	if err := n.Send(ctx, route("/service/echoer"), nil); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("send to a stopped worker: %v", err)
	}
	if err := n.StopWorker(ctx, "echoer"); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("second StopWorker: %v", err)
	}
	// The address is free again.
	if _, err := n.StartWorker("echoer", services.Echo{}); err != nil {
		t.Fatalf("restart on a freed address: %v", err)
	}
}

func TestAddressInUse(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	if _, err := n.StartWorker("a", services.Echo{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.StartWorker("a", services.Echo{}); !errors.Is(err, node.ErrAddressInUse) || !strings.Contains(err.Error(), "/service/a") {
		t.Fatalf("second start at a: %v", err)
	}
	if _, err := n.StartWorker(node.AppAddress, services.Echo{}); !errors.Is(err, node.ErrAddressInUse) {
		t.Fatalf("start at the app address: %v", err)
	}
	// Registration is all or nothing: b must stay free when a is taken.
	if _, err := n.StartWorker("b", services.Echo{}, node.WithAddresses("a")); !errors.Is(err, node.ErrAddressInUse) {
		t.Fatalf("multi-address start with a taken address: %v", err)
	}
	if _, err := n.StartWorker("c", services.Echo{}, node.WithAddresses("c")); !errors.Is(err, node.ErrAddressInUse) {
		t.Fatalf("worker listing its own address twice: %v", err)
	}
	if _, err := n.StartWorker("b", services.Echo{}, node.WithAddresses("b2", "b3")); err != nil {
		t.Fatalf("b after the failed attempt: %v", err)
	}
	ctx := testCtx(t)
	for _, a := range []string{"b", "b2", "b3"} {
		if got, err := node.Request(ctx, n, routing.Route{routing.Local(a)}, "x"); err != nil || got != "x" {
			t.Fatalf("echo via %s: %q, %v", a, got, err)
		}
	}
	if err := n.StopWorker(ctx, "b3"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"b", "b2", "b3"} {
		if err := n.Send(ctx, routing.Route{routing.Local(a)}, nil); !errors.Is(err, node.ErrNoRoute) {
			t.Fatalf("address %s still routes after stopping its worker: %v", a, err)
		}
	}
	for _, bad := range []string{strings.Repeat("x", routing.MaxValueLen+1)} {
		if _, err := n.StartWorker(bad, services.Echo{}); err == nil {
			t.Fatalf("StartWorker(%.10q...) succeeded", bad)
		}
	}
}

func TestRandomWorkerIDs(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		a, err := n.StartWorker("", services.Echo{})
		if err != nil {
			t.Fatal(err)
		}
		if !routing.IsWorkerID(a.Value) || !a.IsLocal() {
			t.Fatalf("generated address %v is not a worker id", a)
		}
		if seen[a.Value] {
			t.Fatalf("duplicate id %s", a.Value)
		}
		seen[a.Value] = true
		if i == 0 {
			if !strings.HasPrefix(a.String(), "/worker/") {
				t.Fatalf("generated address prints as %s", a)
			}
			got, err := node.Request(testCtx(t), n, routing.Route{a}, "hi")
			if err != nil || got != "hi" {
				t.Fatalf("request to %s: %q, %v", a, got, err)
			}
		}
	}
}

func TestPerWorkerOrderAndOneAtATime(t *testing.T) {
	n := newNode(t, nil, node.Config{MailboxSize: 16})
	ctx := testCtx(t)
	const senders, perSender = 8, 500
	var busy, maxBusy atomic.Int32
	var mu sync.Mutex
	last := map[string]int{}
	var bad atomic.Value
	done := make(chan struct{})
	var count int
	_, err := n.StartWorker("sink", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		b := busy.Add(1)
		for {
			old := maxBusy.Load()
			if b <= old || maxBusy.CompareAndSwap(old, b) {
				break
			}
		}
		runtime.Gosched() // widen the window for a concurrent call
		var who string
		var seq int
		fmt.Sscanf(string(m.Payload), "%s %d", &who, &seq)
		// The worker owns its state: no lock needed for count, but the test
		// reads last under mu after done.
		mu.Lock()
		if prev, ok := last[who]; ok && seq != prev+1 {
			bad.Store(fmt.Sprintf("%s: %d after %d", who, seq, prev))
		}
		last[who] = seq
		mu.Unlock()
		count++
		if count == senders*perSender {
			close(done)
		}
		busy.Add(-1)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := n.NewContext("")
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; i < perSender; i++ {
				if err := c.Send(ctx, route("/service/sink"), fmt.Appendf(nil, "s%d %d", s, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("not every message was handled")
	}
	if v := bad.Load(); v != nil {
		t.Fatalf("out of order: %v", v)
	}
	if m := maxBusy.Load(); m != 1 {
		t.Fatalf("handler ran %d times concurrently", m)
	}
}

func TestMailboxBackpressure(t *testing.T) {
	const limit = 4
	n := newNode(t, nil, node.Config{})
	g := newGate()
	if _, err := n.StartWorker("slow", g, node.WithMailboxSize(limit)); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	send := func(ctx context.Context, p string) error { return n.Send(ctx, route("/service/slow"), []byte(p)) }
	if err := send(ctx, "m0"); err != nil {
		t.Fatal(err)
	}
	g.waitEntered(t) // m0 is being handled; the mailbox is empty
	for i := 1; i <= limit; i++ {
		if err := send(ctx, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatalf("m%d: %v", i, err)
		}
	}
	// The mailbox is full: a sender with a short deadline gets its context
	// error back, and its message is not queued.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	err := send(short, "late")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "mailbox full") {
		t.Fatalf("send into a full mailbox: %v", err)
	}
	// A patient sender waits until there is room.
	res := make(chan error, 1)
	go func() { res <- send(ctx, fmt.Sprintf("m%d", limit+1)) }()
	select {
	case err := <-res:
		t.Fatalf("send into a full mailbox returned before there was room: %v", err)
	default:
	}
	if q := workerInfo(t, n, "slow").Queued; q != limit {
		t.Fatalf("Queued = %d, want %d", q, limit)
	}
	close(g.release)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < limit+2 {
		select {
		case p := <-g.handled:
			got = append(got, p)
		case <-ctx.Done():
			t.Fatalf("handled only %v", got)
		}
	}
	want := "m0 m1 m2 m3 m4 m5"
	if strings.Join(got, " ") != want {
		t.Fatalf("handled %v, want %s", got, want)
	}
}

func workerInfo(t *testing.T, n *node.Node, addr string) node.WorkerInfo {
	t.Helper()
	for _, w := range n.Workers() {
		for _, a := range w.Addresses {
			if a == addr {
				return w
			}
		}
	}
	t.Fatalf("no worker at %s in %v", addr, n.Workers())
	return node.WorkerInfo{}
}

func TestIdleWorkersHoldNoGoroutine(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	before := runtime.NumGoroutine()
	const count = 10000
	var handled atomic.Int64
	addrs := make([]routing.Address, count)
	for i := range addrs {
		a, err := n.StartWorker("", node.WorkerFunc(func(*node.Context, *routing.Message) error {
			handled.Add(1)
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = a
	}
	if g := runtime.NumGoroutine(); g > before+5 {
		t.Fatalf("%d goroutines before, %d after starting %d idle workers", before, g, count)
	}
	for _, a := range addrs {
		if err := n.Send(ctx, routing.Route{a}, []byte("wake")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every worker to handle its message", func() bool { return handled.Load() == count })
	// Once their mailboxes are drained, the runners that ran them exit or
	// park; at most MaxIdleRunners stay, however many workers there are.
	eventually(t, "runner goroutines to exit or park", func() bool {
		return runtime.NumGoroutine() <= before+node.MaxIdleRunners+5
	})
	if node.MaxIdleRunners+5 >= count/10 {
		t.Fatalf("MaxIdleRunners = %d makes this test meaningless", node.MaxIdleRunners)
	}
}

func TestRoutingErrors(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	if err := n.Send(ctx, route("/service/nobody"), nil); !errors.Is(err, node.ErrNoRoute) || !strings.Contains(err.Error(), "/service/nobody") {
		t.Fatalf("send to nobody: %v", err)
	}
	if err := n.Send(ctx, route("/"), nil); !errors.Is(err, node.ErrEmptyRoute) {
		t.Fatalf("send along the empty route: %v", err)
	}
	if err := n.Send(ctx, route("/tcp/127.0.0.1:1/service/echo"), nil); !errors.Is(err, node.ErrUnknownTranspt) || !strings.Contains(err.Error(), `"tcp"`) {
		t.Fatalf("send over an unknown transport: %v", err)
	}
	if _, err := n.SendAndReceive(ctx, route("/service/nobody"), nil); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("SendAndReceive to nobody: %v", err)
	}
}

func TestResolver(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	rec := newRecorder(4)
	link, _ := n.StartWorker("", rec)
	var asked atomic.Value
	n.RegisterResolver("tcp", node.ResolverFunc(func(_ context.Context, a routing.Address) (routing.Address, error) {
		asked.Store(a)
		if a.Value == "bad:1" {
			return routing.Address{}, errors.New("connection refused")
		}
		return link, nil
	}))
	if err := n.Send(ctx, route("/tcp/127.0.0.1:4000/service/echo"), []byte("p")); err != nil {
		t.Fatal(err)
	}
	m := rec.next(t)
	if want := (routing.Route{link, routing.Local("echo")}); !m.Onward.Equal(want) {
		t.Fatalf("link worker got onward %v, want %v", m.Onward, want)
	}
	if a, _ := asked.Load().(routing.Address); a != (routing.Address{Type: "tcp", Value: "127.0.0.1:4000"}) {
		t.Fatalf("resolver asked for %v", asked.Load())
	}
	if err := n.Send(ctx, route("/tcp/bad:1"), nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("resolver failure: %v", err)
	}
	n.RegisterResolver("tcp", nil)
	if err := n.Send(ctx, route("/tcp/127.0.0.1:4000"), nil); !errors.Is(err, node.ErrUnknownTranspt) {
		t.Fatalf("after removing the resolver: %v", err)
	}
}

func TestStoppedMeanwhileIsLoggedNotPanicked(t *testing.T) {
	logs := &logBuffer{}
	n := newNode(t, logs, node.Config{})
	ctx := testCtx(t)
	g := newGate()
	if _, err := n.StartWorker("busy", g); err != nil {
		t.Fatal(err)
	}
	if err := n.Send(ctx, route("/service/busy"), []byte("first")); err != nil {
		t.Fatal(err)
	}
	g.waitEntered(t)
	if err := n.Send(ctx, route("/service/busy"), []byte("queued")); err != nil {
		t.Fatal(err)
	}
	// Stopping cancels the handler's context; the queued message cannot be
	// delivered any more and is logged with its route.
	if err := n.StopWorker(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "dropped", "/service/busy", "/service/app")
	if got := <-g.handled; got != "first" {
		t.Fatalf("handled %q", got)
	}
	select {
	case p := <-g.handled:
		t.Fatalf("a message reached a stopped worker: %q", p)
	default:
	}
}

type panicker struct{ stopped atomic.Bool }

func (p *panicker) HandleMessage(_ *node.Context, m *routing.Message) error {
	if string(m.Payload) == "boom" {
		panic("handler exploded")
	}
	return nil
}

func (p *panicker) Shutdown(*node.Context) error { p.stopped.Store(true); return nil }

func TestPanickingHandler(t *testing.T) {
	logs := &logBuffer{}
	n := newNode(t, logs, node.Config{})
	ctx := testCtx(t)
	p := &panicker{}
	if _, err := n.StartWorker("fragile", p); err != nil {
		t.Fatal(err)
	}
	services.Start(n, "echo", "")
	if err := n.Send(ctx, route("/service/fragile"), []byte("boom")); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "[ERROR]", "panicked", "fragile", "handler exploded")
	eventually(t, "the panicking worker to be removed", func() bool {
		return errors.Is(n.Send(ctx, route("/service/fragile"), nil), node.ErrNoRoute)
	})
	eventually(t, "its shutdown hook", p.stopped.Load)
	if got, err := node.Request(ctx, n, route("/service/echo"), "still here"); err != nil || got != "still here" {
		t.Fatalf("node after a panic: %q, %v", got, err)
	}
}

func TestStoppedNode(t *testing.T) {
	n, err := node.New(node.Config{})
	if err != nil {
		t.Fatal(err)
	}
	services.Start(n, "echo", "")
	ctx := testCtx(t)
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	select {
	case <-n.Done():
	default:
		t.Fatal("Done not closed after Shutdown")
	}
	if err := n.Send(ctx, route("/service/echo"), nil); !errors.Is(err, node.ErrNodeStopped) {
		t.Fatalf("Send: %v", err)
	}
	if _, err := n.Receive(ctx); !errors.Is(err, node.ErrWorkerStopped) {
		t.Fatalf("Receive: %v", err)
	}
	if _, err := n.SendAndReceive(ctx, route("/service/echo"), nil); !errors.Is(err, node.ErrNodeStopped) {
		t.Fatalf("SendAndReceive: %v", err)
	}
	if _, err := n.StartWorker("x", services.Echo{}); !errors.Is(err, node.ErrNodeStopped) {
		t.Fatalf("StartWorker: %v", err)
	}
	if _, err := n.NewContext("y"); !errors.Is(err, node.ErrNodeStopped) {
		t.Fatalf("NewContext: %v", err)
	}
	if err := n.Deliver(ctx, &routing.Message{Onward: route("/service/echo")}); !errors.Is(err, node.ErrNodeStopped) {
		t.Fatalf("Deliver: %v", err)
	}
	if n.WorkerCount() != 0 || len(n.Workers()) != 0 {
		t.Fatalf("workers left after Shutdown: %v", n.Workers())
	}
}

type hooked struct {
	initErr  error
	initPan  bool
	inits    atomic.Int32
	shutdown atomic.Int32
	sawAddr  atomic.Value
	g        *gate
}

func (h *hooked) Initialize(c *node.Context) error {
	h.inits.Add(1)
	h.sawAddr.Store(c.Address())
	if h.initPan {
		panic("init exploded")
	}
	return h.initErr
}

func (h *hooked) HandleMessage(c *node.Context, m *routing.Message) error {
	if h.g != nil {
		return h.g.HandleMessage(c, m)
	}
	return nil
}

func (h *hooked) Shutdown(c *node.Context) error {
	h.shutdown.Add(1)
	if c.Err() != nil {
		return errors.New("shutdown hook got a cancelled context")
	}
	return nil
}

func TestHooks(t *testing.T) {
	logs := &logBuffer{}
	n := newNode(t, logs, node.Config{})
	ctx := testCtx(t)
	h := &hooked{}
	if _, err := n.StartWorker("h", h); err != nil {
		t.Fatal(err)
	}
	if h.inits.Load() != 1 || h.sawAddr.Load() != routing.Local("h") {
		t.Fatalf("Initialize ran %d times with %v", h.inits.Load(), h.sawAddr.Load())
	}
	if err := n.StopWorker(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	if h.shutdown.Load() != 1 {
		t.Fatalf("Shutdown hook ran %d times", h.shutdown.Load())
	}
	if strings.Contains(logs.String(), "cancelled context") {
		t.Fatal("the shutdown hook got a cancelled context")
	}

	bad := &hooked{initErr: errors.New("no database")}
	if _, err := n.StartWorker("bad", bad); err == nil || !strings.Contains(err.Error(), "no database") {
		t.Fatalf("failing Initialize: %v", err)
	}
	pan := &hooked{initPan: true}
	if _, err := n.StartWorker("bad", pan); err == nil || !strings.Contains(err.Error(), "init exploded") {
		t.Fatalf("panicking Initialize: %v", err)
	}
	if bad.shutdown.Load() != 0 || pan.shutdown.Load() != 0 {
		t.Fatal("Shutdown hook ran for a worker that never started")
	}
	if err := n.Send(ctx, route("/service/bad"), nil); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("a worker whose Initialize failed is routable: %v", err)
	}
}

func TestShutdownWithMessagesInFlight(t *testing.T) {
	logs := &logBuffer{}
	n, err := node.New(node.Config{Logger: newDebugLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	const workers = 50
	hs := make([]*hooked, workers)
	for i := range hs {
		hs[i] = &hooked{g: newGate()}
		if _, err := n.StartWorker(fmt.Sprintf("w%d", i), hs[i]); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 10; j++ {
			if err := n.Send(ctx, routing.Route{routing.Local(fmt.Sprintf("w%d", i))}, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Some handlers are busy (blocked until their context ends), the rest
	// of the messages sit in mailboxes.
	for i := range hs {
		hs[i].g.waitEntered(t)
	}
	senders := sync.WaitGroup{}
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := n.Send(ctx, route("/service/w0"), []byte("y"))
				if errors.Is(err, node.ErrNodeStopped) || errors.Is(err, node.ErrNoRoute) || errors.Is(err, node.ErrWorkerStopped) {
					return
				}
			}
		}()
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	close(stop)
	senders.Wait()
	for i, h := range hs {
		if h.shutdown.Load() != 1 {
			t.Fatalf("worker %d: shutdown hook ran %d times", i, h.shutdown.Load())
		}
	}
	if !strings.Contains(logs.String(), "dropped") {
		t.Fatal("queued messages were dropped without a debug log")
	}
}

func TestShutdownRespectsContext(t *testing.T) {
	n, err := node.New(node.Config{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	n.StartWorker("stubborn", node.WorkerFunc(func(*node.Context, *routing.Message) error {
		close(entered)
		<-release // ignores its context on purpose
		return nil
	}))
	ctx := testCtx(t)
	n.Send(ctx, route("/service/stubborn"), nil)
	<-entered
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := n.Shutdown(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck handler: %v", err)
	}
	close(release)
}

func TestWorkersListing(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	services.Start(n, "echo", "")
	services.Start(n, "uppercase", "up")
	n.StartWorker("zeta", node.WorkerFunc(func(*node.Context, *routing.Message) error { return nil }), node.WithAddresses("zeta2"))
	ws := n.Workers()
	var got []string
	for _, w := range ws {
		got = append(got, fmt.Sprintf("%s:%s:%d", strings.Join(w.Addresses, ","), w.Kind, w.Queued))
	}
	want := "app:context:0 echo:echo:0 up:uppercase:0 zeta,zeta2:node.WorkerFunc:0"
	if strings.Join(got, " ") != want {
		t.Fatalf("Workers() = %v, want %s", got, want)
	}
	if n.WorkerCount() != 4 {
		t.Fatalf("WorkerCount = %d", n.WorkerCount())
	}
	// A worker can list its node's workers.
	lister := node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		var names []string
		for _, w := range c.Node().Workers() {
			if !routing.IsWorkerID(w.Addresses[0]) { // skip Request's reply address
				names = append(names, w.Addresses[0])
			}
		}
		return c.Reply(c, m, []byte(strings.Join(names, ",")))
	})
	n.StartWorker("lister", lister)
	got2, err := node.Request(testCtx(t), n, route("/service/lister"), "")
	if err != nil || got2 != "app,echo,lister,up,zeta" {
		t.Fatalf("listing from a worker: %q, %v", got2, err)
	}
}

func TestAccessControl(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	rec := newRecorder(16)
	n.StartWorker("inbox", rec)
	in := func(flow string, to string) error {
		return n.Deliver(ctx, &routing.Message{Onward: routing.Route{routing.Local(to)}, Return: route("/service/remote"), Payload: []byte("net"), Local: routing.LocalInfo{Flow: flow}})
	}
	// Local input is allowed.
	if err := in("", "inbox"); err != nil {
		t.Fatal(err)
	}
	rec.next(t)
	// Network input is denied by default.
	if err := in("listener-1", "inbox"); !errors.Is(err, node.ErrAccessDenied) || !strings.Contains(err.Error(), "listener-1") {
		t.Fatalf("network input to a worker not allowed: %v", err)
	}
	n.AllowConsumer("listener-1", "inbox")
	if err := in("listener-1", "inbox"); err != nil {
		t.Fatalf("allowed consumer: %v", err)
	}
	if m := rec.next(t); m.Local.Flow != "listener-1" {
		t.Fatalf("flow not kept on delivery: %#v", m.Local)
	}
	if err := in("listener-2", "inbox"); !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("other flow: %v", err)
	}
	if got := n.Consumers("listener-1"); len(got) != 1 || got[0] != "inbox" {
		t.Fatalf("Consumers = %v", got)
	}
	n.RemoveFlow("listener-1")
	if err := in("listener-1", "inbox"); !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("after RemoveFlow: %v", err)
	}

	// A local worker that sends through the local end of a link may
	// receive replies from that link's flow; others may not.
	linkRec := newRecorder(4)
	link, _ := n.StartWorker("", linkRec, node.WithOutboundFlow("conn-1"))
	client := newRecorder(4)
	n.StartWorker("client", client)
	bystander := newRecorder(4)
	n.StartWorker("bystander", bystander)
	if err := in("conn-1", "client"); !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("reply before the client sent anything: %v", err)
	}
	sender, _ := n.StartWorker("sender", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		return c.Send(c, routing.Route{link, routing.Local("echo")}, m.Payload)
	}))
	_ = sender
	// "client" sends through the link via a worker of its own.
	n.StopWorker(ctx, "client")
	n.StartWorker("client", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		if m.Local.Flow == "" {
			return c.Send(c, routing.Route{link, routing.Local("echo")}, m.Payload)
		}
		c2 := *m
		client.ch <- &c2
		return nil
	}))
	if err := n.Send(ctx, route("/service/client"), []byte("go")); err != nil {
		t.Fatal(err)
	}
	linkRec.next(t)
	if err := in("conn-1", "client"); err != nil {
		t.Fatalf("reply to a worker that sent through the link: %v", err)
	}
	if m := client.next(t); m.Local.Flow != "conn-1" {
		t.Fatalf("reply flow %q", m.Local.Flow)
	}
	if err := in("conn-1", "bystander"); !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("reply flow reached a worker that never used the link: %v", err)
	}
}

func TestSendAndReceiveTimeout(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	n.StartWorker("silent", node.WorkerFunc(func(*node.Context, *routing.Message) error { return nil }))
	services.Start(n, "echo", "")
	base := n.WorkerCount()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := n.SendAndReceive(ctx, route("/service/silent"), []byte("anyone?"))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "/service/silent") {
		t.Fatalf("SendAndReceive to a silent worker: %v", err)
	}
	m, err := n.SendAndReceive(testCtx(t), route("/service/echo"), []byte("hi"))
	if err != nil || string(m.Payload) != "hi" || !m.Onward.Equal(nil) && len(m.Onward) != 1 {
		t.Fatalf("SendAndReceive to echo: %v, %v", m, err)
	}
	if m.Return.String() != "/service/echo" {
		t.Fatalf("reply's return route %v", m.Return)
	}
	if n.WorkerCount() != base {
		t.Fatalf("temporary reply addresses leaked: %d workers, want %d", n.WorkerCount(), base)
	}
}

func TestTypedHelpers(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	services.Start(n, "uppercase", "")
	if got, err := node.Request(ctx, n, route("/service/uppercase"), "hello"); err != nil || got != "HELLO" {
		t.Fatalf("Request[string] = %q, %v", got, err)
	}
	if got, err := node.Request(ctx, n, route("/service/uppercase"), []byte("bytes")); err != nil || string(got) != "BYTES" {
		t.Fatalf("Request[[]byte] = %q, %v", got, err)
	}
	type label string
	if got, err := node.Request(ctx, n, route("/service/uppercase"), label("typed")); err != nil || got != label("TYPED") {
		t.Fatalf("Request[label] = %q, %v", got, err)
	}
	if err := node.SendAs(ctx, n, route("/service/uppercase"), "to app"); err != nil {
		t.Fatal(err)
	}
	got, ret, err := node.ReceiveAs[string](ctx, n)
	if err != nil || got != "TO APP" || ret.String() != "/service/uppercase" {
		t.Fatalf("ReceiveAs = %q, %v, %v", got, ret, err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, _, err := node.ReceiveAs[[]byte](short, n); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReceiveAs with nothing to receive: %v", err)
	}
	if _, err := node.Request(short, n, route("/service/none"), "x"); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("Request to nobody: %v", err)
	}
}

func TestContextReceiveOnlyForDetached(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	errs := make(chan error, 1)
	n.StartWorker("w", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		_, err := c.Receive(c)
		errs <- err
		return nil
	}))
	n.Send(ctx, route("/service/w"), nil)
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "detached") {
		t.Fatalf("Receive inside a worker: %v", err)
	}
	c, err := n.NewContext("mine")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.NewContext("mine"); !errors.Is(err, node.ErrAddressInUse) {
		t.Fatalf("second context at the same address: %v", err)
	}
	services.Start(n, "echo", "")
	if err := c.Send(ctx, route("/service/echo"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Receive(ctx); err != nil || string(m.Payload) != "x" {
		t.Fatalf("detached Receive: %v, %v", m, err)
	}
	c.Close()
	if _, err := c.Receive(ctx); !errors.Is(err, node.ErrWorkerStopped) {
		t.Fatalf("Receive on a closed context: %v", err)
	}
}

func TestHopRoutesRepliesBack(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	services.Start(n, "echo", "echoer")
	for _, h := range []string{"h1", "h2", "h3"} {
		services.Start(n, "hop", h)
	}
	rec := newRecorder(1)
	n.StartWorker("probe", rec)
	// The echo's reply travels back through every hop: the probe sees the
	// return route built by the hops in reverse.
	if err := n.Send(ctx, route("/service/h1/service/h2/service/h3/service/probe"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	m := rec.next(t)
	if got := m.Return.String(); got != "/service/h3/service/h2/service/h1/service/app" {
		t.Fatalf("return route at the end: %s", got)
	}
	if got, err := node.Request(ctx, n, route("/service/h1/service/h2/service/h3/service/echoer"), "round"); err != nil || got != "round" {
		t.Fatalf("round trip through 3 hops: %q, %v", got, err)
	}
}

func TestWorkerContextCancelledOnStop(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	type seen struct {
		errBefore error
		derived   context.Context
		stopAF    func() bool
	}
	got := make(chan seen, 1)
	afterRan := make(chan struct{})
	stoppedAF := make(chan struct{}, 1)
	n.StartWorker("w", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		d, cancel := context.WithTimeout(c, time.Hour)
		_ = cancel // cancelled through the worker's stop
		context.AfterFunc(c, func() { close(afterRan) })
		stop := context.AfterFunc(c, func() { stoppedAF <- struct{}{} })
		got <- seen{errBefore: c.Err(), derived: d, stopAF: stop}
		return nil
	}))
	n.Send(ctx, route("/service/w"), nil)
	s := <-got
	if s.errBefore != nil || s.derived.Err() != nil {
		t.Fatalf("context cancelled early: %v, %v", s.errBefore, s.derived.Err())
	}
	if !s.stopAF() {
		t.Fatal("stopping an AfterFunc before the worker stopped returned false")
	}
	if err := n.StopWorker(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.derived.Done():
	case <-ctx.Done():
		t.Fatal("a context derived from the handler's was not cancelled when the worker stopped")
	}
	if !errors.Is(s.derived.Err(), context.Canceled) {
		t.Fatalf("derived Err = %v", s.derived.Err())
	}
	select {
	case <-afterRan:
	case <-ctx.Done():
		t.Fatal("AfterFunc did not run when the worker stopped")
	}
	select {
	case <-stoppedAF:
		t.Fatal("a stopped AfterFunc ran")
	default:
	}
}

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	n, err := node.New(node.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	services.Start(n, "echo", "")
	services.Start(n, "hop", "")
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, err := node.Request(ctx, n, route("/service/hop/service/echo"), "x"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the node's goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestIDShapedNames(t *testing.T) {
	n := newNode(t, nil, node.Config{})
	ctx := testCtx(t)
	id := strings.Repeat("0f", 16)
	// An explicit name shaped like a generated id is an id: it routes,
	// clashes and stops like one.
	if _, err := n.StartWorker(id, services.Echo{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.StartWorker(id, services.Echo{}); !errors.Is(err, node.ErrAddressInUse) {
		t.Fatalf("second worker at %s: %v", id, err)
	}
	// Upper-case hex is not an id; it is a distinct name.
	upper := strings.ToUpper(id)
	if _, err := n.StartWorker(upper, services.Uppercase{}); err != nil {
		t.Fatal(err)
	}
	if got, err := node.Request(ctx, n, routing.Route{routing.Local(id)}, "a"); err != nil || got != "a" {
		t.Fatalf("via %s: %q, %v", id, got, err)
	}
	if got, err := node.Request(ctx, n, routing.Route{routing.Local(upper)}, "a"); err != nil || got != "A" {
		t.Fatalf("via %s: %q, %v", upper, got, err)
	}
	if err := n.StopWorker(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := n.Send(ctx, routing.Route{routing.Local(id)}, nil); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("after stop: %v", err)
	}
	found := false
	for _, w := range n.Workers() {
		found = found || w.Addresses[0] == upper
	}
	if !found {
		t.Fatalf("Workers() misses %s: %v", upper, n.Workers())
	}
}

func TestForgetConsumer(t *testing.T) {
	n, err := node.New(node.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	n.AllowConsumer("f1", "a")
	n.AllowConsumer("f1", "b")
	n.AllowConsumer("f2", "a")
	n.ForgetConsumer("a")
	if got := n.Consumers("f1"); len(got) != 1 || got[0] != "b" {
		t.Fatalf("f1 consumers after forgetting a: %v", got)
	}
	if got := n.Consumers("f2"); len(got) != 0 {
		t.Fatalf("f2 consumers after forgetting a: %v", got)
	}
}

// An address type nobody registered goes to the fallback resolver; once a
// resolver is registered for the type, it wins.
func TestFallbackResolver(t *testing.T) {
	n, err := node.New(node.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if _, err := n.StartWorker("echo", services.Echo{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	route := routing.MustParseRoute("/made-up/x/service/echo")
	if _, err := n.SendAndReceive(ctx, route, nil); !errors.Is(err, node.ErrUnknownTranspt) {
		t.Fatalf("without a fallback: %v", err)
	}
	var asked []string
	n.SetFallbackResolver(node.ResolverFunc(func(_ context.Context, a routing.Address) (routing.Address, error) {
		asked = append(asked, a.Value)
		return routing.Local("hop"), nil
	}))
	if _, err := n.StartWorker("hop", services.Hop{}); err != nil {
		t.Fatal(err)
	}
	if got, err := node.Request(ctx, n, route, "via fallback"); err != nil || got != "via fallback" {
		t.Fatalf("via the fallback: %q, %v", got, err)
	}
	n.RegisterResolver("made-up", node.ResolverFunc(func(context.Context, routing.Address) (routing.Address, error) {
		return routing.Local("hop"), nil
	}))
	if _, err := node.Request(ctx, n, route, "registered"); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != "x" {
		t.Fatalf("fallback asked for %v, want [x] once", asked)
	}
}
