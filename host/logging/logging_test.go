package logging

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestLimiterBurstThenCount(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &Limiter{Burst: 3, Interval: time.Second, now: func() time.Time { return now }}
	logged := 0
	for i := 0; i < 100; i++ {
		if ok, _ := l.Allow("bad frame"); ok {
			logged++
		}
	}
	if logged != 3 {
		t.Fatalf("logged %d of 100 in one interval, want 3", logged)
	}
	// Another cause has its own budget.
	if ok, _ := l.Allow("other"); !ok {
		t.Fatal("a different cause was suppressed")
	}
	now = now.Add(time.Second)
	ok, n := l.Allow("bad frame")
	if !ok || n != 97 {
		t.Fatalf("after the interval: ok=%v suppressed=%d, want true 97", ok, n)
	}
	if ok, n := l.Allow("bad frame"); !ok || n != 0 {
		t.Fatalf("second line of the new interval: ok=%v suppressed=%d", ok, n)
	}
}

func TestLimiterBoundsCauses(t *testing.T) {
	l := &Limiter{MaxCauses: 10}
	for i := 0; i < 1000; i++ {
		l.Allow(strings.Repeat("x", i%50) + string(rune('a'+i%26)))
	}
	if len(l.causes) > 10 {
		t.Fatalf("%d causes tracked, cap 10", len(l.causes))
	}
}

func TestLimiterWarnAddsCount(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	now := time.Unix(0, 0)
	l := &Limiter{Burst: 1, Interval: time.Minute, now: func() time.Time { return now }}
	for i := 0; i < 50; i++ {
		l.Warn(log, "c", "dropped a packet", "i", i)
	}
	now = now.Add(time.Minute)
	l.Warn(log, "c", "dropped a packet", "i", 50)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed=49") {
		t.Fatalf("log:\n%s", buf.String())
	}
}

func TestRotatingFileCapsSize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.log")
	r, err := OpenRotating(path, RotateOptions{MaxBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	line := []byte(strings.Repeat("z", 99) + "\n")
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2500; i++ {
				if _, err := r.Write(line); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// A single oversized write is cut to the cap.
	if n, err := r.Write(bytes.Repeat([]byte("y"), 10000)); err != nil || n != 10000 {
		t.Fatalf("big write: %d, %v", n, err)
	}
	var total int64
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 4096 {
			t.Errorf("%s is %d bytes, cap 4096", p, st.Size())
		}
		total += st.Size()
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d files in the log directory, want node.log and node.log.1", len(entries))
	}
	t.Logf("1 MB written; on disk %d bytes in %d files", total, len(entries))
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
}

func TestRotatingFileRotatesOversizedOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRotating(path, RotateOptions{MaxBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Write([]byte("fresh\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if string(b) != "fresh\n" {
		t.Fatalf("node.log = %q", b)
	}
}
