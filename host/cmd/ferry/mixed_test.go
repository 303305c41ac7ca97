package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferryhq/ferry/plugins/serial/nullmodem"
)

// goHTTPServer serves GET / with a fixed page and POST /echo with the
// request body back, its SHA-256 (of what arrived) in X-Sha256. It stops
// when the test ends.
func goHTTPServer(t *testing.T, page string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		w.Header().Set("X-Sha256", hex.EncodeToString(sum[:]))
		w.Write(body)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return l.Addr().String()
}

// kafkaBroker starts kfake in this process on a free loopback port.
func kafkaBroker(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// inletAddress asks the node for the bound address of its only inlet (the
// file lets it listen on port 0).
func (e *env) inletAddress(nodeName string) string {
	e.t.Helper()
	out := e.ok("tcp-inlet", "list", "--at", nodeName)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "127.0.0.1:") {
			return f[0]
		}
	}
	e.t.Fatalf("tcp-inlet list --at %s shows no bound inlet:\n%s", nodeName, out)
	return ""
}

// TestUpUDPTCPKafka brings configs/udp-tcp-kafka.hcl up (device ─udp─►
// gateway ─tcp─► bridge ─kafka─► site ─► HTTP server) against kfake started
// here, fetches the page through the device's inlet, then runs concurrent
// portal sessions each with its own payload and checksum, and brings it
// down leaving no process.
func TestUpUDPTCPKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four nodes and their plugins")
	}
	testMixedPath(t, "udp-tcp-kafka.hcl", []string{"udp", "kafka"}, "--var", "gateway_port=0")
}

// TestUpSerialBridge is the same over configs/serial-bridge.hcl, whose first
// hop is a serial line: here a pair of pseudo-terminals back to back.
func TestUpSerialBridge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four nodes and their plugins")
	}
	nm, err := nullmodem.Open(t.TempDir(), "ttyA", "ttyB")
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { nm.Close() })
	testMixedPath(t, "serial-bridge.hcl", []string{"serial", "kafka"},
		"--var", "device_tty="+nm.Path(0), "--var", "gateway_tty="+nm.Path(1))
}

func testMixedPath(t *testing.T, config string, plugins []string, extraVars ...string) {
	for _, p := range plugins {
		needPlugin(t, p)
	}
	e := newEnv(t)
	const page = "<p>behind the site node</p>\n"
	target := goHTTPServer(t, page)
	brokers := kafkaBroker(t)
	file, err := filepath.Abs("../../../configs/" + config)
	if filepath.IsAbs(config) { // a variant written by the test
		file, err = config, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	vars := append([]string{
		"--var", "brokers=" + brokers,
		"--var", "prefix=ferry-test-",
		"--var", "bridge_port=0",
		"--var", "inlet_address=127.0.0.1:0",
		"--var", "target=" + target,
	}, extraVars...)
	e.ok(append([]string{"validate", file}, vars...)...)
	up := e.ok(append([]string{"up", file}, vars...)...)
	for _, hop := range []string{"gateway ──tcp──► bridge", "bridge ──kafka──► site", "site: /service/outlet"} {
		if !strings.Contains(up, hop) {
			t.Errorf("ferry up's summary does not show the hop %q:\n%s", hop, up)
		}
	}
	inlet := e.inletAddress("device")

	client := &http.Client{
		Timeout: 60 * time.Second,
		// One TCP connection per request: each request is its own portal
		// session.
		Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0},
	}
	defer client.CloseIdleConnections()

	var body []byte
	eventually(t, 60*time.Second, "GET through the device's inlet", func() bool {
		resp, err := client.Get("http://" + inlet + "/")
		if err != nil {
			t.Logf("GET: %v", err)
			return false
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err == nil && resp.StatusCode == http.StatusOK
	})
	if string(body) != page {
		t.Fatalf("GET through the inlet returned %q, want %q", body, page)
	}

	// 50 sessions at once, each a POST of its own ~32 KiB.
	const sessions, size = 50, 32 << 10
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			payload := make([]byte, size+i)
			rand.Read(payload)
			want := sha256.Sum256(payload)
			resp, err := client.Post("http://"+inlet+"/echo", "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- fmt.Errorf("session %d: read: %w", i, err)
				return
			}
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("session %d: %s: %s", i, resp.Status, got)
				return
			}
			if h := resp.Header.Get("X-Sha256"); h != hex.EncodeToString(want[:]) {
				errs <- fmt.Errorf("session %d: the server received a payload with SHA-256 %s, sent %x", i, h, want)
				return
			}
			if sha256.Sum256(got) != want {
				errs <- fmt.Errorf("session %d: %d bytes came back with another SHA-256 than the %d sent", i, len(got), len(payload))
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		for _, n := range []string{"device", "gateway", "bridge", "site"} {
			t.Logf("ferry node show %s:\n%s", n, e.run("node", "show", n).stdout)
		}
		t.FailNow()
	}

	// Every hop carried the sessions: the site's outlet counted them all.
	show := e.ok("node", "show", "site")
	if !strings.Contains(show, fmt.Sprintf("/%d total", sessions+1)) {
		t.Errorf("node show site does not count %d outlet sessions:\n%s", sessions+1, show)
	}

	// node show gives the gateway's hop with its transport's counters.
	show = e.ok("node", "show", "gateway")
	if !strings.Contains(show, "Hops (listeners' transport counters):") || !regexp.MustCompile(`messages_in=[1-9]`).MatchString(show) {
		t.Errorf("node show gateway has no hop counters:\n%s", show)
	}

	e.ok(append([]string{"down", file}, vars...)...)
	eventually(t, 20*time.Second, "no process left after ferry down", func() bool { return len(e.ferryProcesses()) == 0 })
	if c, err := net.DialTimeout("tcp", inlet, time.Second); err == nil {
		c.Close()
		t.Errorf("the inlet %s still accepts connections after ferry down", inlet)
	}
}
