package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/internal/clitest"
)

// buildCLI builds ferry and the plugins this test drives.
func buildCLI(t *testing.T) *clitest.Env {
	return clitest.New(t, map[string]string{
		"udp": ".", "tcp": "github.com/ferryhq/ferry/plugins/tcp",
	})
}

// TestCLI drives the ferry command as a user would: a UDP listener on n2,
// a message from n1 to its address, a connection's worker, and the
// topology file configs/udp.hcl.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	e := buildCLI(t)
	e.OK("node", "create", "n1")
	e.OK("node", "create", "n2")
	var l struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
		Up        bool   `json:"up"`
	}
	out := e.OK("listener", "create", "127.0.0.1:0", "--at", "n2", "--transport", "udp", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("listener create --output json: %v\n%s", err, out)
	}
	if l.Transport != "udp" || !l.Up || !strings.HasPrefix(l.Address, "127.0.0.1:") || strings.HasSuffix(l.Address, ":0") {
		t.Fatalf("listener create: %+v", l)
	}
	out = e.OK("message", "send", "hello", "--from", "n1", "--to", "/udp/"+l.Address+"/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send over udp printed %q, want HELLO", out)
	}
	out = e.OK("connection", "create", "--from", "n1", "--transport", "udp", "--to", l.Address)
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.OK("message", "send", "again", "--from", "n1", "--to", w+"/service/uppercase")
	if strings.TrimSpace(out) != "AGAIN" {
		t.Fatalf("message send via %s printed %q, want AGAIN", w, out)
	}
	out = e.OK("node", "show", "n2")
	if !strings.Contains(out, "udp") {
		t.Errorf("node show n2 does not list the udp listener:\n%s", out)
	}
	// The transport's counters, as the plugin reports them.
	out = e.OK("listener", "show", l.Address, "--at", "n2")
	for _, c := range []string{"datagrams_in", "cookie_challenges", "peers_accepted", "bad_datagrams", "reassembly_timeouts"} {
		if !strings.Contains(out, c) {
			t.Errorf("listener show lacks the counter %s:\n%s", c, out)
		}
	}
	e.OK("node", "delete", "--all")

	// The topology file, on a free port.
	file, err := filepath.Abs("../../configs/udp.hcl")
	if err != nil {
		t.Fatal(err)
	}
	e.OK("validate", file)
	e.OK("up", file, "--var", "n2_port=0")
	t.Cleanup(func() { e.Run("down", file, "--var", "n2_port=0") })
	var ls []struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
	}
	out = e.OK("listener", "list", "--at", "n2", "--output", "json")
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
	out = e.OK("message", "send", "from the file", "--from", "n1", "--to", "/udp/"+addr+"/service/uppercase")
	if strings.TrimSpace(out) != "FROM THE FILE" {
		t.Fatalf("message over configs/udp.hcl printed %q", out)
	}
	e.OK("down", file, "--var", "n2_port=0")
}
