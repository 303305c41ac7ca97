package streamframe

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

func TestCheckSizes(t *testing.T) {
	if err := CheckSizes([][]byte{{1}, make([]byte, 10)}, 10, "peer"); err != nil {
		t.Fatal(err)
	}
	err := CheckSizes([][]byte{{1}, make([]byte, 11)}, 10, "peer")
	if !errors.Is(err, transport.ErrTooLarge) || err.Error() != "send packet 1 of 11 bytes to peer (maximum 10): "+transport.ErrTooLarge.Error() {
		t.Fatalf("got %v", err)
	}
}

// A write blocked when ctx ends returns the deadline error, and the next
// write (with a new context) is not hit by the old deadline.
func TestCancelWrites(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	stop := CancelWrites(ctx, a)
	errc := make(chan error, 1)
	go func() { _, err := a.Write([]byte("nobody reads this")); errc <- err }()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked write after ctx ended: %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the end of ctx did not interrupt the write")
	}
	stop()

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	stop = CancelWrites(ctx2, a)
	go func() { _, err := a.Write([]byte("hello")); errc <- err }()
	got := make([]byte, 5)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v after the deadline was cleared", got, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write after the deadline was cleared: %v", err)
	}
	stop()

	// A context that never ends costs nothing and stop is a no-op.
	CancelWrites(context.Background(), a)()
}

// A read blocked when ctx ends returns the deadline error; after stop, the
// end of another context does not touch the reader.
func TestWakeReads(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	stop := WakeReads(ctx, a)
	errc := make(chan error, 1)
	go func() { _, err := a.Read(make([]byte, 1)); errc <- err }()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked read after ctx ended: %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the end of ctx did not interrupt the read")
	}
	stop()

	_ = a.SetReadDeadline(time.Time{})
	ctx2, cancel2 := context.WithCancel(context.Background())
	if !WakeReads(ctx2, a)() {
		t.Fatal("stop before ctx ended reported the wake-up as already run")
	}
	cancel2()
	go func() { _, err := b.Write([]byte("x")); errc <- err }()
	if _, err := a.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read after stop: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
