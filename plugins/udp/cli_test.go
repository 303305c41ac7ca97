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

// cliEnv runs the ferry binary with its own FERRY_HOME and a plugin
// directory holding the udp plugin (and tcp, for each node's default
// listener).
type cliEnv struct {
	t                   *testing.T
	ferry, home, plugin string
}

func buildCLI(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	e := &cliEnv{t: t, ferry: filepath.Join(dir, "ferry"), home: filepath.Join(dir, "home"), plugin: filepath.Join(dir, "plugins")}
	for out, pkg := range map[string]string{
		e.ferry:                        "github.com/ferryhq/ferry/host/cmd/ferry",
		filepath.Join(e.plugin, "udp"): ".",
		filepath.Join(e.plugin, "tcp"): "github.com/ferryhq/ferry/plugins/tcp",
	} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	t.Cleanup(func() { e.run("node", "delete", "--all") })
	return e
}

func (e *cliEnv) run(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.ferry, args...)
	cmd.Env = append(os.Environ(), "FERRY_HOME="+e.home, "FERRY_PLUGIN_DIR="+e.plugin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (e *cliEnv) ok(args ...string) string {
	e.t.Helper()
	out, errs, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("ferry %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

// TestCLI drives the ferry command as a user would: a UDP listener on n2,
// a message from n1 to its address, a connection's worker, and the
// topology file configs/udp.hcl.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	e := buildCLI(t)
	e.ok("node", "create", "n1")
	e.ok("node", "create", "n2")
	var l struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
		Up        bool   `json:"up"`
	}
	out := e.ok("listener", "create", "127.0.0.1:0", "--at", "n2", "--transport", "udp", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("listener create --output json: %v\n%s", err, out)
	}
	if l.Transport != "udp" || !l.Up || !strings.HasPrefix(l.Address, "127.0.0.1:") || strings.HasSuffix(l.Address, ":0") {
		t.Fatalf("listener create: %+v", l)
	}
	out = e.ok("message", "send", "hello", "--from", "n1", "--to", "/udp/"+l.Address+"/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send over udp printed %q, want HELLO", out)
	}
	out = e.ok("connection", "create", "--from", "n1", "--transport", "udp", "--to", l.Address)
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.ok("message", "send", "again", "--from", "n1", "--to", w+"/service/uppercase")
	if strings.TrimSpace(out) != "AGAIN" {
		t.Fatalf("message send via %s printed %q, want AGAIN", w, out)
	}
	out = e.ok("node", "show", "n2")
	if !strings.Contains(out, "udp") {
		t.Errorf("node show n2 does not list the udp listener:\n%s", out)
	}
	// The transport's counters, as the plugin reports them.
	out = e.ok("listener", "show", l.Address, "--at", "n2")
	for _, c := range []string{"datagrams_in", "cookie_challenges", "peers_accepted", "bad_datagrams", "reassembly_timeouts"} {
		if !strings.Contains(out, c) {
			t.Errorf("listener show lacks the counter %s:\n%s", c, out)
		}
	}
	e.ok("node", "delete", "--all")

	// The topology file, on a free port.
	file, err := filepath.Abs("../../configs/udp.hcl")
	if err != nil {
		t.Fatal(err)
	}
	e.ok("validate", file)
	e.ok("up", file, "--var", "n2_port=0")
	t.Cleanup(func() { e.run("down", file, "--var", "n2_port=0") })
	var ls []struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
	}
	out = e.ok("listener", "list", "--at", "n2", "--output", "json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("listener list --output json: %v\n%s", err, out)
	}
	addr := ""
	for _, x := range ls {
		if x.Transport == "udp" {
			addr = x.Address
		}
	}
	if addr == "" {
		t.Fatalf("configs/udp.hcl: n2 has no udp listener: %s", out)
	}
	out = e.ok("message", "send", "from the file", "--from", "n1", "--to", "/udp/"+addr+"/service/uppercase")
	if strings.TrimSpace(out) != "FROM THE FILE" {
		t.Fatalf("message over configs/udp.hcl printed %q", out)
	}
	e.ok("down", file, "--var", "n2_port=0")
}
