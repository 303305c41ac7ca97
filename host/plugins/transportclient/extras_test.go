package transportclient

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/sdk/transport"
)

// extrasTransport's listeners and links count and describe themselves.
type extrasTransport struct{ *memTransport }

type extrasListener struct{ transport.Listener }

func (extrasListener) Counters() map[string]uint64 { return map[string]uint64{"accepted": 7} }
func (extrasListener) Properties() map[string]string {
	return map[string]string{"fingerprint": "ab:cd"}
}

type extrasLink struct{ transport.Link }

func (extrasLink) Counters() map[string]uint64 { return map[string]uint64{"sent": 3} }

func (e extrasTransport) Listen(ctx context.Context, a string) (transport.Listener, error) {
	l, err := e.memTransport.Listen(ctx, a)
	return extrasListener{l}, err
}

func (e extrasTransport) Dial(ctx context.Context, a string) (transport.Link, error) {
	l, err := e.memTransport.Dial(ctx, a)
	if err != nil {
		return nil, err
	}
	return extrasLink{l}, nil
}

// Counters and Properties cross the plugin boundary: the host's listener
// and link implement them exactly when the plugin's do.
func TestCountersAndPropertiesCrossTheBoundary(t *testing.T) {
	ctx := tctx(t)
	r, stop, err := ServeInProcess(ctx, extrasTransport{&memTransport{max: 100, lns: map[string]*memListener{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	ln, err := r.Listen(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, ok := ln.(transport.Counters)
	if !ok || c.Counters()["accepted"] != 7 {
		t.Fatalf("listener counters: %T %v", ln, ok)
	}
	p, ok := ln.(transport.Properties)
	if !ok || p.Properties()["fingerprint"] != "ab:cd" {
		t.Fatalf("listener properties: %T %v", ln, ok)
	}
	link, err := r.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	lc, ok := link.(transport.Counters)
	if !ok || lc.Counters()["sent"] != 3 {
		t.Fatalf("link counters: %T %v", link, ok)
	}

	// A plain transport's listener and link have neither.
	plain := serveMem(t, 100)
	pl, err := plain.Listen(ctx, "y")
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	if _, ok := pl.(transport.Counters); ok {
		t.Fatal("plain listener claims counters")
	}
	if _, ok := pl.(transport.Properties); ok {
		t.Fatal("plain listener claims properties")
	}
	if r.Info().Unreliable {
		t.Fatal("unreliable by default")
	}
}

// Info.Unreliable crosses the boundary.
func TestUnreliableCrossesTheBoundary(t *testing.T) {
	ctx := tctx(t)
	r, stop, err := ServeInProcess(ctx, unreliable{&memTransport{max: 100, lns: map[string]*memListener{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if !r.Info().Unreliable {
		t.Fatal("Unreliable lost at the boundary")
	}
}

type unreliable struct{ *memTransport }

func (u unreliable) Info() transport.Info {
	i := u.memTransport.Info()
	i.Unreliable = true
	return i
}
