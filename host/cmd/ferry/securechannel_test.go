package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityAndSecureChannelCommands(t *testing.T) {
	e := newEnv(t)
	idA := strings.TrimSpace(e.ok("identity", "create", "alice"))
	if !strings.HasPrefix(idA, "I") || len(idA) != 41 {
		t.Fatalf("identity create printed %q", idA)
	}
	e.fails("already exists", "identity", "create", "alice")
	var shown struct{ Name, Identifier string }
	e.json(&shown, "identity", "show", "alice")
	if shown.Identifier != idA {
		t.Fatalf("identity show: %+v", shown)
	}
	key := filepath.Join(e.home, "vault", "alice.key")
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	e.fails("chmod 600", "identity", "show", "alice")
	e.fails("chmod 600", "node", "create", "n1", "--identity", "alice")
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	e.fails("no such identity", "node", "create", "n1", "--identity", "nobody")

	e.ok("node", "create", "n1", "--identity", "alice")
	e.ok("node", "create", "n2")
	out := e.ok("identity", "list")
	if !strings.Contains(out, "alice") || !strings.Contains(out, "n2") {
		t.Fatalf("identity list:\n%s", out)
	}
	var n2id struct{ Identifier string }
	e.json(&n2id, "identity", "show", "n2")
	e.fails("node n1 uses identity alice", "identity", "delete", "alice")

	if out := e.ok("service", "list", "--at", "n2"); !strings.Contains(out, "/service/api") {
		t.Fatalf("service list lacks /service/api:\n%s", out)
	}
	ch := strings.TrimSpace(e.ok("secure-channel", "create", "--from", "n1", "--to", "/node/n2/service/api", "--authorized", n2id.Identifier))
	if !strings.HasPrefix(ch, "/worker/") {
		t.Fatalf("secure-channel create printed %q", ch)
	}
	if got := e.ok("message", "send", "hello", "--from", "n1", "--to", ch+"/service/uppercase"); got != "HELLO\n" {
		t.Fatalf("message through the channel: %q", got)
	}
	out = e.ok("secure-channel", "list", "--at", "n2")
	if !strings.Contains(out, "responder") || !strings.Contains(out, idA) {
		t.Fatalf("n2's channels:\n%s", out)
	}
	e.fails("is not authorised", "secure-channel", "create", "--from", "n1", "--to", "/node/n2/service/api", "--authorized", idA)
	e.ok("secure-channel", "delete", ch, "--at", "n1")
	e.fails("no worker at address", "message", "send", "hello", "--from", "n1", "--to", ch+"/service/uppercase")
}
