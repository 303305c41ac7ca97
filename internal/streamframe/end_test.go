package streamframe

import (
	"errors"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/sdk/transport"
)

func TestEnd(t *testing.T) {
	e := NewEnd()
	if err := e.Cause(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Cause before the end: %v, want ErrClosed", err)
	}
	select {
	case <-e.Done():
		t.Fatal("Done closed before the end")
	default:
	}
	first := errors.New("first")
	var released int
	var wg sync.WaitGroup
	e.Do(first, func() {
		select {
		case <-e.Done():
		default:
			t.Error("release ran before Done closed")
		}
		released++
	})
	for range 4 {
		wg.Go(func() { e.Do(errors.New("later"), func() { released++ }) })
	}
	wg.Wait()
	<-e.Done()
	if e.Cause() != first || released != 1 {
		t.Fatalf("Cause %v, release ran %d times; want the first cause, once", e.Cause(), released)
	}
	nilCause := NewEnd()
	nilCause.Do(nil, func() {})
	if err := nilCause.Cause(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Cause of an end without one: %v, want ErrClosed", err)
	}
}
