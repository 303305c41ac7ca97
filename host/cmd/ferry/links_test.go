package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type listenerJSON struct {
	ID          string            `json:"id"`
	Transport   string            `json:"transport"`
	AddressType string            `json:"address_type"`
	Address     string            `json:"address"`
	Allow       []string          `json:"allow"`
	Up          bool              `json:"up"`
	State       string            `json:"state"`
	Default     bool              `json:"default"`
	Properties  map[string]string `json:"properties"`
}

type connectionJSON struct {
	ID        string   `json:"id"`
	Transport string   `json:"transport"`
	Worker    string   `json:"worker"`
	Remote    string   `json:"remote_address"`
	Allow     []string `json:"allow"`
	Accepted  bool     `json:"accepted"`
}

// A transport that is not TCP (the example Unix-socket transport, as a
// third party would ship it) gets listeners and connections from the
// command line; /node/NAME reaches a node through it; it all survives a
// stop and start.
func TestListenerAndConnectionOfAnyTransport(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "u2.sock")
	// u2 listens only on the unix transport.
	out := e.ok("node", "create", "u2", "--listener", "unix:"+sock)
	if !strings.Contains(out, "unix:"+sock) {
		t.Fatalf("node create u2 --listener unix:...: %s", out)
	}
	e.ok("node", "create", "u1")
	var ls []listenerJSON
	e.json(&ls, "listener", "list", "--at", "u2")
	if len(ls) != 1 || ls[0].Transport != "unix" || ls[0].Address != sock || !ls[0].Default || !ls[0].Up || ls[0].State != "UP" {
		t.Fatalf("listener list --at u2: %+v", ls)
	}
	// /node/u2 from u1 resolves to u2's unix listener, the only one.
	if got := strings.TrimSpace(e.ok("message", "send", "hi", "--from", "u1", "--to", "/node/u2/service/uppercase")); got != "HI" {
		t.Fatalf("message over /node/u2 (unix): %q", got)
	}

	// A second listener, only for echo; a connection to it from u1.
	sock2 := filepath.Join(dir, "u2b.sock")
	var l listenerJSON
	e.json(&l, "listener", "create", sock2, "--at", "u2", "--transport", "unix", "--allow", "echo")
	if l.Transport != "unix" || l.Address != sock2 || len(l.Allow) != 1 || l.Allow[0] != "/service/echo" {
		t.Fatalf("listener create: %+v", l)
	}
	out = e.ok("listener", "show", sock2, "--at", "u2")
	for _, w := range []string{"Transport:", "unix", "Allows:", "/service/echo", "Status:", "UP"} {
		if !strings.Contains(out, w) {
			t.Errorf("listener show lacks %q:\n%s", w, out)
		}
	}
	w := strings.TrimSpace(e.ok("connection", "create", "--from", "u1", "--transport", "unix", "--to", sock2))
	if !workerAddr.MatchString(w) {
		t.Fatalf("connection create printed %q; want /worker/<32 hex>", w)
	}
	if got := strings.TrimSpace(e.ok("message", "send", "over", "--from", "u1", "--to", w+"/service/echo")); got != "over" {
		t.Fatalf("message over the unix connection: %q", got)
	}
	// Only echo is allowed over that listener: the refusal comes back at once.
	e.fails("access denied", "message", "send", "x", "--from", "u1", "--to", w+"/service/uppercase", "--timeout", "300ms")
	var cs []connectionJSON
	e.json(&cs, "connection", "list", "--at", "u1")
	// The /node/u2 send above dialled a connection of its own too.
	found := false
	for _, c := range cs {
		found = found || c.Transport == "unix" && c.Worker == w && c.Remote == sock2
	}
	if !found {
		t.Fatalf("connection list --at u1 lacks %s: %+v", w, cs)
	}
	if out := e.ok("connection", "list", "--at", "u1"); !regexp.MustCompile(`unix\s+` + regexp.QuoteMeta(w)).MatchString(out) {
		t.Errorf("connection list text:\n%s", out)
	}
	// The alias lists tcp ones only.
	e.json(&cs, "tcp-connection", "list", "--at", "u1")
	if len(cs) != 0 {
		t.Fatalf("tcp-connection list shows non-tcp connections: %+v", cs)
	}

	// Kept across stop and start: the listener and the connection under
	// its old worker address.
	e.ok("node", "stop", "u2")
	e.ok("node", "stop", "u1")
	e.ok("node", "start", "u2")
	e.ok("node", "start", "u1")
	e.json(&ls, "listener", "list", "--at", "u2")
	if len(ls) != 2 {
		t.Fatalf("after restart, listeners %+v", ls)
	}
	eventually(t, 20e9, "restored unix connection answers", func() bool {
		r := e.run("message", "send", "again", "--from", "u1", "--to", w+"/service/echo", "--timeout", "1s")
		return r.code == 0 && strings.TrimSpace(r.stdout) == "again"
	})

	e.ok("connection", "delete", w, "--at", "u1")
	e.ok("listener", "delete", sock2, "--at", "u2")
	e.ok("node", "stop", "u2")
	e.ok("node", "start", "u2")
	e.json(&ls, "listener", "list", "--at", "u2")
	if len(ls) != 1 || ls[0].Address != sock {
		t.Fatalf("a deleted listener came back at start: %+v", ls)
	}

	e.fails("--transport NAME", "listener", "create", "x", "--at", "u2")
	e.fails("want NAME=VALUE", "listener", "create", "x", "--at", "u2", "--transport", "unix", "--setting", "oops")
	e.fails("TRANSPORT:ADDRESS", "node", "create", "bad", "--listener", "nocolon")
	e.fails("contradicts", "node", "create", "bad", "--listener", "unix:/x", "--no-listener")
}

// node create --no-listener opens no socket: neither the node nor any
// plugin (none is started) has a TCP or UDP socket, and the node still
// sends.
func TestNoListenerOpensNoSocket(t *testing.T) {
	e := newEnv(t)
	out := e.ok("node", "create", "n3", "--no-listener")
	if !regexp.MustCompile(`Listener:\s+-`).MatchString(out) {
		t.Errorf("node create --no-listener printed:\n%s", out)
	}
	var ls []listenerJSON
	e.json(&ls, "listener", "list", "--at", "n3")
	if len(ls) != 0 {
		t.Fatalf("listeners of a --no-listener node: %+v", ls)
	}
	if got := strings.TrimSpace(e.ok("message", "send", "local", "--to", "/node/n3/service/uppercase")); got != "LOCAL" {
		t.Fatalf("local send: %q", got)
	}
	pid := e.nodes()["n3"].Pid
	if kids := childPids(pid, ""); len(kids) != 0 {
		t.Errorf("node n3 started child processes %v; want no plugin at all", kids)
	}
	for _, p := range append([]int{pid}, childPids(pid, "")...) {
		if inet := inetSockets(t, p); len(inet) > 0 {
			t.Errorf("process %d has network sockets: %v", p, inet)
		}
	}
	// It can still dial out.
	e.ok("node", "create", "n1")
	// The check sees sockets where there are some: n1's tcp plugin listens.
	var seen []string
	for _, p := range childPids(e.nodes()["n1"].Pid, "") {
		seen = append(seen, inetSockets(t, p)...)
	}
	if len(seen) == 0 {
		t.Fatal("the socket check finds no socket in n1's tcp plugin, which listens")
	}
	if got := strings.TrimSpace(e.ok("message", "send", "out", "--from", "n3", "--to", "/node/n1/service/echo")); got != "out" {
		t.Fatalf("send from the --no-listener node: %q", got)
	}
	// And stays listener-less across a restart.
	e.ok("node", "stop", "n3")
	e.ok("node", "start", "n3")
	if l := e.nodes()["n3"].Listeners; len(l) != 0 {
		t.Fatalf("after restart n3 listens: %+v", l)
	}
}

// inetSockets lists the TCP and UDP sockets (any state) process pid holds,
// as "proto local-address": its fds' socket inodes looked up in
// /proc/PID/net/{tcp,tcp6,udp,udp6}.
func inetSockets(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatalf("read fds of %d: %v", pid, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/" + proto)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 9 && inodes[fs[9]] {
				out = append(out, proto+" "+fs[1])
			}
		}
		f.Close()
	}
	return out
}

// A node started from a topology file is the same kind of node as one the
// command made: a change made with the command (a service, a listener, a
// connection) is kept across node stop and start; deleting what the file
// declares is refused with the reason.
func TestCommandChangesToTopologyNodeLast(t *testing.T) {
	e := newEnv(t)
	bridge, _ := filepath.Abs("../../../configs/bridge.hcl")
	e.ok("node", "create", "n3", "--config", bridge, "--var", "n3_port=0")
	e.ok("service", "start", "hop", "--at", "n3", "--address", "hop2")
	sock := filepath.Join(t.TempDir(), "n3.sock")
	e.ok("listener", "create", sock, "--at", "n3", "--transport", "unix", "--allow", "echo")
	e.ok("node", "create", "c1", "--no-listener")

	e.fails("declared in "+bridge, "listener", "delete", "public", "--at", "n3")
	var ls []listenerJSON
	e.json(&ls, "listener", "list", "--at", "n3")
	var public string
	for _, l := range ls {
		if l.Transport == "tcp" {
			public = l.ID
		}
	}
	e.fails("declared in "+bridge, "listener", "delete", public, "--at", "n3")

	e.ok("node", "stop", "n3")
	e.ok("node", "start", "n3")
	var svcs []struct{ Type, Address string }
	e.json(&svcs, "service", "list", "--at", "n3")
	hop2 := false
	for _, s := range svcs {
		hop2 = hop2 || s.Address == "/service/hop2"
	}
	if !hop2 {
		t.Errorf("service hop2 started with the command is gone after restart: %+v", svcs)
	}
	e.json(&ls, "listener", "list", "--at", "n3")
	unix := false
	for _, l := range ls {
		unix = unix || l.Transport == "unix" && l.Address == sock
	}
	if len(ls) != 2 || !unix {
		t.Errorf("after restart n3's listeners are %+v, want the file's tcp one and the unix one", ls)
	}
	// /node/n3 finds the restarted node (its tcp port changed: port 0).
	if got := strings.TrimSpace(e.ok("message", "send", "x", "--from", "c1", "--to", "/node/n3/service/echo")); got != "x" {
		t.Errorf("send to the restarted n3: %q", got)
	}
}

// A node whose transport plugin died and cannot be restarted says DEGRADED
// with the reason in node list, node show and JSON, instead of UP.
func TestDegradedWhilePluginDown(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(pluginDir, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tcp"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	e.ok("node", "create", "d1", "--plugin-dir", dir)
	pid := e.nodes()["d1"].Pid
	kids := childPids(pid, "tcp")
	if len(kids) != 1 {
		t.Fatalf("tcp plugin processes of d1: %v", kids)
	}
	// The plugin cannot come back: its binary is now broken.
	if err := os.WriteFile(filepath.Join(dir, "tcp.new"), []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "tcp.new"), filepath.Join(dir, "tcp")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(kids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "node list says DEGRADED", func() bool {
		return e.nodes()["d1"].Status == "DEGRADED"
	})
	out := e.ok("node", "list")
	if !regexp.MustCompile(`(?m)^d1\s+DEGRADED\s+\d+\s+.*plugin tcp is`).MatchString(out) {
		t.Errorf("node list:\n%s", out)
	}
	out = e.ok("node", "show", "d1")
	if !regexp.MustCompile(`Status:\s+DEGRADED`).MatchString(out) || !strings.Contains(out, "plugin tcp is") {
		t.Errorf("node show:\n%s", out)
	}
}

// A topology file uses a transport found in the plugin directory without a
// plugin block: listeners and connections of it, /node/NAME through it.
// A route hop no installed plugin serves is refused before anything
// starts, with file:line:col.
func TestTopologyAnyTransportWithoutPluginBlock(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "unix.hcl")
	src := `node "v2" {
  transport "sock" {
    plugin = "unix"
    listen = "` + filepath.Join(dir, "v2.sock") + `"
    allow  = ["echo", "uppercase"]
  }
  service "echo" {}
  service "uppercase" {}
}

node "v1" {
  connection "to_v2" {
    plugin = "unix"
    to     = node.v2.transport.sock
  }
}
`
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	e.ok("validate", file)
	out := e.ok("up", file)
	if !strings.Contains(out, "unix:"+filepath.Join(dir, "v2.sock")) {
		t.Errorf("up lists no unix listener:\n%s", out)
	}
	defer e.ok("down", file)
	if got := strings.TrimSpace(e.ok("message", "send", "hi", "--from", "v1", "--to", "/node/v2/service/uppercase")); got != "HI" {
		t.Fatalf("/node/v2 over unix: %q", got)
	}
	var cs []connectionJSON
	e.json(&cs, "connection", "list", "--at", "v1")
	if len(cs) == 0 || cs[0].Transport != "unix" {
		t.Fatalf("v1's connections: %+v", cs)
	}
	if got := strings.TrimSpace(e.ok("message", "send", "yo", "--from", "v1", "--to", cs[0].Worker+"/service/echo")); got != "yo" {
		t.Fatalf("over the declared connection: %q", got)
	}

	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("node \"b\" {\n  service \"hop\" {}\n  inlet \"i\" {\n    listen = \"127.0.0.1:0\"\n    to     = [\"/servce/outlet\"]\n  }\n}\n"), 0o600)
	r := e.run("validate", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "bad.hcl line 5") || !strings.Contains(r.stderr, `no installed plugin serves /servce/`) || !strings.Contains(r.stderr, `Did you mean "service"?`) {
		t.Fatalf("validate /servce/: exit %d\n%s", r.code, r.stderr)
	}
	var v struct {
		Diagnostics []struct {
			Line, Column int
			File         string
		}
	}
	r = e.run("validate", bad, "-o", "json")
	if json.Unmarshal([]byte(r.stdout), &v) != nil || len(v.Diagnostics) != 1 || v.Diagnostics[0].Line != 5 || v.Diagnostics[0].Column != 15 {
		t.Fatalf("validate -o json: %s", r.stdout)
	}
	r = e.run("up", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "/servce/") {
		t.Fatalf("up of a file with an unserved route type: exit %d\n%s", r.code, r.stderr)
	}
	if n := e.nodes(); len(n) != 2 {
		t.Fatalf("up of a bad file started nodes: %v", n)
	}
}
