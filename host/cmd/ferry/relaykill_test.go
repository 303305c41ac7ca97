package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDownloadSurvivesRelayKill9: a download through n1's inlet, n2's relay
// and n3's outlet goes on when n2 is killed with -9 in the middle and
// started again five seconds later. The portal session pauses, n1 re-dials,
// n3 re-registers, the session finds the new path, and the client gets
// every byte once, in order (the SHA-256 matches).
func TestDownloadSurvivesRelayKill9(t *testing.T) {
	t.Parallel() // its own home and processes; mostly waiting out timeouts and restarts
	const size = 64 << 20
	body := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(body); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			body[i+j] = byte(v >> (8 * j))
		}
	}
	want := sha256.Sum256(body)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	e, inlet := relayedPortal(t, ln.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+inlet+"/big", nil)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	// Read a part, then stop reading: the session's window fills and the
	// rest of the body waits at the outlet while the relay is down.
	if _, err := io.CopyN(h, resp.Body, 8<<20); err != nil {
		t.Fatalf("first 8 MiB: %v", err)
	}
	pid := e.nodes()["n2"].Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "n2 down", func() bool { return e.nodes()["n2"].Status == "DOWN" })
	outage := time.NewTimer(5 * time.Second) // the outage the issue names
	<-outage.C
	e.ok("node", "start", "n2")
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("after %d more bytes: %v", n, err)
	}
	if got := h.Sum(nil); n+8<<20 != size || !bytes.Equal(got, want[:]) {
		t.Fatalf("downloaded %d bytes with SHA-256 %x; want %d bytes, %x", n+8<<20, got, size, want)
	}
	var ins []portalJSON
	e.json(&ins, "tcp-inlet", "list", "--at", "n1")
	t.Logf("inlet after the outage: %+v", ins)
}

// relayedPortal runs the relay transcript: n1 (no listener) has a
// connection to n2, n3 (no listener) registers forward_to_n3 at n2 and runs
// an outlet to target, and n1's inlet (its address is returned) carries
// sessions to it. Extra arguments go to tcp-inlet create.
func relayedPortal(t *testing.T, target string, inletArgs ...string) (*env, string) {
	e := newEnv(t)
	n2Addr := freeAddr(t)
	e.ok("node", "create", "n2", "--tcp-listener-address="+n2Addr)
	e.ok("node", "create", "n3", "--no-listener")
	e.ok("service", "start", "hop", "--at", "n3")
	e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "/node/n3")
	e.ok("node", "create", "n1", "--no-listener")
	w := strings.TrimSpace(e.ok("tcp-connection", "create", "--from", "n1", "--to", n2Addr))
	e.ok("tcp-outlet", "create", "--at", "n3", "--from", "/service/outlet", "--to", target)
	inlet := freeAddr(t)
	e.ok(append([]string{"tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", w + "/service/forward_to_n3/service/hop/service/outlet"}, inletArgs...)...)
	return e, inlet
}

// TestSessionTimeoutClosesClient: with the relay node down for longer than
// the inlet's --session-timeout, the client's connection is reset (an
// error, not a short file) and n1's log says why.
func TestSessionTimeoutClosesClient(t *testing.T) {
	t.Parallel() // its own home and processes; mostly waiting out timeouts and restarts
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }() // echo
		}
	}()
	e, inlet := relayedPortal(t, ln.Addr().String(), "--session-timeout", "6s")
	e.fails("session timeout", "tcp-inlet", "create", "--at", "n1", "--from", freeAddr(t), "--to", "/service/outlet", "--session-timeout", "soon")

	c, err := net.Dial("tcp", inlet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// The session's timeout runs from its last progress, which can be the
	// echo's acknowledgement, so the clock starts before the echo (taken
	// after it, the client was once reset 5.996 s later).
	start := time.Now()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through the relay: %q, %v", buf, err)
	}
	if err := syscall.Kill(e.nodes()["n2"].Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("again")) // waits in the session until the timeout
	_, err = c.Read(buf)
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after the session timeout the client read %v; want connection reset", err)
	}
	if took := time.Since(start); took < 6*time.Second {
		t.Fatalf("client closed after %s, before the 6s session timeout", took)
	}
	eventually(t, 10*time.Second, "the reason in n1's log", func() bool {
		return strings.Contains(e.ok("node", "logs", "n1"), "session timeout")
	})
}
