package examples_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The 04 examples are servers and clients that talk over TCP: each test runs
// them as separate processes on ports picked by the kernel.

// TestResponderAndInitiator builds both examples and runs them as real
// processes on a port picked by the kernel.
func TestResponderAndInitiator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs example binaries")
	}
	bin := buildExamples(t, "04-routing-over-transport-responder", "04-routing-over-transport-initiator")
	addr, out := startServer(t, filepath.Join(bin, "04-routing-over-transport-responder"), "-listen", "127.0.0.1:0")
	got := runClient(t, filepath.Join(bin, "04-routing-over-transport-initiator"), "-connect", addr)
	if !strings.Contains(got, "App Received: Hello Ferry!\n") {
		t.Fatalf("initiator printed %q", got)
	}
	waitFor(t, out, "Echoer: Received: Hello Ferry!")
}

// TestTwoHopsTrio builds the three two-hop examples and runs them as real
// processes on ports picked by the kernel.
func TestTwoHopsTrio(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs example binaries")
	}
	bin := buildExamples(t, "04-routing-over-transport-two-hops-responder", "04-routing-over-transport-two-hops-middle", "04-routing-over-transport-two-hops-initiator")
	raddr, rout := startServer(t, filepath.Join(bin, "04-routing-over-transport-two-hops-responder"), "-listen", "127.0.0.1:0")
	maddr, _ := startServer(t, filepath.Join(bin, "04-routing-over-transport-two-hops-middle"), "-listen", "127.0.0.1:0", "-responder", raddr)
	got := runClient(t, filepath.Join(bin, "04-routing-over-transport-two-hops-initiator"), "-connect", maddr)
	if !strings.Contains(got, "App Received: Hello Ferry!\n") {
		t.Fatalf("initiator printed %q", got)
	}
	waitFor(t, rout, "Echoer: Received: Hello Ferry!")
}

// startServer starts a long-running example, waits for its "listening on
// ADDR" line and returns ADDR and a channel of its later output lines. The
// process is stopped when the test ends.
func startServer(t *testing.T, path string, args ...string) (string, <-chan string) {
	t.Helper()
	cmd := exec.Command(path, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not stop on interrupt", filepath.Base(path))
		}
	})
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before listening; stderr:\n%s", filepath.Base(path), stderr.String())
			}
			if a, found := strings.CutPrefix(l, "listening on "); found {
				return strings.TrimSpace(a), lines
			}
		case <-timeout:
			t.Fatalf("%s did not print a listening line in time", filepath.Base(path))
		}
	}
}

// runClient runs an example to completion and returns its stdout.
func runClient(t *testing.T, path string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(path), err, out, stderr.String())
	}
	return string(out)
}

// waitFor waits for a line containing want on lines.
func waitFor(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended without %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no line with %q in time", want)
		}
	}
}
