package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/sdk/routing"
)

func TestSmokeEchoThroughHops(t *testing.T) {
	n, err := node.New(node.Config{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	for _, s := range []string{"echo", "hop"} {
		if _, err := services.Start(n, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	n.StartWorker("h2", services.Hop{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := node.Request(ctx, n, routing.MustParseRoute("/service/hop/service/h2/service/echo"), "Hello Ferry!")
	if err != nil || got != "Hello Ferry!" {
		t.Fatalf("got %q, %v", got, err)
	}
}
