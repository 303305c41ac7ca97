package relays

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

const testDeadline = 10 * time.Second

// newNode starts a node with echo, uppercase and hop, shut down at cleanup.
func newNode(t testing.TB, name string) *node.Node {
	t.Helper()
	n, err := node.New(node.Config{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	for _, s := range []string{"echo", "uppercase", "hop"} {
		if _, err := services.Start(n, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// checkGoroutines fails the test if goroutines started during it are still
// running once it has cleaned up. Register it first so it runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(testDeadline)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}

func request(t *testing.T, n *node.Node, route, payload string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return node.Request(ctx, n, routing.MustParseRoute(route), payload)
}

func mustRequest(t *testing.T, n *node.Node, route, payload, want string) {
	t.Helper()
	got, err := request(t, n, route, payload)
	if err != nil || got != want {
		t.Fatalf("%s: got %q, %v; want %q", route, got, err, want)
	}
}

func fast() Options {
	return Options{CheckInterval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond, BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
}

func TestSingleNodeRelay(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// The registration travels through a hop, so the route back has two hops.
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/hop/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	info := reg.Info()
	if info.State != StateUp || info.Forwarder != "/service/forward_to_n3" || info.Registrations != 1 || info.Reregistrations != 0 {
		t.Fatalf("registration info: %+v", info)
	}

	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "hello", "HELLO")
	mustRequest(t, n, "/service/hop/service/forward_to_n3/service/hop/service/echo", "Hello Ferry!", "Hello Ferry!")

	// Counters move just after a message is passed on, so the requester
	// can see its reply first.
	eventually(t, "the relay counters to settle", func() bool {
		fi, _ := svc.Get("n3")
		return fi.Forwarded == 2 && fi.Returned == 2 && reg.Info().Forwarded == 4
	})
	list := svc.List()
	if len(list) != 1 {
		t.Fatalf("list: %+v", list)
	}
	fi := list[0]
	want := "/service/hop" + reg.Address().String()
	if fi.Name != "n3" || fi.Address != "/service/forward_to_n3" || fi.RouteBack != want || fi.State != ForwarderUp ||
		fi.Forwarded != 2 || fi.Returned != 2 || fi.Errors != 0 || fi.Node != "n" || fi.Registrations != 1 {
		t.Fatalf("forwarder info: %+v (want route back %s)", fi, want)
	}
	// Requests and replies both pass the registrant.
	if got := reg.Info().Forwarded; got != 4 {
		t.Fatalf("registrant forwarded %d messages, want 4", got)
	}

	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if reg.Info().State != StateClosed {
		t.Fatalf("state after close: %+v", reg.Info())
	}
	if l := svc.List(); len(l) != 0 {
		t.Fatalf("forwarder left after its registrant closed: %+v", l)
	}
	if _, err := request(t, n, "/service/forward_to_n3/service/uppercase", "x"); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("after close: %v, want ErrNoRoute", err)
	}
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := svc.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterAgainReplacesRoute(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	// The same registrant (same secret) reconnecting over another path.
	opts := Options{CheckInterval: time.Hour, Secret: NewSecret()}
	a, err := Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(ctxT(t), n, routing.MustParseRoute("/service/hop/service/relay"), "n3", opts)
	if err != nil {
		t.Fatal(err)
	}
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "hi", "HI")
	// The registrant counts the reply just after passing it on.
	eventually(t, "the new registration forwards both ways", func() bool { return b.Info().Forwarded == 2 })
	if a.Info().Forwarded != 0 || b.Info().Forwarded != 2 {
		t.Fatalf("the replaced registration still gets messages: a %+v, b %+v", a.Info(), b.Info())
	}
	fi, ok := svc.Get("n3")
	if !ok || fi.Registrations != 2 || fi.RouteBack != "/service/hop"+b.Address().String() {
		t.Fatalf("forwarder: %+v", fi)
	}
	// The stale registration closing must not delete its successor.
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "still", "STILL")
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := svc.Get("n3"); ok {
		t.Fatal("forwarder left after its owner closed")
	}
}

func TestReregistersAfterRelayRestart(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/hop/service/relay"), "n3", fast())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "one", "ONE")

	// The relay forgets everything, as when its node restarts.
	if err := svc.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the registrant to notice the relay is gone", func() bool { return reg.Info().State == StateDown })
	// The hop in front of the relay drops what it cannot deliver, so the
	// registrant sees its ping go unanswered.
	if e := reg.Info().LastError; !strings.Contains(e, "no answer to ping") {
		t.Fatalf("last error %q does not say why", e)
	}
	svc, err = StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	eventually(t, "re-registration", func() bool {
		i := reg.Info()
		return i.State == StateUp && i.Reregistrations >= 1
	})
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "two", "TWO")
}

func TestDeleteOnRelayNodeLeadsToReregistration(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", fast())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	if err := svc.Delete(ctxT(t), "n3"); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctxT(t), "n3"); !errors.Is(err, ErrUnknownRelay) {
		t.Fatalf("second delete: %v", err)
	}
	eventually(t, "re-registration", func() bool { return reg.Info().Reregistrations >= 1 })
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "back", "BACK")
}

func TestDeadRouteIsReported(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	if _, err := n.StartWorker("h2", services.Hop{}); err != nil {
		t.Fatal(err)
	}
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/h2/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "a", "A")
	// The path back to the registrant breaks.
	if err := n.StopWorker(ctxT(t), "h2"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := node.Request(ctx, n, routing.MustParseRoute("/service/forward_to_n3/service/uppercase"), "b"); err == nil {
		t.Fatal("a reply came back over a dead route")
	}
	eventually(t, "the forwarder to be reported down", func() bool {
		fi, _ := svc.Get("n3")
		return fi.State == ForwarderDown
	})
	fi, _ := svc.Get("n3")
	if fi.Errors != 1 || !strings.Contains(fi.LastError, "h2") {
		t.Fatalf("forwarder info: %+v", fi)
	}
}

func TestStaleForwarder(t *testing.T) {
	now := time.Unix(1e9, 0)
	clock := func() time.Time { return now }
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	if fi, _ := svc.Get("n3"); fi.State != ForwarderUp || fi.CheckInterval != "1h0m0s" {
		t.Fatalf("fresh forwarder: %+v", fi)
	}
	now = now.Add(3*time.Hour + 2*time.Second)
	if fi, _ := svc.Get("n3"); fi.State != ForwarderStale {
		t.Fatalf("forwarder not pinged for 3 intervals: %+v", fi)
	}
}

func TestBackoffIsCappedAndExponential(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n") // no relay service: every attempt fails at once
	sleeps := make(chan time.Duration)
	opts := Options{NoWait: true, BackoffMin: 100 * time.Millisecond, BackoffMax: 2 * time.Second, Timeout: time.Second,
		sleep: func(ctx context.Context, d time.Duration) error {
			select {
			case sleeps <- d:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000}
	for i, w := range want {
		w *= time.Millisecond
		select {
		case d := <-sleeps:
			if d < w*8/10 || d > w*12/10 {
				t.Fatalf("wait %d is %s, want %s ±20%%", i+1, d, w)
			}
		case <-time.After(testDeadline):
			t.Fatal("no retry")
		}
	}
	info := reg.Info()
	if info.State != StateConnecting || info.Attempts < uint64(len(want)) || !strings.Contains(info.LastError, "no worker at address") {
		t.Fatalf("info while failing: %+v", info)
	}
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterFailsCleanly(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	workers := n.WorkerCount()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := Register(ctx, n, routing.MustParseRoute("/service/relay"), "n3", Options{BackoffMin: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no worker at address") || !strings.Contains(err.Error(), "attempts") {
		t.Fatalf("got %v", err)
	}
	if got := n.WorkerCount(); got != workers {
		t.Fatalf("%d workers after a failed registration, want %d", got, workers)
	}
	for _, bad := range []string{"", "a/b", "sp ace", strings.Repeat("x", MaxNameLen+1)} {
		if _, err := Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), bad, Options{}); err == nil {
			t.Fatalf("name %q accepted", bad)
		}
	}
	if _, err := Register(ctxT(t), n, nil, "n3", Options{}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty route: %v", err)
	}
}

func TestServiceRefusesBadRequests(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	ask := func(c control) control {
		t.Helper()
		b, err := c.encode()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		m, err := n.SendAndReceive(ctx, routing.MustParseRoute("/service/relay"), b)
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeControl(m.Payload)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask(control{Kind: kindRegister, Nonce: 5, Name: "bad/name"}); r.Kind != kindError || r.Nonce != 5 || !strings.Contains(r.Error, "not allowed") {
		t.Fatalf("bad name: %+v", r)
	}
	if r := ask(control{Kind: kindPong, Nonce: 6}); r.Kind != kindError || !strings.Contains(r.Error, "pong") {
		t.Fatalf("response kind sent as a request: %+v", r)
	}
	if r := ask(control{Kind: kindPing, Name: "nobody"}); r.Kind != kindPong || r.Status != statusUnknown {
		t.Fatalf("ping unknown: %+v", r)
	}
	// A worker already at the forwarder's address is not taken over.
	if _, err := n.StartWorker(ForwarderAddress("taken"), services.Echo{}); err != nil {
		t.Fatal(err)
	}
	if r := ask(control{Kind: kindRegister, Name: "taken"}); r.Kind != kindError || !strings.Contains(r.Error, "no proof") {
		t.Fatalf("registration without proof: %+v", r)
	}
	if r := ask(control{Kind: kindRegister, Name: "taken", Proof: "p"}); r.Kind != kindError || !strings.Contains(r.Error, "in use") {
		t.Fatalf("taken address: %+v", r)
	}
	// Register reports a refusal at once instead of waiting for its deadline.
	start := time.Now()
	_, err = Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "taken", Options{})
	if err == nil || !strings.Contains(err.Error(), "refused the registration") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("register a taken name: %v", err)
	}
	if time.Since(start) > testDeadline/2 {
		t.Fatalf("a refusal took %s to report", time.Since(start))
	}
	// Garbage is ignored; the service keeps working.
	if err := n.Send(ctxT(t), routing.MustParseRoute("/service/relay"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if r := ask(control{Kind: kindPing, Name: "nobody"}); r.Kind != kindPong {
		t.Fatalf("after garbage: %+v", r)
	}
}

func TestSet(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	var set Set
	at := routing.MustParseRoute("/service/relay")
	for _, name := range []string{"b", "a"} {
		if _, err := set.Register(ctxT(t), n, at, name, Options{CheckInterval: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := set.Register(ctxT(t), n, at, "a", Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	l := set.List()
	if len(l) != 2 || l[0].Name != "a" || l[1].Name != "b" || l[0].State != StateUp {
		t.Fatalf("list: %+v", l)
	}
	if r, ok := set.Get("a"); !ok || r.Name() != "a" {
		t.Fatal("get a")
	}
	if err := set.Delete(ctxT(t), "a"); err != nil {
		t.Fatal(err)
	}
	if err := set.Delete(ctxT(t), "a"); !errors.Is(err, ErrUnknownRelay) {
		t.Fatalf("second delete: %v", err)
	}
	if got := svc.List(); len(got) != 1 || got[0].Name != "b" {
		t.Fatalf("relay side after delete: %+v", got)
	}
	// A failed registration leaves no entry behind.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := set.Register(ctx, n, routing.MustParseRoute("/service/nothing"), "c", Options{BackoffMin: 10 * time.Millisecond}); err == nil {
		t.Fatal("registered at nothing")
	}
	if len(set.List()) != 1 {
		t.Fatalf("list: %+v", set.List())
	}
	if err := set.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := svc.List(); len(got) != 0 {
		t.Fatalf("relay side after close: %+v", got)
	}
}

func TestNodeShutdownClosesRegistration(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	if _, err := StartService(n, ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/relay"), "n3", fast())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "closed state", func() bool { return reg.Info().State == StateClosed })
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatalf("close after node shutdown: %v", err)
	}
}

func TestRouteFuncIsAskedBeforeEachRegistration(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	for _, h := range []string{"h1", "h2"} {
		if _, err := n.StartWorker(h, services.Hop{}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	var mu sync.Mutex
	current, fail := "/service/h1/service/relay", false
	opts := fast()
	opts.Route = func(ctx context.Context) (routing.Route, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return nil, errors.New("no connection to n2 yet")
		}
		return routing.ParseRoute(current)
	}
	reg, err := Register(ctxT(t), n, nil, "n3", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	if i := reg.Info(); i.Relay != "/service/h1/service/relay" {
		t.Fatalf("info: %+v", i)
	}
	// The path through h1 breaks; the route function has no route for now.
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := n.StopWorker(ctxT(t), "h1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route function's error to be reported", func() bool {
		i := reg.Info()
		return i.State == StateDown && strings.Contains(i.LastError, "no connection to n2 yet")
	})
	mu.Lock()
	fail, current = false, "/service/h2/service/relay"
	mu.Unlock()
	eventually(t, "registration over the new route", func() bool {
		i := reg.Info()
		return i.State == StateUp && i.Relay == "/service/h2/service/relay"
	})
	if fi, _ := svc.Get("n3"); !strings.HasPrefix(fi.RouteBack, "/service/h2/") {
		t.Fatalf("forwarder: %+v", fi)
	}
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "new route", "NEW ROUTE")
}

func TestForwarderUnderLoadAndBadInput(t *testing.T) {
	checkGoroutines(t)
	n := newNode(t, "n")
	svc, err := StartService(n, ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	reg, err := Register(ctxT(t), n, routing.MustParseRoute("/service/hop/service/relay"), "n3", Options{CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())

	// Many senders at once, each checking its own replies.
	const senders, each = 32, 25
	errs := make(chan error, senders)
	for s := 0; s < senders; s++ {
		go func() {
			for i := 0; i < each; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
				want := strings.Repeat("x", s+1) + string(rune('a'+i%26))
				got, err := node.Request(ctx, n, routing.MustParseRoute("/service/forward_to_n3/service/uppercase"), want)
				cancel()
				if err != nil || got != strings.ToUpper(want) {
					errs <- fmt.Errorf("sender %d: got %q, %v", s, got, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for s := 0; s < senders; s++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The forwarder counts a reply after sending it on, so the last
	// requester may see its reply just before the count moves.
	var fi ForwarderInfo
	eventually(t, "the forwarder to count every request and reply", func() bool {
		fi, _ = svc.Get("n3")
		return fi.Forwarded == senders*each && fi.Returned == senders*each
	})
	if fi.Errors != 0 {
		t.Fatalf("forwarder after load: %+v", fi)
	}

	// A return route already at the hop limit cannot take the forwarder's
	// address: counted as an error, not as a dead route.
	long := make(routing.Route, routing.MaxHops)
	for i := range long {
		long[i] = routing.Local("app")
	}
	if err := n.App().SendMessage(ctxT(t), &routing.Message{Onward: routing.MustParseRoute("/service/forward_to_n3/service/uppercase"), Return: long, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the error to be counted", func() bool { fi, _ := svc.Get("n3"); return fi.Errors == 1 })
	if fi, _ := svc.Get("n3"); fi.State != ForwarderUp || !strings.Contains(fi.LastError, "hops") {
		t.Fatalf("forwarder after a too-long route: %+v", fi)
	}
	mustRequest(t, n, "/service/forward_to_n3/service/uppercase", "fine", "FINE")
}
