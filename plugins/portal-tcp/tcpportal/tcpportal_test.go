package tcpportal

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/portal"
)

func TestListenDialHalfCloseAndClose(t *testing.T) {
	p := New()
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := p.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan portal.Stream, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		accepted <- s
	}()
	c, err := p.Dial(ctx, l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s) // EOF after the half-close
	if err != nil || string(got) != "ping" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := s.Write([]byte("pong")); err != nil { // the other way still works
		t.Fatal(err)
	}
	s.Close()
	got, err = io.ReadAll(c)
	if err != nil || string(got) != "pong" {
		t.Fatalf("%q %v", got, err)
	}
	c.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(ctx); !errors.Is(err, portal.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}

func TestDialRefusedAndCloseEndsEverything(t *testing.T) {
	p := New()
	ctx := context.Background()
	l, err := p.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr()
	l.Close()
	if _, err := p.Dial(ctx, addr); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	l, err = p.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Dial(ctx, l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream still open after the portal closed")
	}
	if _, err := p.Listen(ctx, "127.0.0.1:0"); !errors.Is(err, portal.ErrClosed) {
		t.Fatalf("listen after close: %v", err)
	}
}
