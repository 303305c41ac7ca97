package main

import (
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/clitest"

	"github.com/ferryhq/ferry/plugins/serial/nullmodem"
)

// buildCLI builds ferry and the plugins this test drives.
func buildCLI(t *testing.T) *clitest.Env {
	return clitest.New(t, map[string]string{
		"serial": ".", "tcp": "github.com/ferryhq/ferry/plugins/tcp",
	})
}

// TestCLI drives the ferry command as a user would over a null-modem pair
// of pseudo-terminals: a serial listener on n2's end, a connection from
// n1's end, a message through the connection's worker, a message routed by
// n1's device path, and the topology file configs/serial.hcl.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	e := buildCLI(t)
	nm, err := nullmodem.Open(t.TempDir(), "ttyA", "ttyB")
	if err != nil {
		t.Fatal(err)
	}
	defer nm.Close()
	devA, devB := nm.Path(0), nm.Path(1)

	e.OK("node", "create", "n1")
	e.OK("node", "create", "n2")
	var l struct {
		Transport string `json:"transport"`
		Address   string `json:"address"`
		Up        bool   `json:"up"`
	}
	out := e.OK("listener", "create", devB, "--at", "n2", "--transport", "serial", "--output", "json")
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("listener create --output json: %v\n%s", err, out)
	}
	if l.Transport != "serial" || !l.Up || l.Address != devB {
		t.Fatalf("listener create: %+v", l)
	}
	out = e.OK("connection", "create", "--from", "n1", "--transport", "serial", "--to", devA)
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.OK("message", "send", "hello", "--from", "n1", "--to", w+"/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send via %s printed %q, want HELLO", w, out)
	}
	out = e.OK("node", "show", "n2")
	if !strings.Contains(out, "serial") {
		t.Errorf("node show n2 does not list the serial listener:\n%s", out)
	}
	// The transport's counters, as the plugin reports them.
	out = e.OK("listener", "show", devB, "--at", "n2")
	for _, c := range []string{"frames_in", "crc_errors", "resyncs", "oversized_frames", "reassembly_timeouts", "opens"} {
		if !strings.Contains(out, c) {
			t.Errorf("listener show lacks the counter %s:\n%s", c, out)
		}
	}
	e.OK("node", "delete", "--all")

	// The topology file, on the same two devices. The listener re-opens
	// its device after the nodes above let go of it.
	file, err := filepath.Abs("../../configs/serial.hcl")
	if err != nil {
		t.Fatal(err)
	}
	vars := []string{"--var", "n1_device=" + devA, "--var", "n2_device=" + devB}
	e.OK(append([]string{"validate", file}, vars...)...)
	e.OK(append([]string{"up", file}, vars...)...)
	t.Cleanup(func() { e.Run(append([]string{"down", file}, vars...)...) })
	// Through n1's connection worker, as listed, and by n1's device path.
	route := "/serial/" + url.PathEscape(devA) + "/service/uppercase"
	deadline := time.Now().Add(30 * time.Second)
	for try := 1; ; try++ {
		out, errs, err := e.Run("message", "send", "from the file", "--from", "n1", "--to", route)
		if err == nil && strings.TrimSpace(out) == "FROM THE FILE" {
			t.Logf("configs/serial.hcl: %s answered on try %d", route, try)
			break
		}
		t.Logf("try %d: %v %q %s", try, err, out, errs)
		// The file's nodes start in the background: the line's
		// handshake may not be done yet.
		if time.Now().After(deadline) {
			t.Fatalf("message over configs/serial.hcl to %s: %v %q %s", route, err, out, errs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.OK(append([]string{"down", file}, vars...)...)
}
