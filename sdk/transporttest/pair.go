package transporttest

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Pair dials addr (the address of ln, or a way to reach it: a proxy, a
// pinned form, the other end of a serial line) from cli and returns the
// dialled link and the link ln accepted for it. Accept runs while Dial does,
// since a transport may finish a dial only once the other side accepted.
// Nothing else may call ln.Accept meanwhile, or the links may not match.
//
// It fails the test when Dial or Accept fails or ctx ends first; both links
// are closed when the test ends, and nothing it started outlives it.
func Pair(ctx context.Context, t testing.TB, cli transport.Transport, ln transport.Listener, addr string) (dialled, accepted transport.Link) {
	t.Helper()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		l   transport.Link
		err error
	}
	acc := make(chan result, 1)
	go func() {
		l, err := ln.Accept(actx)
		acc <- result{l, err}
	}()
	c, err := cli.Dial(ctx, addr)
	if err != nil {
		cancel()
		if r := <-acc; r.l != nil {
			_ = r.l.Close()
		}
		t.Fatalf("Dial(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := <-acc
	if r.err != nil {
		t.Fatalf("Accept on %s: %v", ln.Addr(), r.err)
	}
	t.Cleanup(func() { _ = r.l.Close() })
	return c, r.l
}
