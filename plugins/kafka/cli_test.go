package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliEnv runs the ferry binary with its own FERRY_HOME and a plugin
// directory holding the kafka plugin.
type cliEnv struct {
	t                   *testing.T
	ferry, home, plugin string
}

func buildCLI(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	e := &cliEnv{t: t, ferry: filepath.Join(dir, "ferry"), home: filepath.Join(dir, "home"), plugin: filepath.Join(dir, "plugins")}
	for out, pkg := range map[string]string{e.ferry: "github.com/ferryhq/ferry/host/cmd/ferry", filepath.Join(e.plugin, "kafka"): ".",
		// A node starts the tcp plugin for its default listener.
		filepath.Join(e.plugin, "tcp"): "github.com/ferryhq/ferry/plugins/tcp"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	t.Cleanup(func() { e.run("node", "delete", "--all") })
	return e
}

func (e *cliEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.ferry, args...)
	cmd.Env = append(os.Environ(), "FERRY_HOME="+e.home, "FERRY_PLUGIN_DIR="+e.plugin)
	return cmd
}

func (e *cliEnv) run(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := e.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (e *cliEnv) ok(args ...string) string {
	e.t.Helper()
	out, errs, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("ferry %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

// devBroker runs `ferry kafka dev` on a free port and returns the address
// it prints; the broker is stopped with SIGTERM (and must exit) at the end.
func (e *cliEnv) devBroker() string {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := e.command(ctx, "kafka", "dev", "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
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
	e.t.Cleanup(func() {
		defer cancel()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				e.t.Errorf("ferry kafka dev after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			e.t.Error("ferry kafka dev still running 20s after SIGTERM")
		}
	})
	addrRe := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				e.t.Fatalf("ferry kafka dev ended without printing its address\n%s", stderr.String())
			}
			if m := addrRe.FindStringSubmatch(line); m != nil {
				go func() {
					for range lines {
					}
				}()
				return m[1]
			}
		case <-timeout:
			e.t.Fatal("ferry kafka dev printed no address within 20s")
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
	brokers := e.devBroker()
	e.ok("node", "create", "n1")
	e.ok("node", "create", "n2")
	for _, n := range []string{"n1", "n2"} {
		e.ok("listener", "create", "ferry-e2e-"+n, "--at", n, "--transport", "kafka",
			"--setting", "brokers="+brokers, "--setting", "inbound_topic=ferry-e2e-"+n)
	}
	out := e.ok("message", "send", "hello", "--from", "n1", "--to", "/kafka/ferry-e2e-n2/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send over kafka printed %q, want HELLO", out)
	}
	out = e.ok("connection", "create", "--from", "n1", "--transport", "kafka", "--to", "ferry-e2e-n2")
	w := regexp.MustCompile(`/worker/[0-9a-f]+`).FindString(out)
	if w == "" {
		t.Fatalf("connection create printed %q; want a /worker/ID", out)
	}
	out = e.ok("message", "send", "again", "--from", "n1", "--to", w+"/service/uppercase")
	if strings.TrimSpace(out) != "AGAIN" {
		t.Fatalf("message send via %s printed %q, want AGAIN", w, out)
	}
	// And back the other way: n2 reaches n1's topic.
	out = e.ok("message", "send", "back", "--from", "n2", "--to", "/kafka/ferry-e2e-n1/service/uppercase")
	if strings.TrimSpace(out) != "BACK" {
		t.Fatalf("message send n2 → n1 printed %q, want BACK", out)
	}
	e.ok("node", "delete", "--all")

	// The same two nodes from configs/kafka.hcl with ferry up.
	file, err := filepath.Abs("../../configs/kafka.hcl")
	if err != nil {
		t.Fatal(err)
	}
	vars := []string{"--var", "brokers=" + brokers, "--var", "prefix=ferry-up-"}
	e.ok(append([]string{"up", file}, vars...)...)
	out = e.ok("message", "send", "hello", "--from", "n1", "--to", "/kafka/ferry-up-n2/service/uppercase")
	if strings.TrimSpace(out) != "HELLO" {
		t.Fatalf("message send in configs/kafka.hcl printed %q, want HELLO", out)
	}
	e.ok(append([]string{"down", file}, vars...)...)
}
