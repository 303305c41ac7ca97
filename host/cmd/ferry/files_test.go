package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A service address with a character that route text escapes comes back
// exactly the same after a restart (it was escaped twice: /service/a%2520b).
func TestServiceAddressRoundTrip(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "s1", "--no-listener")
	out := e.ok("service", "start", "echo", "--address", "a b", "--at", "s1")
	if !strings.Contains(out, "/service/a%20b") {
		t.Fatalf("service start: %s", out)
	}
	e.ok("node", "stop", "s1")
	e.ok("node", "start", "s1")
	var svcs []struct{ Type, Address string }
	e.json(&svcs, "service", "list", "--at", "s1")
	found := false
	for _, s := range svcs {
		if strings.Contains(s.Address, "a%25") {
			t.Fatalf("address escaped twice after restart: %+v", svcs)
		}
		found = found || s.Address == "/service/a%20b"
	}
	if !found {
		t.Fatalf("service a b not back after restart: %+v", svcs)
	}
	if got := strings.TrimSpace(e.ok("message", "send", "same", "--to", "/node/s1/service/a%20b")); got != "same" {
		t.Fatalf("send to the restored service: %q", got)
	}
}

// A 200 KB file of nested brackets is refused at once with a position, not
// a stack overflow.
func TestValidateDeeplyNestedFile(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "deep.hcl")
	if err := os.WriteFile(path, bytes.Repeat([]byte("["), 200_000), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := e.run("validate", path)
	if r.code == 0 || !strings.Contains(r.stderr, "nested too deeply") || !strings.Contains(r.stderr, "deep.hcl line 1") {
		t.Fatalf("validate of a deeply nested file: exit %d, stderr %.500s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine") || time.Since(start) > 10*time.Second {
		t.Fatalf("validate crashed or took %s: %.500s", time.Since(start), r.stderr)
	}
}

// An existing FERRY_HOME keeps its mode (a shared directory its sticky
// bit); read-only commands change nothing in it.
func TestHomeKeepsItsMode(t *testing.T) {
	e := newEnv(t)
	if err := os.Chmod(e.home, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	e.ok("node", "create", "h1", "--no-listener")
	if st, _ := os.Stat(e.home); st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Fatalf("FERRY_HOME re-moded to %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(e.home, "nodes", "h1")); st.Mode().Perm() != 0o700 {
		t.Fatalf("node directory is %v, want 0700", st.Mode())
	}
	e.ok("node", "stop", "h1")
	for _, d := range []string{filepath.Join(e.home, "nodes", "h1"), filepath.Join(e.home, "nodes"), filepath.Join(e.home, "locks"), e.home} {
		if err := os.Chmod(d, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(d, 0o700)
	}
	before := treeText(t, e.home)
	out := e.ok("node", "list")
	if !strings.Contains(out, "h1") || !strings.Contains(out, "DOWN") {
		t.Fatalf("node list on a read-only home: %s", out)
	}
	e.ok("node", "show", "h1")
	if after := treeText(t, e.home); after != before {
		t.Fatalf("read-only commands changed the home:\n%s\n%s", before, after)
	}
}

func treeText(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(p + " " + info.Mode().String() + " " + info.ModTime().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
