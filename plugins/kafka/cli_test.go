package main

import (
	"bufio"
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/clitest"
)

// buildCLI builds ferry and the plugins this test drives.
func buildCLI(t *testing.T) *clitest.Env {
	return clitest.New(t, map[string]string{
		"kafka": ".",
		// A node starts the tcp plugin for its default listener.
		"tcp": "github.com/ferryhq/ferry/plugins/tcp",
	})
}

// devBroker runs `ferry kafka dev` on a free port and returns the address
// it prints; the broker is stopped with SIGTERM (and must exit) at the end.
func devBroker(e *clitest.Env) string {
	e.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := e.Command(ctx, "kafka", "dev", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.T.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		e.T.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	e.T.Cleanup(func() {
		defer cancel()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				e.T.Errorf("ferry kafka dev after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			e.T.Error("ferry kafka dev still running 20s after SIGTERM")
		}
	})
	addrRe := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				e.T.Fatalf("ferry kafka dev ended without printing its address\n%s", stderr.String())
			}
			if m := addrRe.FindStringSubmatch(line); m != nil {
				go func() {
					for range lines {
					}
				}()
				return m[1]
			}
		case <-timeout:
			e.T.Fatal("ferry kafka dev printed no address within 20s")
		}
	}
}

// TestCLI drives the ferry command as a user would: `ferry kafka dev` as
// the broker, two nodes each listening on its inbound topic, a message to
// the other node's topic, and a connection whose worker routes the same.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	e := buildCLI(t)
	brokers := devBroker(e)
	e.OK("node", "create", "n1")
	e.OK("node", "create", "n2")
	for _, n := range []string{"n1", "n2"} {
		e.OK("listener", "create", "ferry-e2e-"+n, "--at", n, "--transport", "kafka",
			"--setting", "brokers="+brokers, "--setting", "inbound_topic=ferry-e2e-"+n)
	}
	out := e.OK("message", "send", "hello", "--from", "n1", "--to", "/kafka/ferry-e2e-n2/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send over kafka printed %q, want HELLO", out)
	}
	out = e.OK("connection", "create", "--from", "n1", "--transport", "kafka", "--to", "ferry-e2e-n2")
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.OK("message", "send", "again", "--from", "n1", "--to", w+"/service/uppercase")
	if strings.TrimSpace(out) != "AGAIN" {
		t.Fatalf("message send via %s printed %q, want AGAIN", w, out)
	}
	// And back the other way: n2 reaches n1's topic.
	out = e.OK("message", "send", "back", "--from", "n2", "--to", "/kafka/ferry-e2e-n1/service/uppercase")
	if strings.TrimSpace(out) != "BACK" {
		t.Fatalf("message send n2 → n1 printed %q, want BACK", out)
	}
	e.OK("node", "delete", "--all")

	// The same two nodes from configs/kafka.hcl with ferry up.
	file, err := filepath.Abs("../../configs/kafka.hcl")
	if err != nil {
		t.Fatal(err)
	}
	vars := []string{"--var", "brokers=" + brokers, "--var", "prefix=ferry-up-"}
	e.OK(append([]string{"up", file}, vars...)...)
	out = e.OK("message", "send", "hello", "--from", "n1", "--to", "/kafka/ferry-up-n2/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send in configs/kafka.hcl printed %q, want HELLO", out)
	}
	e.OK(append([]string{"down", file}, vars...)...)
}
