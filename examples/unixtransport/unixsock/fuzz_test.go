package unixsock

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzReadFrames feeds arbitrary bytes to a link's reader: it must never
// panic, never deliver a packet above the maximum, and end with io.EOF only
// when the bytes were whole frames.
func FuzzReadFrames(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 'h', 'i'})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 9, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1024
		tr := New()
		tr.max = max
		a, b := net.Pipe()
		l, err := tr.newLink(a)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		go func() {
			_, _ = b.Write(data)
			_ = b.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var got [][]byte
		for {
			ps, err := l.Recv(ctx)
			for _, p := range ps {
				if len(p) > max {
					t.Fatalf("packet of %d bytes above the maximum %d", len(p), max)
				}
				got = append(got, p)
			}
			if err == nil {
				continue
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("reader hung")
			}
			if err == io.EOF {
				// Only whole frames: re-encoding gives back the input.
				var enc []byte
				for _, p := range got {
					enc = append(enc, 1, byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p)))
					enc = append(enc, p...)
				}
				if !bytes.Equal(enc, data) {
					t.Fatalf("io.EOF but the input was not whole frames")
				}
			}
			return
		}
	})
}
