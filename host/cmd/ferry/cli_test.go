package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMistypedSubcommand(t *testing.T) {
	e := newEnv(t)
	r := e.run("node", "lst")
	if r.code == 0 || !strings.Contains(r.stderr, `unknown command "lst" for "ferry node"`) || !strings.Contains(r.stderr, `did you mean "list"?`) {
		t.Fatalf("ferry node lst: exit %d, stderr %q", r.code, r.stderr)
	}
	r = e.run("listner", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "listener") {
		t.Fatalf("ferry listner: exit %d, stderr %q", r.code, r.stderr)
	}
	// A group alone still shows its help.
	if out := e.ok("node"); !strings.Contains(out, "Available Commands") {
		t.Fatalf("ferry node: %q", out)
	}
}

func TestVersion(t *testing.T) {
	e := newEnv(t)
	out := e.ok("version")
	if !regexp.MustCompile(`(?m)^ferry \S+\ncommit \S+`).MatchString(out) {
		t.Fatalf("version: %q", out)
	}
	var v struct{ Version, Commit, Go string }
	e.json(&v, "version")
	if v.Version == "" || v.Commit == "" || !strings.HasPrefix(v.Go, "go") {
		t.Fatalf("version json: %+v", v)
	}
}

// -o json: lists are arrays, never null; errors are JSON too.
func TestJSONOutput(t *testing.T) {
	e := newEnv(t)
	if out := e.ok("node", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty node list: %q", out)
	}
	e.ok("node", "create", "j1", "--no-listener")
	for _, args := range [][]string{
		{"node", "list"}, {"node", "show", "j1"}, {"listener", "list", "--at", "j1"}, {"connection", "list", "--at", "j1"},
		{"service", "list", "--at", "j1"}, {"worker", "list", "--at", "j1"}, {"relay", "list", "--at", "j1"},
		{"tcp-inlet", "list", "--at", "j1"}, {"tcp-outlet", "list", "--at", "j1"}, {"tcp-listener", "list", "--at", "j1"},
	} {
		out := e.ok(append(args, "-o", "json")...)
		if strings.Contains(out, "null") {
			t.Errorf("ferry %s -o json has null:\n%s", strings.Join(args, " "), out)
		}
		if !json.Valid([]byte(out)) {
			t.Errorf("ferry %s -o json is not JSON:\n%s", strings.Join(args, " "), out)
		}
	}
	r := e.run("node", "show", "nope", "-o", "json")
	var je struct{ Error string }
	if r.code == 0 || json.Unmarshal([]byte(r.stderr), &je) != nil || !strings.Contains(je.Error, `node "nope" does not exist`) {
		t.Fatalf("error as JSON: exit %d, stderr %q", r.code, r.stderr)
	}
	var st struct {
		Status string `json:"status"`
	}
	e.json(&st, "node", "show", "j1")
	if st.Status != "UP" {
		t.Fatalf("node show status %q", st.Status)
	}
}

// node stop of a stopped node says so; the log survives stop and down, is
// followed with --follow, and goes with node delete.
func TestNodeLogsAndStop(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "l1", "--no-listener")
	if out := e.ok("node", "stop", "l1"); !strings.Contains(out, "Stopped node l1") {
		t.Fatalf("stop: %q", out)
	}
	if out := e.ok("node", "stop", "l1"); !strings.Contains(out, "not running") {
		t.Fatalf("stop of a stopped node: %q", out)
	}
	out := e.ok("node", "logs", "l1")
	if !strings.Contains(out, "starting node l1") || !strings.Contains(out, "node stopping") {
		t.Fatalf("logs after stop:\n%s", out)
	}

	// --follow prints what a restart appends.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, "node", "logs", "l1", "--follow")
	cmd.Env = e.environ()
	var buf syncBuffer
	cmd.Stdout = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	e.ok("node", "start", "l1")
	eventually(t, 20*time.Second, "follow shows the restart", func() bool {
		return strings.Count(buf.String(), "starting node l1") >= 2
	})

	// down keeps the log, node delete removes it.
	file := filepath.Join(t.TempDir(), "one.hcl")
	if err := os.WriteFile(file, []byte("node \"d1\" {\n  service \"echo\" {}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.ok("up", file)
	e.ok("down", file)
	if out := e.ok("node", "logs", "d1"); !strings.Contains(out, "starting node d1") {
		t.Fatalf("log after down:\n%s", out)
	}
	if n := e.nodes(); len(n) != 1 {
		t.Fatalf("nodes after down: %v", n)
	}
	e.ok("node", "delete", "d1")
	e.fails(`node "d1" does not exist`, "node", "logs", "d1")
	e.ok("node", "delete", "l1")
	e.fails(`node "l1" does not exist`, "node", "logs", "l1")
	if _, err := os.Stat(filepath.Join(e.home, "nodes", "l1")); !os.IsNotExist(err) {
		t.Fatalf("node directory left after delete: %v", err)
	}
}

// plugin list --at NODE starts plugins only to ask them; it must not fill
// the node's log with ERROR lines (a portal plugin answering a transport
// handshake was logged as a failure).
func TestPluginListLeavesNoErrorsInLog(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "p1")
	out := e.ok("plugin", "list", "--at", "p1")
	for _, want := range []string{"tcp", "portal-tcp", "unix"} {
		if !strings.Contains(out, want) {
			t.Errorf("plugin list lacks %s:\n%s", want, out)
		}
	}
	e.ok("plugin", "list", "--at", "p1", "-o", "json")
	log, err := os.ReadFile(filepath.Join(e.home, "nodes", "p1", "node.log"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(log, []byte("[ERROR]")) {
		t.Fatalf("plugin list wrote errors into the node's log:\n%s", log)
	}
}
