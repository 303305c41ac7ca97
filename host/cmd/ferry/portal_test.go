package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freeAddr returns a loopback address with a port nothing listens on now
// (listen on :0, close), for the places the transcript has fixed ports.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// need skips when a real client or server the test drives is missing
// (.ci/run installs them).
func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (.ci/run installs it)", c)
		}
	}
}

// httpServer starts `python3 -m http.server --bind 127.0.0.1 PORT` and
// waits until it accepts connections; it is stopped when the test ends.
func httpServer(t *testing.T) string {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command("python3", "-m", "http.server", "--bind", "127.0.0.1", port(addr))
	cmd.Dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cmd.Dir, "index.html"), []byte("<p>behind n3</p>\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("python3 http.server (pid %d) did not exit", cmd.Process.Pid)
		}
	})
	eventually(t, 20*time.Second, "python3 http.server listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// curlHead runs `curl --head ADDR` and returns its output and error.
func curlHead(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "curl", "--silent", "--show-error", "--max-time", "10", "--head", addr)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = errors.New(strings.TrimSpace(errb.String()) + ": " + err.Error())
	}
	return out.String(), err
}

func headOK(out string) bool { return strings.HasPrefix(out, "HTTP/1.0 200 OK") }

// eventuallyCurl polls curl --head until it answers 200 OK.
func eventuallyCurl(t *testing.T, d time.Duration, what, addr string) {
	t.Helper()
	var last string
	deadline := time.Now().Add(d)
	for {
		out, err := curlHead(addr)
		if err == nil && headOK(out) {
			return
		}
		last = out
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: curl --head %s did not answer 200 OK within %s; last: %s", what, addr, d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// childPids returns the pids of parent's child processes running exe (any
// executable if exe is empty).
func childPids(parent int, exe string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 2 || f[0] == "Z" || f[1] != strconv.Itoa(parent) {
			continue
		}
		if p, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe")); exe == "" || err == nil && filepath.Base(p) == exe {
			out = append(out, pid)
		}
	}
	return out
}

type relayJSON struct {
	Registrations []struct {
		Name            string `json:"name"`
		State           string `json:"state"`
		LastError       string `json:"last_error"`
		Reregistrations uint64 `json:"reregistrations"`
	} `json:"registrations"`
	Forwarders []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"forwarders"`
}

type portalJSON struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	LastError      string `json:"last_error"`
	TotalSessions  int64  `json:"total_sessions"`
	ActiveSessions int64  `json:"active_sessions"`
	BytesOut       uint64 `json:"bytes_out"`
	BytesIn        uint64 `json:"bytes_in"`
}

// TestRelayPortalTranscript runs issue 5's transcript against the built
// binary with a real python3 http.server and curl, then its faults: the
// relay node killed and started again, the portal plugins killed, n3
// restarted from its saved state.
func TestRelayPortalTranscript(t *testing.T) {
	t.Parallel() // its own home and processes; mostly waiting out timeouts and restarts
	need(t, "python3", "curl")
	e := newEnv(t)
	n2Addr := freeAddr(t)

	e.ok("node", "create", "n2", "--tcp-listener-address="+n2Addr)
	e.ok("node", "create", "n3")
	e.ok("service", "start", "hop", "--at", "n3")
	out := e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "/node/n3")
	if !strings.Contains(out, "messages to /node/n2/service/forward_to_n3 now reach node n3") {
		t.Fatalf("relay create printed %q", out)
	}
	e.fails(`already registered`, "relay", "create", "n3", "--at", "/node/n2", "--to", "n3")
	e.fails(`node "n9" does not exist`, "relay", "create", "x", "--at", "/node/n2", "--to", "n9")
	e.ok("node", "create", "n1")
	w := strings.TrimSpace(e.ok("tcp-connection", "create", "--from", "n1", "--to", n2Addr))
	if !workerAddr.MatchString(w) {
		t.Fatalf("tcp-connection create printed %q; want a worker address", w)
	}
	if got := strings.TrimSpace(e.ok("message", "send", "hello", "--from", "n1", "--to", w+"/service/forward_to_n3/service/uppercase")); got != "HELLO" {
		t.Fatalf("message through the relay: %q, want HELLO", got)
	}

	target := httpServer(t)
	out = e.ok("tcp-outlet", "create", "--at", "n3", "--from", "/service/outlet", "--to", target)
	if !strings.Contains(out, "/service/outlet") {
		t.Fatalf("tcp-outlet create printed %q", out)
	}
	inlet := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", w+"/service/forward_to_n3/service/hop/service/outlet")
	out, err := curlHead(inlet)
	if err != nil || !headOK(out) {
		t.Fatalf("curl --head %s: %v\n%s", inlet, err, out)
	}

	// The outlet is not opened to the network: n3's listener still admits
	// only the network services.
	var n3 struct {
		Listeners []struct {
			Allow []string `json:"allow"`
		} `json:"listeners"`
	}
	e.json(&n3, "node", "show", "n3")
	for _, l := range n3.Listeners {
		if strings.Contains(strings.Join(l.Allow, " "), "outlet") {
			t.Fatalf("n3's listener allows the outlet: %v", l.Allow)
		}
	}

	// Status: both ends of the relay up, counters moved.
	var rs relayJSON
	e.json(&rs, "relay", "list", "--at", "n3")
	if len(rs.Registrations) != 1 || rs.Registrations[0].State != "up" {
		t.Fatalf("relay list --at n3: %+v", rs)
	}
	e.json(&rs, "relay", "list", "--at", "n2")
	if len(rs.Forwarders) != 1 || rs.Forwarders[0].Name != "n3" || rs.Forwarders[0].State != "up" {
		t.Fatalf("relay list --at n2: %+v", rs)
	}
	var ins, outs []portalJSON
	e.json(&ins, "tcp-inlet", "list", "--at", "n1")
	e.json(&outs, "tcp-outlet", "list", "--at", "n3")
	if len(ins) != 1 || ins[0].State != "up" || ins[0].TotalSessions < 1 || ins[0].BytesOut == 0 || ins[0].BytesIn == 0 {
		t.Fatalf("tcp-inlet list: %+v", ins)
	}
	if len(outs) != 1 || outs[0].TotalSessions < 1 || outs[0].BytesIn != ins[0].BytesOut {
		t.Fatalf("tcp-outlet list: %+v (inlet %+v)", outs, ins)
	}
	show := e.ok("node", "show", "n1")
	for _, want := range []string{"TCP inlets:", inlet, "sessions", "bytes out"} {
		if !strings.Contains(show, want) {
			t.Fatalf("node show n1 lacks %q:\n%s", want, show)
		}
	}
	show = e.ok("node", "show", "n3")
	for _, want := range []string{"Relays:", "TCP outlets:", target} {
		if !strings.Contains(show, want) {
			t.Fatalf("node show n3 lacks %q:\n%s", want, show)
		}
	}
	e.ok("tcp-inlet", "show", inlet, "--at", "n1")
	e.ok("tcp-outlet", "show", "/service/outlet", "--at", "n3")

	// Fault: the relay node is killed and started again. n1 and n3 are not
	// touched: n1 re-dials, n3 re-registers, new connections work again.
	pid := e.nodes()["n2"].Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "n2 down", func() bool { return e.nodes()["n2"].Status == "DOWN" })
	e.ok("node", "start", "n2")
	eventuallyCurl(t, 60*time.Second, "after n2 was killed and started again", inlet)
	e.json(&rs, "relay", "list", "--at", "n3")
	if len(rs.Registrations) != 1 || rs.Registrations[0].Reregistrations < 1 {
		t.Fatalf("after n2's restart n3 should have registered again: %+v", rs)
	}

	// Fault: the portal plugin of each end is killed; it is started again
	// and new sessions work.
	for _, name := range []string{"n1", "n3"} {
		pid := e.nodes()[name].Pid
		plugins := childPids(pid, "portal-tcp")
		if len(plugins) != 1 {
			t.Fatalf("node %s (pid %d) runs portal-tcp plugins %v; want one", name, pid, plugins)
		}
		syscall.Kill(plugins[0], syscall.SIGKILL)
		eventuallyCurl(t, 30*time.Second, "after "+name+"'s portal plugin was killed", inlet)
		if now := childPids(pid, "portal-tcp"); len(now) != 1 || now[0] == plugins[0] {
			t.Fatalf("node %s: portal plugins %v after killing %d", name, now, plugins[0])
		}
	}

	// n3 stopped and started: its relay and outlet come back from its
	// saved state, and n1 needs nothing.
	e.ok("node", "stop", "n3")
	e.ok("node", "start", "n3")
	eventuallyCurl(t, 30*time.Second, "after n3 was restarted", inlet)

	// n1 stopped and started: its connection comes back at the same worker
	// id, so the restored inlet's route still leads to n3.
	e.ok("node", "stop", "n1")
	e.ok("node", "start", "n1")
	if out := e.ok("tcp-connection", "list", "--at", "n1"); !strings.Contains(out, w) {
		t.Fatalf("after n1 restarted, its connections do not include %s:\n%s", w, out)
	}
	eventuallyCurl(t, 30*time.Second, "after n1 was restarted", inlet)

	// Deleting on both ends.
	e.ok("tcp-inlet", "delete", inlet, "--at", "n1")
	if _, err := curlHead(inlet); err == nil {
		t.Fatalf("curl reached a deleted inlet")
	}
	e.ok("relay", "delete", "n3", "--at", "n3")
	e.json(&rs, "relay", "list", "--at", "n3")
	if len(rs.Registrations) != 0 {
		t.Fatalf("relay still listed after delete: %+v", rs)
	}
	eventually(t, 10*time.Second, "forwarder gone from n2", func() bool {
		var rs relayJSON
		e.json(&rs, "relay", "list", "--at", "n2")
		return len(rs.Forwarders) == 0
	})
	e.ok("tcp-outlet", "delete", "/service/outlet", "--at", "n3")
	e.fails(`has no tcp-outlet`, "tcp-outlet", "show", "/service/outlet", "--at", "n3")
}

// TestOutletTargetRefuses: a client of an inlet whose outlet cannot reach
// its target is closed promptly, and the outlet says why.
func TestOutletTargetRefuses(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "n1")
	closed := freeAddr(t) // nothing listens there
	e.ok("tcp-outlet", "create", "--at", "n1", "--to", closed)
	inlet := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", "/service/outlet")
	// A failed session resets the client's connection (RST), which can
	// come so soon that it reaches the client during connect.
	c, err := net.DialTimeout("tcp", inlet, 5*time.Second)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if err == nil {
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		// Promptly means well before the inlet's open timeout would
		// matter: the refusal comes back as a reset of the session.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("client still open after 10s (read %d bytes); want it closed", n)
		}
		if n != 0 {
			t.Fatalf("read %d bytes from a portal whose target refuses", n)
		}
	}
	eventually(t, 10*time.Second, "outlet reports the refused dial", func() bool {
		var p portalJSON
		e.json(&p, "tcp-outlet", "show", "/service/outlet", "--at", "n1")
		return strings.Contains(p.LastError, "refused")
	})
}

// TestUpRelayPortal: configs/relay-portal.hcl started with ferry up serves
// curl through the relay, and ferry down leaves nothing running.
func TestUpRelayPortal(t *testing.T) {
	need(t, "python3", "curl")
	e := newEnv(t)
	target := httpServer(t)
	inlet, n2 := freeAddr(t), freeAddr(t)
	file, err := filepath.Abs("../../../configs/relay-portal.hcl")
	if err != nil {
		t.Fatal(err)
	}
	e.ok("up", file, "--var", "n2_port="+port(n2), "--var", "inlet_address="+inlet, "--var", "target="+target)
	eventuallyCurl(t, 30*time.Second, "ferry up relay-portal.hcl", inlet)
	var rs relayJSON
	e.json(&rs, "relay", "list", "--at", "n3")
	if len(rs.Registrations) != 1 || rs.Registrations[0].State != "up" {
		t.Fatalf("relay list --at n3: %+v", rs)
	}
	e.ok("down", file)
	eventually(t, 10*time.Second, "no process left after ferry down", func() bool { return len(e.ferryProcesses()) == 0 })
}
