package main

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer accepts TCP connections on a loopback port and echoes them
// until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// echoes dials addr and checks one round trip through it.
func echoes(t *testing.T, addr, msg string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo of %q through %s: %q, %v", msg, addr, got, err)
	}
	return c
}

// refusedClient dials addr and expects the connection closed or reset at
// once, without a byte: the reset may even arrive before the dial returns.
func refusedClient(t *testing.T, addr, what string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		if !strings.Contains(err.Error(), "reset") {
			t.Fatalf("%s: dial %s: %v", what, addr, err)
		}
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("over the cap")) // may fail already: the portal resets it
	n, err := c.Read(make([]byte, 16))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: read %d bytes, %v; want the connection closed or reset at once", what, n, err)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("%s: %v; want EOF or a reset", what, err)
	}
}

type capsPortalJSON struct {
	ID          string `json:"id"`
	MaxSessions int    `json:"max_sessions"`
	Refused     uint64 `json:"refused"`
}

// TestPortalMaxSessions: an inlet created with --max-sessions 2 carries two
// clients and resets the third at once (the client sees the connection
// closed or reset, the node counts and logs it once); the caps are shown,
// saved and restored at node start, and bad values are refused naming the
// flag.
func TestPortalMaxSessions(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "n1")
	target := echoServer(t)
	e.fails("--max-sessions 0: want a number from 1 to 65536", "tcp-outlet", "create", "--at", "n1", "--to", target, "--max-sessions", "0")
	e.ok("tcp-outlet", "create", "--at", "n1", "--to", target, "--max-sessions", "3")
	inlet := freeAddr(t)
	e.fails("--max-sessions -1: want a number from 1 to 65536", "tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", "/service/outlet", "--max-sessions", "-1")
	e.fails("--max-sessions 65537: want a number from 1 to 65536", "tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", "/service/outlet", "--max-sessions", "65537")
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", "/service/outlet", "--max-sessions", "2")

	echoes(t, inlet, "one")
	echoes(t, inlet, "two")
	refusedClient(t, inlet, "third client, over the inlet's cap")

	// The outlet's cap (3) counts sessions from every inlet: a second,
	// uncapped inlet gets one more session, and the next is refused by the
	// outlet and its client closed.
	inlet2 := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet2, "--to", "/service/outlet")
	echoes(t, inlet2, "three")
	refusedClient(t, inlet2, "fourth session, over the outlet's cap")

	var ins, outs []capsPortalJSON
	e.json(&ins, "tcp-inlet", "list", "--at", "n1")
	if len(ins) != 2 || ins[0].ID != inlet && ins[1].ID != inlet {
		t.Fatalf("tcp-inlet list: %+v", ins)
	}
	for _, in := range ins {
		if in.ID == inlet && (in.MaxSessions != 2 || in.Refused != 1) || in.ID == inlet2 && (in.MaxSessions != 1024 || in.Refused != 0) {
			t.Fatalf("tcp-inlet list: %+v; want max_sessions 2 with 1 refused, and the default 1024", ins)
		}
	}
	e.json(&outs, "tcp-outlet", "list", "--at", "n1")
	// An open the inlet sent again before the refusal reached it is
	// refused (and counted) again: the outlet keeps no state for it.
	if len(outs) != 1 || outs[0].MaxSessions != 3 || outs[0].Refused < 1 {
		t.Fatalf("tcp-outlet list: %+v; want max_sessions 3, opens refused", outs)
	}
	e.ok("tcp-inlet", "delete", inlet2, "--at", "n1")
	if out := e.ok("tcp-inlet", "show", inlet, "--at", "n1"); !strings.Contains(out, "Max sessions:  2 (1 refused)") {
		t.Fatalf("tcp-inlet show:\n%s", out)
	}
	if out := e.ok("tcp-inlet", "list", "--at", "n1"); !strings.Contains(out, "MAX") || !strings.Contains(out, "REFUSED") {
		t.Fatalf("tcp-inlet list:\n%s", out)
	}
	const refusal = "client reset: the inlet holds its maximum of sessions"
	eventually(t, 10*time.Second, "the refusal in n1's log", func() bool {
		return strings.Contains(e.ok("node", "logs", "n1"), refusal)
	})
	if got := strings.Count(e.ok("node", "logs", "n1"), refusal); got != 1 {
		t.Fatalf("%d log lines about the refused client; want 1", got)
	}

	// Saved and restored with the node.
	e.ok("node", "stop", "n1")
	e.ok("node", "start", "n1")
	e.json(&ins, "tcp-inlet", "list", "--at", "n1")
	e.json(&outs, "tcp-outlet", "list", "--at", "n1")
	if len(ins) != 1 || ins[0].MaxSessions != 2 || len(outs) != 1 || outs[0].MaxSessions != 3 {
		t.Fatalf("after n1 restarted: inlets %+v, outlets %+v; want max_sessions 2 and 3", ins, outs)
	}
	echoes(t, inlet, "after restart")
}

// TestRelayMaxRegistrations: a relay service started with
// --max-registrations 1 holds one name and refuses a second with a clear
// error to the registrant; the cap is listed, saved and restored.
func TestRelayMaxRegistrations(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "n2")
	e.ok("node", "create", "n1")
	e.fails("--max-registrations 0: want a number from 1 to 65536", "service", "start", "relay", "--at", "n2", "--max-registrations", "0")
	e.fails("--max-registrations applies to the relay service only", "service", "start", "echo", "--at", "n2", "--address", "echo2", "--max-registrations", "3")
	e.ok("service", "start", "relay", "--at", "n2", "--max-registrations", "1")
	check := func(when string) {
		t.Helper()
		var svcs []struct {
			Type             string
			MaxRegistrations int `json:"max_registrations"`
		}
		e.json(&svcs, "service", "list", "--at", "n2")
		found := false
		for _, s := range svcs {
			if s.Type == "relay" {
				found = s.MaxRegistrations == 1
			}
		}
		if !found {
			t.Fatalf("%s: n2's services %+v; want the relay service with max_registrations 1", when, svcs)
		}
		if out := e.ok("service", "list", "--at", "n2"); !strings.Contains(out, "max registrations: 1") {
			t.Fatalf("%s: service list:\n%s", when, out)
		}
		e.ok("relay", "create", "one", "--at", "/node/n2", "--to", "n1")
		e.fails(`relay name "two" refused: the relay service holds its maximum of 1 registrations`, "relay", "create", "two", "--at", "/node/n2", "--to", "n1")
		e.ok("relay", "delete", "one", "--at", "n1")
	}
	check("after service start")
	e.ok("node", "stop", "n2")
	e.ok("node", "start", "n2")
	check("after n2 restarted")
}

// TestCapsFromTopologyFile: max_sessions in inlet and outlet blocks and
// max_registrations in a relay service block reach the running node, and a
// bad value stops `ferry up` naming the attribute at file:line:col.
func TestCapsFromTopologyFile(t *testing.T) {
	e := newEnv(t)
	target := echoServer(t)
	src := `node "c1" {
  service "relay" {
    max_registrations = 7
  }
  outlet "web" {
    to           = "` + target + `"
    max_sessions = 3
  }
  inlet "web" {
    listen       = "127.0.0.1:0"
    to           = "/service/outlet"
    max_sessions = 2
  }
}
`
	dir := t.TempDir()
	file := filepath.Join(dir, "caps.hcl")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte(strings.Replace(src, "max_sessions = 2", "max_sessions = 0", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.run("up", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "bad.hcl line 12") || !strings.Contains(r.stderr, "max_sessions must be a whole number from 1 to 65536; this is 0.") {
		t.Fatalf("up with max_sessions = 0: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	e.ok("up", file)
	defer e.ok("down", file)
	var ins, outs []capsPortalJSON
	e.json(&ins, "tcp-inlet", "list", "--at", "c1")
	e.json(&outs, "tcp-outlet", "list", "--at", "c1")
	if len(ins) != 1 || ins[0].MaxSessions != 2 || len(outs) != 1 || outs[0].MaxSessions != 3 {
		t.Fatalf("inlets %+v, outlets %+v; want max_sessions 2 and 3", ins, outs)
	}
	var svcs []struct {
		Type             string
		MaxRegistrations int `json:"max_registrations"`
	}
	e.json(&svcs, "service", "list", "--at", "c1")
	ok := false
	for _, s := range svcs {
		ok = ok || s.Type == "relay" && s.MaxRegistrations == 7
	}
	if !ok {
		t.Fatalf("c1's services %+v; want the relay service with max_registrations 7", svcs)
	}
	addr := ins[0].ID
	echoes(t, addr, "a")
	echoes(t, addr, "b")
	refusedClient(t, addr, "third client through the file's inlet")
}
