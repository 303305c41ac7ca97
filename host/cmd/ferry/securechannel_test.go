package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	// A service only alice (n1) reaches, through a secure channel; it is
	// started again with its restriction after a restart.
	e.ok("service", "start", "uppercase", "--at", "n2", "--address", "private", "--authorized", idA)
	if got := e.ok("message", "send", "mine", "--from", "n1", "--to", ch+"/service/private"); got != "MINE\n" {
		t.Fatalf("guarded service through the channel: %q", got)
	}
	e.fails("no reply", "message", "send", "x", "--to", "/node/n2/service/private", "--timeout", "300ms")
	var svcs []struct {
		Address    string
		Authorized []string
	}
	e.ok("node", "stop", "n2")
	e.ok("node", "start", "n2")
	e.json(&svcs, "service", "list", "--at", "n2")
	found := false
	for _, s := range svcs {
		found = found || (s.Address == "/service/private" && len(s.Authorized) == 1 && s.Authorized[0] == idA)
	}
	if !found {
		t.Fatalf("after a restart the guarded service is %+v", svcs)
	}
	ch = strings.TrimSpace(e.ok("secure-channel", "create", "--from", "n1", "--to", "/node/n2/service/api"))
	if got := e.ok("message", "send", "again", "--from", "n1", "--to", ch+"/service/private"); got != "AGAIN\n" {
		t.Fatalf("guarded service after restart: %q", got)
	}
	e.fails("is not authorised", "secure-channel", "create", "--from", "n1", "--to", "/node/n2/service/api", "--authorized", idA)
	e.ok("secure-channel", "delete", ch, "--at", "n1")
	e.fails("no worker at address", "message", "send", "hello", "--from", "n1", "--to", ch+"/service/uppercase")
}

// TestPortalOverSecureChannelTranscript is the README's recipe: a portal
// through the relay, inside a secure channel from n1 to n3.
func TestPortalOverSecureChannelTranscript(t *testing.T) {
	need(t, "python3", "curl")
	e := newEnv(t)
	n2Addr := freeAddr(t)
	e.ok("node", "create", "n2", "--tcp-listener-address="+n2Addr)
	e.ok("node", "create", "n3")
	e.ok("service", "start", "hop", "--at", "n3")
	out := e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "/node/n3")
	if !strings.Contains(out, "through secure channel /worker/") {
		t.Fatalf("relay create printed %q; want the secure channel it registered through", out)
	}
	e.ok("node", "create", "n1")
	w := strings.TrimSpace(e.ok("tcp-connection", "create", "--from", "n1", "--to", n2Addr))
	var n3id struct{ Identifier string }
	e.json(&n3id, "identity", "show", "n3")
	// The name belongs to n3's identity: n1 cannot take it, through its own
	// secure channel or without one.
	e.fails("owned by identity "+n3id.Identifier, "relay", "create", "n3", "--at", "/node/n2", "--to", "n1")
	e.fails("without a secure channel", "relay", "create", "n3", "--at", "/node/n2", "--to", "n1", "--insecure")
	ch := strings.TrimSpace(e.ok("secure-channel", "create", "--from", "n1", "--to", w+"/service/forward_to_n3/service/api", "--authorized", n3id.Identifier))
	target := httpServer(t)
	e.ok("tcp-outlet", "create", "--at", "n3", "--from", "/service/outlet", "--to", target)
	inlet := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", ch+"/service/hop/service/outlet")
	out, err := curlHead(inlet)
	if err != nil || !headOK(out) {
		t.Fatalf("curl --head %s: %v\n%s", inlet, err, out)
	}
	// n3 runs two channels: the responder of n1's, which carried the
	// request, and the one its relay registration goes through, to n2
	// (relay create uses a secure channel unless --insecure).
	var n1id, n2id struct{ Identifier string }
	e.json(&n1id, "identity", "show", "n1")
	e.json(&n2id, "identity", "show", "n2")
	var chs struct {
		Channels []struct {
			Address        string
			Role           string
			PeerIdentifier string `json:"peer_identifier"`
			Open           bool
			Stats          struct{ Delivered uint64 }
		}
	}
	e.json(&chs, "secure-channel", "list", "--at", "n3")
	roles := map[string]string{}
	for _, c := range chs.Channels {
		roles[c.Role] = c.PeerIdentifier
		if c.Role == "initiator" {
			e.fails("belongs to relay n3", "secure-channel", "delete", c.Address, "--at", "n3")
		}
		if c.Role == "responder" && c.Stats.Delivered == 0 {
			t.Fatalf("n1's channel delivered nothing at n3: %+v", chs)
		}
	}
	if len(chs.Channels) != 2 || roles["responder"] != n1id.Identifier || roles["initiator"] != n2id.Identifier {
		t.Fatalf("n3's channels after the request: %+v; want n1's (responder) and the relay registration's to n2 (initiator)", chs)
	}
	// The relay node's forwarder belongs to n3's identity.
	var rs struct {
		Forwarders []struct {
			Name     string
			Identity string
		}
	}
	e.json(&rs, "relay", "list", "--at", "n2")
	if len(rs.Forwarders) != 1 || rs.Forwarders[0].Identity != n3id.Identifier {
		t.Fatalf("n2's forwarders: %+v; want forward_to_n3 owned by n3's identity %s", rs, n3id.Identifier)
	}
}

// TestSecureChannelKeptAndRestored: a channel made with secure-channel
// create keeps its address while the far node restarts (it is opened
// again) and while its own node restarts (it is saved and restored); once
// deleted it is forgotten for good.
func TestSecureChannelKeptAndRestored(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "n1")
	e.ok("node", "create", "n2")
	ch := strings.TrimSpace(e.ok("secure-channel", "create", "--from", "n1", "--to", "/node/n2/service/api"))
	through := func(what string) {
		t.Helper()
		eventually(t, 60*time.Second, what, func() bool {
			r := e.run("message", "send", "hi", "--from", "n1", "--to", ch+"/service/uppercase", "--timeout", "2s")
			return r.code == 0 && r.stdout == "HI\n"
		})
	}
	through("a message through the channel")
	type channel struct {
		Address string
		Role    string
		Kept    bool
		Opens   uint64
	}
	mine := func() []channel {
		var v struct{ Channels []channel }
		e.json(&v, "secure-channel", "list", "--at", "n1")
		return v.Channels
	}

	e.ok("node", "stop", "n2")
	e.ok("node", "start", "n2")
	through("a message through the same channel after n2 restarted")
	if chs := mine(); len(chs) != 1 || chs[0].Address != ch || !chs[0].Kept || chs[0].Opens < 2 {
		t.Fatalf("n1's channels after n2 restarted: %+v", chs)
	}

	e.ok("node", "stop", "n1")
	e.ok("node", "start", "n1")
	through("a message through the same channel after n1 restarted")
	if chs := mine(); len(chs) != 1 || chs[0].Address != ch {
		t.Fatalf("n1's channels after n1 restarted: %+v", chs)
	}

	e.ok("secure-channel", "delete", ch, "--at", "n1")
	e.ok("node", "stop", "n1")
	e.ok("node", "start", "n1")
	if chs := mine(); len(chs) != 0 {
		t.Fatalf("a deleted channel came back: %+v", chs)
	}
	e.fails("no worker at address", "message", "send", "hi", "--from", "n1", "--to", ch+"/service/uppercase")
}

// TestRelayRegistrantsListed: a relay node restricted to listed identities
// (service start relay --authorized) lets them register and refuses every
// other identity, also after it restarts.
func TestRelayRegistrantsListed(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "n2")
	e.ok("node", "create", "n3")
	e.ok("node", "create", "n1")
	var n3id struct{ Identifier string }
	e.json(&n3id, "identity", "show", "n3")
	e.fails("want \"I\" followed by 40", "service", "start", "relay", "--at", "n2", "--authorized", "nobody")
	// The refused restriction left the relay service running as it was.
	if out := e.ok("service", "list", "--at", "n2"); !strings.Contains(out, "/service/relay") {
		t.Fatalf("n2's services after a refused restriction:\n%s", out)
	}
	e.ok("service", "start", "relay", "--at", "n2", "--authorized", n3id.Identifier)
	check := func(when string) {
		t.Helper()
		e.fails("not allowed to register", "relay", "create", "one", "--at", "/node/n2", "--to", "n1")
		e.fails("only through a secure channel", "relay", "create", "two", "--at", "/node/n2", "--to", "n1", "--insecure")
		var svcs []struct {
			Type       string
			Authorized []string
		}
		e.json(&svcs, "service", "list", "--at", "n2")
		for _, s := range svcs {
			if s.Type == "relay" && (len(s.Authorized) != 1 || s.Authorized[0] != n3id.Identifier) {
				t.Fatalf("%s: n2's relay service admits %v", when, s.Authorized)
			}
		}
	}
	e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "n3")
	check("after the restriction")
	e.ok("relay", "delete", "n3", "--at", "n3")
	e.ok("node", "stop", "n2")
	e.ok("node", "start", "n2")
	check("after n2 restarted")
	e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "n3")
	if got := e.ok("message", "send", "hi", "--from", "n1", "--to", "/node/n2/service/forward_to_n3/service/uppercase"); got != "HI\n" {
		t.Fatalf("through the relay: %q", got)
	}
}
