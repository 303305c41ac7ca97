package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/clitest"

	"github.com/ferryhq/ferry/plugins/quic/quictransport"
)

// buildCLI builds ferry and the plugins this test drives.
func buildCLI(t *testing.T) *clitest.Env {
	return clitest.New(t, map[string]string{
		"quic": ".", "tcp": "github.com/ferryhq/ferry/plugins/tcp",
		// For the portal over a QUIC hop.
		"portal-tcp": "github.com/ferryhq/ferry/plugins/portal-tcp",
	})
}

type cliListener struct {
	ID         string            `json:"id"`
	Transport  string            `json:"transport"`
	Address    string            `json:"address"`
	Up         bool              `json:"up"`
	Properties map[string]string `json:"properties"`
}

// TestCLI drives the ferry command as a user would: a QUIC listener on n2
// whose fingerprint `listener show` prints, a connection from n1 pinning it
// with the pin setting, a message through the connection's worker, a
// message from n3 pinning through the address, a wrong pin refused, and
// the topology file configs/quic.hcl.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	e := buildCLI(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		e.OK("node", "create", n)
	}
	var l cliListener
	out := e.OK("listener", "create", "127.0.0.1:0", "--at", "n2", "--transport", "quic", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("listener create --output json: %v\n%s", err, out)
	}
	if l.Transport != "quic" || !l.Up || !strings.HasPrefix(l.Address, "127.0.0.1:") || strings.HasSuffix(l.Address, ":0") {
		t.Fatalf("listener create: %+v", l)
	}
	// The fingerprint, as a user reads it.
	out = e.OK("listener", "show", l.Address, "--at", "n2")
	fp := regexp.MustCompile(`fingerprint:\s+(sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if fp == nil {
		t.Fatalf("listener show prints no fingerprint:\n%s", out)
	}
	pin := fp[1]
	if _, err := quictransport.ParsePin(pin); err != nil {
		t.Fatal(err)
	}

	out = e.OK("connection", "create", "--from", "n1", "--transport", "quic", "--to", l.Address, "--setting", "pin="+pin)
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.OK("message", "send", "hello", "--from", "n1", "--to", w+"/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send via %s printed %q, want HELLO", w, out)
	}
	// n1's quic transport has the pin, so a route naming the address works.
	out = e.OK("message", "send", "direct", "--from", "n1", "--to", "/quic/"+l.Address+"/service/uppercase")
	if strings.TrimSpace(out) != "DIRECT" {
		t.Fatalf("message send over /quic/%s printed %q", l.Address, out)
	}
	// n3 has no pin setting: the address carries it.
	out = e.OK("message", "send", "pinned in the address", "--from", "n3", "--to", "/quic/"+l.Address+"#"+pin+"/service/uppercase")
	if strings.TrimSpace(out) != "PINNED IN THE ADDRESS" {
		t.Fatalf("message send with the pin in the address printed %q", out)
	}
	// A wrong pin is refused and says so.
	wrong := "sha256:" + strings.Repeat("0", 64)
	o, errs, err := e.Run("message", "send", "nope", "--from", "n3", "--to", "/quic/"+l.Address+"#"+wrong+"/service/uppercase", "--timeout", "10s")
	if err == nil {
		t.Fatalf("a message over a wrong pin was answered: %q", o)
	}
	if !strings.Contains(errs, pin) || !strings.Contains(errs, wrong) || !strings.Contains(errs, "certificate does not match") {
		t.Errorf("the wrong-pin error does not name both fingerprints: %s", errs)
	}
	t.Logf("wrong pin: %s", strings.TrimSpace(errs))
	out = e.OK("node", "show", "n2")
	if !strings.Contains(out, "quic") {
		t.Errorf("node show n2 does not list the quic listener:\n%s", out)
	}
	e.OK("node", "delete", "--all")

	// The topology file, on a free port, with a certificate made here.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "n2-cert.pem"), filepath.Join(dir, "n2-key.pem")
	filePin, err := quictransport.WriteCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	file, err := filepath.Abs("../../configs/quic.hcl")
	if err != nil {
		t.Fatal(err)
	}
	vars := []string{"--var", "n2_port=0", "--var", "cert_file=" + certFile, "--var", "key_file=" + keyFile, "--var", "pin=" + filePin}
	e.OK("validate", file)
	e.OK(append([]string{"up", file}, vars...)...)
	t.Cleanup(func() { e.Run(append([]string{"down", file}, vars...)...) })
	var ls []cliListener
	out = e.OK("listener", "list", "--at", "n2", "--output", "json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("listener list --output json: %v\n%s", err, out)
	}
	addr := ""
	for _, x := range ls {
		if x.Transport == "quic" {
			addr = x.Address
		}
	}
	if addr == "" {
		t.Fatalf("configs/quic.hcl: n2 has no quic listener: %s", out)
	}
	out = e.OK("message", "send", "from the file", "--from", "n1", "--to", "/quic/"+addr+"/service/uppercase")
	if strings.TrimSpace(out) != "FROM THE FILE" {
		t.Fatalf("message over configs/quic.hcl printed %q", out)
	}
	e.OK(append([]string{"down", file}, vars...)...)
}

// TestPortalOverQUIC carries HTTP through a portal whose hop is QUIC: an
// inlet on n1, a connection from n1 to n2's QUIC listener, an outlet on n2
// to a real HTTP server; a real HTTP client through the inlet.
func TestPortalOverQUIC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	body := strings.Repeat("ferry over quic\n", 20000) // 320 kB, many frames
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")

	e := buildCLI(t)
	e.OK("node", "create", "n1")
	e.OK("node", "create", "n2")
	var l cliListener
	out := e.OK("listener", "create", "127.0.0.1:0", "--at", "n2", "--transport", "quic", "--allow", "outlet", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("listener create --output json: %v\n%s", err, out)
	}
	pin := l.Properties["fingerprint"]
	if pin == "" {
		out = e.OK("listener", "show", l.Address, "--at", "n2", "--output", "json")
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatal(err)
		}
		pin = l.Properties["fingerprint"]
	}
	if pin == "" {
		t.Fatalf("no fingerprint in listener show: %s", out)
	}
	out = e.OK("connection", "create", "--from", "n1", "--transport", "quic", "--to", l.Address+"#"+pin)
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	e.OK("tcp-outlet", "create", "--at", "n2", "--from", "/service/outlet", "--to", target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inlet := ln.Addr().String()
	ln.Close()
	e.OK("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", w+"/service/outlet")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 3; i++ {
		resp, err := client.Get("http://" + inlet + "/")
		if err != nil {
			t.Fatalf("GET through the inlet: %v", err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(got) != body {
			t.Fatalf("GET %d through the inlet: status %d, %d bytes (want %d), %v", i, resp.StatusCode, len(got), len(body), err)
		}
	}
}

// TestRelayOverQUIC is the relay transcript with n3 reaching n2 over QUIC:
// n3 opens no port, dials n2's QUIC listener (pinned in the address) and
// registers forward_to_n3 at n2's relay service; n1 reaches n3 through n2.
func TestRelayOverQUIC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	e := buildCLI(t)
	e.OK("node", "create", "n2")
	e.OK("node", "create", "n3")
	e.OK("service", "start", "hop", "--at", "n3")
	var l cliListener
	out := e.OK("listener", "create", "127.0.0.1:0", "--at", "n2", "--transport", "quic", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("listener create --output json: %v\n%s", err, out)
	}
	out = e.OK("listener", "show", l.Address, "--at", "n2", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	pin := l.Properties["fingerprint"]
	if pin == "" {
		t.Fatalf("no fingerprint in listener show: %s", out)
	}
	out = e.OK("relay", "create", "n3", "--at", "/quic/"+l.Address+"#"+pin, "--to", "/node/n3")
	if !strings.Contains(out, "forward_to_n3") {
		t.Fatalf("relay create printed %q", out)
	}
	e.OK("node", "create", "n1")
	out = e.OK("connection", "create", "--from", "n1", "--transport", "quic", "--to", l.Address+"#"+pin)
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.OK("message", "send", "hello", "--from", "n1", "--to", w+"/service/forward_to_n3/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message through the relay over QUIC printed %q, want HELLO", out)
	}
}
