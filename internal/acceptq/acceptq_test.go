package acceptq

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

func TestQueue(t *testing.T) {
	var mu sync.Mutex
	q := New[int](&mu)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Several waiting Accepts each get one link, none is lost.
	got := make(chan int, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			v, err := q.Accept(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			got <- v
		})
	}
	mu.Lock()
	for i := range 10 {
		q.Push(i)
	}
	mu.Unlock()
	wg.Wait()
	close(got)
	seen := map[int]bool{}
	for v := range got {
		seen[v] = true
	}
	if len(seen) != 10 {
		t.Fatalf("accepted %v, want 0..9 once each", seen)
	}

	// Remove and Drain.
	mu.Lock()
	q.Push(1)
	q.Push(2)
	q.Push(3)
	q.Remove(2)
	q.Remove(7)
	mu.Unlock()
	if v, _ := q.Accept(ctx); v != 1 {
		t.Fatalf("got %d, want 1", v)
	}
	mu.Lock()
	rest := q.Drain()
	mu.Unlock()
	if len(rest) != 1 || rest[0] != 3 {
		t.Fatalf("drained %v, want [3]", rest)
	}

	// A context ends a wait.
	short, stop := context.WithTimeout(ctx, 10*time.Millisecond)
	defer stop()
	if _, err := q.Accept(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept with an ended context: %v", err)
	}

	// Close fails waiting and later Accepts and hands back what was queued.
	errc := make(chan error, 1)
	go func() { _, err := q.Accept(ctx); errc <- err }()
	mu.Lock()
	q.Push(4)
	mu.Unlock()
	if err := <-errc; err != nil {
		t.Fatalf("Accept: %v", err)
	}
	go func() { _, err := q.Accept(ctx); errc <- err }()
	mu.Lock()
	q.Push(5)
	left := q.Close()
	again := q.Close()
	mu.Unlock()
	err := <-errc
	if err == nil {
		// The waiting Accept took 5 before Close.
		left = append(left, 5)
	} else if !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Accept during Close: %v", err)
	}
	if len(left) != 1 || left[0] != 5 || again != nil {
		t.Fatalf("Close returned %v then %v, want [5] then nothing", left, again)
	}
	if _, err := q.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	select {
	case <-q.Done():
	default:
		t.Fatal("Done not closed by Close")
	}
}
