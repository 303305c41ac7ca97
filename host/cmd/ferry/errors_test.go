package main

import (
	"strings"
	"testing"
	"time"
)

// When a node on the way cannot deliver, message send fails at once with
// that node's reason instead of waiting for its timeout.
func TestRemoteErrorsTravelBack(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "r1")
	e.ok("node", "create", "r2")
	e.ok("service", "start", "echo", "--address", "private", "--at", "r2")
	e.ok("service", "start", "hop", "--at", "r2")
	for _, c := range []struct {
		what, to string
		want     []string
	}{
		{"missing remote service", "/node/r2/service/missing", []string{"node r2 could not deliver", "missing"}},
		{"unknown address type on the far node", "/node/r2/service/hop/nosuch/x/service/echo", []string{"node r2 could not deliver", "nosuch"}},
		{"access denied", "/node/r2/service/private", []string{"node r2 could not deliver", "private"}},
	} {
		start := time.Now()
		r := e.run("message", "send", "x", "--from", "r1", "--to", c.to, "--timeout", "30s")
		took := time.Since(start)
		if r.code == 0 {
			t.Errorf("%s: send succeeded: %q", c.what, r.stdout)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%s: stderr %q lacks %q", c.what, r.stderr, w)
			}
		}
		if strings.Contains(r.stderr, "no reply") {
			t.Errorf("%s: waited for a reply instead of getting the error: %q", c.what, r.stderr)
		}
		// A CLI process start, two control calls and a round trip:
		// far below the 30 s timeout even on a loaded machine.
		if took > 5*time.Second {
			t.Errorf("%s: took %s", c.what, took)
		}
		t.Logf("%s: %s: %s", c.what, took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	}
}
