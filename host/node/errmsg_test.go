package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

func TestErrorPayloadRoundTrip(t *testing.T) {
	in := &node.RemoteError{Code: node.CodeAccessDenied, Node: "n2", Address: "/service/outlet", Cause: "denied"}
	p := node.EncodeError(in)
	if !node.IsErrorPayload(p) || len(p) > node.MaxErrorPayload {
		t.Fatalf("payload %q", p)
	}
	out, err := node.DecodeError(p)
	if err != nil || *out != *in {
		t.Fatalf("got %+v, %v", out, err)
	}
	// Over-long fields are cut, never refused.
	long := &node.RemoteError{Code: node.CodeOther, Node: strings.Repeat("n", 1000), Cause: strings.Repeat("c", 5000)}
	if _, err := node.DecodeError(node.EncodeError(long)); err != nil {
		t.Fatal(err)
	}
	if node.IsErrorPayload([]byte("hello")) {
		t.Fatal("plain payload taken for an error")
	}
}

func FuzzDecodeError(f *testing.F) {
	f.Add(node.EncodeError(&node.RemoteError{Code: node.CodeNoWorker, Node: "n1", Address: "/service/x", Cause: "no worker"}))
	f.Add([]byte(node.ErrorMagic))
	f.Add(append([]byte(node.ErrorMagic), 1, 3, 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := node.DecodeError(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		again, err := node.DecodeError(node.EncodeError(e))
		if err != nil || *again != *e {
			t.Fatalf("round trip: %+v -> %+v, %v", e, again, err)
		}
		_ = e.Error()
	})
}

// within asserts that f returns an error matching want well inside a
// generous deadline (the point is "at once" instead of the caller's
// timeout, not a timing measurement).
func expectRemote(t *testing.T, n *node.Node, r routing.Route, code node.ErrorCode, sentinel error) *node.RemoteError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := n.SendAndReceive(ctx, r, []byte("hi"))
	el := time.Since(start)
	var re *node.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("send to %s: %v after %s, want a *node.RemoteError", r, err, el)
	}
	if re.Code != code || !errors.Is(err, sentinel) {
		t.Fatalf("send to %s: code %s (%v), want %s", r, re.Code, err, code)
	}
	if el > 10*time.Second {
		t.Fatalf("error came back after %s", el)
	}
	t.Logf("%s: %v (after %s)", r, err, el.Round(time.Microsecond))
	return re
}

func TestErrorsTravelBackThroughHop(t *testing.T) {
	n := newNode(t, nil, node.Config{Name: "n1"})
	if _, err := n.StartWorker("hop", services.Hop{}); err != nil {
		t.Fatal(err)
	}
	re := expectRemote(t, n, route("/service/hop/service/missing"), node.CodeNoWorker, node.ErrNoRoute)
	if re.Node != "n1" || !strings.Contains(re.Address, "missing") {
		t.Fatalf("%+v", re)
	}
	expectRemote(t, n, route("/service/hop/nosuchtype/x/service/echo"), node.CodeNoTransport, node.ErrUnknownTranspt)
}

// Network input (Deliver with a flow) that names a missing or denied
// worker gets an error back along its return route.
func TestErrorsForNetworkInput(t *testing.T) {
	n := newNode(t, nil, node.Config{Name: "n2"})
	if _, err := n.StartWorker("echo", services.Echo{}); err != nil {
		t.Fatal(err)
	}
	back := newRecorder(16)
	if _, err := n.StartWorker("back", back); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for _, tc := range []struct {
		to   string
		code node.ErrorCode
	}{{"/service/echo", node.CodeAccessDenied}, {"/service/missing", node.CodeNoWorker}} {
		err := n.Deliver(ctx, &routing.Message{Onward: route(tc.to), Return: route("/service/back"), Payload: []byte("x"), Local: routing.LocalInfo{Flow: "listener/1"}})
		if err == nil {
			t.Fatal("delivered")
		}
		m := back.next(t)
		re, ok := node.AsRemoteError(m)
		if !ok || re.Code != tc.code {
			t.Fatalf("to %s: got %q, want code %s", tc.to, m.Payload, tc.code)
		}
	}
}

// A node never answers an error with an error, so two nodes cannot bounce
// errors at each other.
func TestNoErrorForAnError(t *testing.T) {
	n := newNode(t, nil, node.Config{Name: "n"})
	back := newRecorder(16)
	if _, err := n.StartWorker("back", back); err != nil {
		t.Fatal(err)
	}
	em := node.EncodeError(&node.RemoteError{Code: node.CodeNoWorker, Cause: "x"})
	_ = n.Deliver(testCtx(t), &routing.Message{Onward: route("/service/missing"), Return: route("/service/back"), Payload: em, Local: routing.LocalInfo{Flow: "f"}})
	_ = n.Deliver(testCtx(t), &routing.Message{Onward: route("/service/missing"), Return: route("/service/back"), Payload: []byte("x"), Local: routing.LocalInfo{Flow: "f"}})
	// The second (not an error) is answered; the first never is.
	m := back.next(t)
	if re, ok := node.AsRemoteError(m); !ok || re.Code != node.CodeNoWorker {
		t.Fatalf("%q", m.Payload)
	}
	select {
	case m := <-back.ch:
		t.Fatalf("a second message came back: %q", m.Payload)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestErrorsRateLimitedPerSource(t *testing.T) {
	n := newNode(t, nil, node.Config{Name: "n", ErrorsPerSecond: 1, ErrorBurst: 5})
	back := newRecorder(1000)
	if _, err := n.StartWorker("back", back); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for _, flow := range []string{"a", "b"} {
		for i := 0; i < 200; i++ {
			_ = n.Deliver(ctx, &routing.Message{Onward: route("/service/missing"), Return: route("/service/back"), Payload: []byte("x"), Local: routing.LocalInfo{Flow: flow}})
		}
	}
	// 5 per source at once (plus at most a token or two refilled).
	eventually(t, "errors sent", func() bool { return len(back.ch) >= 10 })
	time.Sleep(300 * time.Millisecond) // let stragglers arrive before counting
	if got := len(back.ch); got > 14 {
		t.Fatalf("%d error messages for 400 undeliverable messages from 2 sources, want about 10", got)
	}
	if n.ErrorsSuppressed() < 380 {
		t.Fatalf("suppressed %d", n.ErrorsSuppressed())
	}
}

// A resolver asked to route network input may not dial; the node tells it
// through the context.
func TestNetworkInputMayNotDial(t *testing.T) {
	dialled := make(chan bool, 4)
	n := newNode(t, nil, node.Config{Name: "n", NetworkDialAllow: []string{"/fake/ok"}})
	n.RegisterResolver("fake", node.ResolverFunc(func(ctx context.Context, a routing.Address) (routing.Address, error) {
		dialled <- node.MayDial(ctx)
		if !node.MayDial(ctx) {
			return routing.Address{}, node.ErrDialRefused
		}
		return routing.Local("sink"), nil
	}))
	sink := newRecorder(4)
	if _, err := n.StartWorker("sink", sink); err != nil {
		t.Fatal(err)
	}
	if _, err := n.StartWorker("hop", services.Hop{}); err != nil {
		t.Fatal(err)
	}
	n.AllowConsumer("net", "hop")
	back := newRecorder(4)
	if _, err := n.StartWorker("back", back); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	deliver := func(to string) {
		_ = n.Deliver(ctx, &routing.Message{Onward: route(to), Return: route("/service/back"), Payload: []byte("x"), Local: routing.LocalInfo{Flow: "net"}})
	}
	deliver("/service/hop/fake/elsewhere/service/x")
	if <-dialled {
		t.Fatal("network input through a hop was allowed to dial")
	}
	m := back.next(t)
	if re, ok := node.AsRemoteError(m); !ok || re.Code != node.CodeNoDial {
		t.Fatalf("%q", m.Payload)
	}
	deliver("/service/hop/fake/ok/service/x")
	if !<-dialled {
		t.Fatal("an address in NetworkDialAllow was not allowed")
	}
	sink.next(t)
	// Local senders may dial.
	if err := n.Send(ctx, route("/service/hop/fake/elsewhere/service/x"), []byte("y")); err != nil {
		t.Fatal(err)
	}
	if !<-dialled {
		t.Fatal("a local sender was not allowed to dial")
	}
	if _, err := node.New(node.Config{NetworkDialAllow: []string{"/service/x"}}); err == nil {
		t.Fatal("a local address was accepted in NetworkDialAllow")
	}
}

// A mailbox is bounded in bytes as well as in messages: senders wait once
// the queued payloads reach Config.MailboxBytes, but one message of any size
// always fits in an empty mailbox.
func TestMailboxBoundedInBytes(t *testing.T) {
	n := newNode(t, nil, node.Config{MailboxBytes: 1000})
	g := newGate()
	if _, err := n.StartWorker("g", g); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	big := make([]byte, 5000)
	if err := n.Send(ctx, route("/service/g"), big); err != nil { // being handled
		t.Fatal(err)
	}
	g.waitEntered(t)
	if err := n.Send(ctx, route("/service/g"), big); err != nil { // alone in the mailbox
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := n.Send(short, route("/service/g"), []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third send into a mailbox over its byte bound: %v, want to wait", err)
	}
	close(g.release)
	if err := n.Send(ctx, route("/service/g"), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// A message too large for a link on the way comes back as CodeTooLarge,
// which matches routing.ErrTooLarge on the sender's side after the round
// trip through the wire form.
func TestTooLargeCode(t *testing.T) {
	p := node.EncodeError(&node.RemoteError{Code: node.CodeTooLarge, Node: "n2", Cause: "message of 70000 bytes exceeds the tcp transport's max_message_size 65536"})
	e, err := node.DecodeError(p)
	if err != nil {
		t.Fatal(err)
	}
	if e.Code != node.CodeTooLarge || !errors.Is(e, routing.ErrTooLarge) || errors.Is(e, node.ErrNoRoute) || e.Code.String() != "too large" {
		t.Fatalf("decoded %#v (%s)", e, e.Code)
	}
}
