package node

import (
	"testing"
)

// FuzzParseID: id-sized addresses get an array key holding their bytes, a
// shard in range, and nothing else gets an array key.
func FuzzParseID(f *testing.F) {
	f.Add(NewWorkerID())
	f.Add("0123456789abcdef0123456789abcdeF")
	f.Add("echo")
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := parseID(s)
		if ok != (len(s) == len(k)) {
			t.Fatalf("parseID(%q) ok=%v", s, ok)
		}
		if ok && string(k[:]) != s {
			t.Fatalf("parseID(%q) = %q", s, k)
		}
		if sh := k.shard(); sh < 0 || sh >= shardCount {
			t.Fatalf("shard %d out of range", sh)
		}
	})
}

func TestIDShardSpread(t *testing.T) {
	var counts [shardCount]int
	for i := 0; i < 32000; i++ {
		k, _ := parseID(NewWorkerID())
		counts[k.shard()]++
	}
	for i, c := range counts {
		if c < 500 || c > 1500 {
			t.Fatalf("shard %d got %d of 32000 random ids: %v", i, c, counts)
		}
	}
}
