package node

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/sdk/routing"
)

// FuzzParseID: the id-keyed table accepts exactly what routing calls a
// worker id, and the key is the id's bytes.
func FuzzParseID(f *testing.F) {
	f.Add(NewWorkerID())
	f.Add(strings.Repeat("F", 32))
	f.Add(strings.Repeat("g", 32))
	f.Add("echo")
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := parseID(s)
		if ok != routing.IsWorkerID(s) {
			t.Fatalf("parseID(%q) ok=%v, IsWorkerID=%v", s, ok, !ok)
		}
		if ok && hex.EncodeToString(k[:]) != s {
			t.Fatalf("parseID(%q) = %x", s, k)
		}
	})
}
