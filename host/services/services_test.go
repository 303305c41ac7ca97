package services_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

func setup(t *testing.T) (*node.Node, context.Context) {
	t.Helper()
	n, err := node.New(node.Config{Name: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(func() {
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		if err := n.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	})
	return n, ctx
}

func TestEchoAndUppercase(t *testing.T) {
	n, ctx := setup(t)
	for _, name := range services.Names() {
		if _, err := services.Start(n, name, ""); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
	}
	m, err := n.SendAndReceive(ctx, routing.MustParseRoute("/service/echo"), []byte("Hello Ferry!"))
	if err != nil || string(m.Payload) != "Hello Ferry!" || m.Return.String() != "/service/echo" {
		t.Fatalf("echo: %v, %v", m, err)
	}
	got, err := node.Request(ctx, n, routing.MustParseRoute("/service/uppercase"), "héllo ferry ß")
	if err != nil || got != strings.ToUpper("héllo ferry ß") {
		t.Fatalf("uppercase: %q, %v", got, err)
	}
	empty, err := node.Request(ctx, n, routing.MustParseRoute("/service/echo"), []byte{})
	if err != nil || len(empty) != 0 {
		t.Fatalf("echo of an empty payload: %q, %v", empty, err)
	}
}

func TestHop(t *testing.T) {
	n, ctx := setup(t)
	services.Start(n, "echo", "")
	services.Start(n, "hop", "h1")
	services.Start(n, "hop", "h2")
	got, err := node.Request(ctx, n, routing.MustParseRoute("/service/h1/service/h2/service/echo"), "via hops")
	if err != nil || got != "via hops" {
		t.Fatalf("through two hops: %q, %v", got, err)
	}
	// A hop at the end of a route has nowhere to forward: the message is
	// refused (logged), not bounced or crashed on.
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := n.SendAndReceive(short, routing.MustParseRoute("/service/h1"), []byte("x")); err == nil {
		t.Fatal("a hop at the end of the route produced a reply")
	}
	if _, err := node.Request(ctx, n, routing.MustParseRoute("/service/h1/service/echo"), "still fine"); err != nil {
		t.Fatalf("hop after a bad message: %v", err)
	}
}

func TestNewAndStartErrors(t *testing.T) {
	n, _ := setup(t)
	if _, err := services.New("nope"); err == nil || !strings.Contains(err.Error(), "echo hop uppercase") {
		t.Fatalf("New(nope): %v", err)
	}
	if _, err := services.Start(n, "nope", "x"); err == nil {
		t.Fatal("Start(nope) succeeded")
	}
	a, err := services.Start(n, "uppercase", "shout")
	if err != nil || a != routing.Local("shout") {
		t.Fatalf("Start at a chosen address: %v, %v", a, err)
	}
	if _, err := services.Start(n, "echo", "shout"); err == nil {
		t.Fatal("Start on an address in use succeeded")
	}
	kinds := map[string]string{}
	for _, w := range n.Workers() {
		kinds[w.Addresses[0]] = w.Kind
	}
	if kinds["shout"] != "uppercase" {
		t.Fatalf("kind of shout = %q", kinds["shout"])
	}
	if got := strings.Join(services.Names(), ","); got != "echo,hop,uppercase" {
		t.Fatalf("Names = %s", got)
	}
	for _, name := range services.Names() {
		if w, err := services.New(name); err != nil || w == nil {
			t.Fatalf("New(%s) = %v, %v", name, w, err)
		}
	}
}
