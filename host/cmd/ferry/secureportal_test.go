package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecurePortalThroughRelay: tcp-inlet create --secure opens a secure
// channel to the outlet's node (through the relay) by itself; an outlet
// created with --secure serves it and refuses a plain inlet; deleting the
// inlet closes its channel.
func TestSecurePortalThroughRelay(t *testing.T) {
	need(t, "curl")
	e := newEnv(t)
	n2Addr := freeAddr(t)
	e.ok("node", "create", "n2", "--tcp-listener-address="+n2Addr)
	e.ok("node", "create", "n3")
	e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "/node/n3")
	e.ok("node", "create", "n1")
	w := strings.TrimSpace(e.ok("tcp-connection", "create", "--from", "n1", "--to", n2Addr))
	target := goHTTPServer(t, "behind n3, securely\n")
	e.ok("tcp-outlet", "create", "--at", "n3", "--from", "/service/outlet", "--to", target, "--secure")

	// A plain inlet reaches the outlet's node but not the outlet.
	plain := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", plain, "--to", w+"/service/forward_to_n3/service/outlet")
	out, err := curlHead(plain)
	if err == nil && strings.Contains(out, "200 OK") {
		t.Fatalf("a plain inlet reached the secure outlet:\n%s", out)
	}
	t.Logf("curl through the plain inlet: %v", err)
	eventually(t, 30*time.Second, "the plain inlet saying why", func() bool {
		return strings.Contains(e.ok("tcp-inlet", "list", "--at", "n1"), "accepts sessions only through a secure channel")
	})

	inlet := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", w+"/service/forward_to_n3/service/outlet", "--secure")
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Get("http://" + inlet + "/")
	if err != nil {
		t.Fatalf("GET through the secure inlet: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(page) != "behind n3, securely\n" {
		t.Fatalf("GET through the secure inlet: %q", page)
	}
	body := make([]byte, 8<<20)
	rand.Read(body)
	sum := sha256.Sum256(body)
	resp, err = client.Post("http://"+inlet+"/echo", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST 8 MiB through the secure inlet: %v", err)
	}
	back, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Header.Get("X-Sha256") != hex.EncodeToString(sum[:]) || !bytes.Equal(back, body) {
		t.Fatalf("POST 8 MiB: %v; server saw sha %s, want %x; %d bytes back", err, resp.Header.Get("X-Sha256"), sum, len(back))
	}

	type channels struct {
		Channels []struct {
			Address string
			Role    string
			Stats   struct{ Delivered uint64 }
		}
	}
	var n3chs, n1chs channels
	// n3: the responder of the inlet's channel and the initiator of its
	// relay registration's channel to n2.
	e.json(&n3chs, "secure-channel", "list", "--at", "n3")
	responders := 0
	for _, c := range n3chs.Channels {
		if c.Role == "responder" {
			responders++
			if c.Stats.Delivered == 0 {
				t.Fatalf("n3's responder delivered nothing: %+v", n3chs)
			}
		}
	}
	if len(n3chs.Channels) != 2 || responders != 1 {
		t.Fatalf("n3's channels: %+v", n3chs)
	}
	e.json(&n1chs, "secure-channel", "list", "--at", "n1")
	if len(n1chs.Channels) != 1 || n1chs.Channels[0].Role != "initiator" {
		t.Fatalf("n1's channels: %+v", n1chs)
	}
	var outlets []struct {
		TotalSessions int64 `json:"total_sessions"`
	}
	e.json(&outlets, "tcp-outlet", "list", "--at", "n3")
	// The client keeps its one connection alive: one session, the plain
	// inlet's never reached the outlet.
	if len(outlets) != 1 || outlets[0].TotalSessions != 1 {
		t.Fatalf("n3's outlet: %+v (want the secure session only)", outlets)
	}

	e.ok("tcp-inlet", "delete", inlet, "--at", "n1")
	e.json(&n1chs, "secure-channel", "list", "--at", "n1")
	if len(n1chs.Channels) != 0 {
		t.Fatalf("n1's channels after the inlet was deleted: %+v", n1chs)
	}
}

// TestSecureInletSurvivesRestarts: a secure inlet's channel is kept. When
// the outlet's node restarts, the inlet's next sessions work again through
// a re-opened channel under the same address, without recreating the inlet;
// when the inlet's own node restarts, the inlet and its channel are
// restored from the node's saved state.
func TestSecureInletSurvivesRestarts(t *testing.T) {
	t.Parallel() // its own home and processes; mostly waiting out timeouts and restarts
	e := newEnv(t)
	n2Addr := freeAddr(t)
	e.ok("node", "create", "n2", "--tcp-listener-address="+n2Addr)
	e.ok("node", "create", "n3")
	e.ok("relay", "create", "n3", "--at", "/node/n2", "--to", "/node/n3")
	e.ok("node", "create", "n1")
	w := strings.TrimSpace(e.ok("tcp-connection", "create", "--from", "n1", "--to", n2Addr))
	target := goHTTPServer(t, "behind n3\n")
	e.ok("tcp-outlet", "create", "--at", "n3", "--from", "/service/outlet", "--to", target, "--secure")
	inlet := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", w+"/service/forward_to_n3/service/outlet", "--secure")

	// Every GET is a new connection, so a new portal session.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (string, error) {
		resp, err := client.Get("http://" + inlet + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		page, err := io.ReadAll(resp.Body)
		return string(page), err
	}
	works := func(what string) {
		t.Helper()
		var last string
		eventually(t, 90*time.Second, what+" (last: "+last+")", func() bool {
			page, err := get()
			if err != nil {
				last = err.Error()
			}
			return err == nil && page == "behind n3\n"
		})
	}
	type channel struct {
		Address string
		Role    string
		Open    bool
		Kept    bool
		Opens   uint64
	}
	n1Channel := func() channel {
		t.Helper()
		var chs struct{ Channels []channel }
		e.json(&chs, "secure-channel", "list", "--at", "n1")
		if len(chs.Channels) != 1 || chs.Channels[0].Role != "initiator" || !chs.Channels[0].Kept {
			t.Fatalf("n1's channels: %+v; want the inlet's, kept", chs)
		}
		return chs.Channels[0]
	}
	if page, err := get(); err != nil || page != "behind n3\n" {
		t.Fatalf("GET through the secure inlet: %q, %v", page, err)
	}
	first := n1Channel()

	// The outlet's node restarts: new sessions work again, through the
	// same channel address, opened once more.
	e.ok("node", "stop", "n3")
	e.ok("node", "start", "n3")
	works("a GET through the inlet after n3 restarted")
	again := n1Channel()
	if again.Address != first.Address || again.Opens < 2 || !again.Open {
		t.Fatalf("n1's channel after n3 restarted: %+v (before: %+v); want the same address opened again", again, first)
	}

	// Killed instead: nobody tells n1's channel; the frames it sends are
	// reported undelivered, its probe goes unanswered, and it re-opens.
	if err := syscall.Kill(e.nodes()["n3"].Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "n3 down", func() bool { return e.nodes()["n3"].Status == "DOWN" })
	e.ok("node", "start", "n3")
	works("a GET through the inlet after n3 was killed and started")
	if ch := n1Channel(); ch.Address != first.Address || ch.Opens < 3 {
		t.Fatalf("n1's channel after n3 was killed: %+v", ch)
	}

	// The inlet's node restarts: the inlet comes back with its channel.
	e.ok("node", "stop", "n1")
	e.ok("node", "start", "n1")
	works("a GET through the inlet after n1 restarted")
	if ch := n1Channel(); !ch.Open {
		t.Fatalf("n1's channel after n1 restarted: %+v", ch)
	}
}

// TestUpUDPTCPKafkaSecure is the mixed-protocol path (device ─udp─► gateway
// ─tcp─► bridge ─kafka─► site) with its portal inside a secure channel from
// the device to the site: configs/udp-tcp-kafka.hcl with secure = true in
// the inlet and the outlet blocks, and the site's listener admitting its
// secure channel listener instead of the outlet.
func TestUpUDPTCPKafkaSecure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four nodes and their plugins")
	}
	src, err := os.ReadFile("../../../configs/udp-tcp-kafka.hcl")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	for _, r := range [][2]string{
		{`    allow  = ["outlet"]` + "\n", `    allow  = ["api"]` + "\n"},
		{"    from = \"/service/outlet\"\n", "    from = \"/service/outlet\"\n    secure = true\n"},
		{"    listen = var.inlet_address\n", "    listen = var.inlet_address\n    secure = true\n"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("configs/udp-tcp-kafka.hcl no longer contains %q; update this test", r[0])
		}
		s = strings.Replace(s, r[0], r[1], 1)
	}
	file := filepath.Join(t.TempDir(), "udp-tcp-kafka-secure.hcl")
	if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	testMixedPath(t, file, []string{"udp", "kafka"}, "--var", "gateway_port=0")
}
