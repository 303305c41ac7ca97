package examples_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildExamples compiles the named example directories into one temporary
// directory with a single go build and returns the binaries' directory.
func buildExamples(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./"+n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// runExample runs a built example to completion and returns its stdout.
func runExample(t *testing.T, bin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), err, stdout.String(), stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("%s wrote to stderr (logs must be quiet by default):\n%s", filepath.Base(bin), stderr.String())
	}
	return stdout.String()
}

func TestCoreExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs example programs")
	}
	cases := []struct {
		name string
		want string
	}{
		{"01-node", `Node n1 started with 1 worker (its app mailbox)
Node n1 stopped
`},
		{"02-worker", "App Received: Hello Ferry!\n"},
		{"03-routing", `h1: received "Hello Ferry!", onward /service/h1/service/echoer, return /service/app
echoer: received "Hello Ferry!", onward /service/echoer, return /service/h1/service/app
h1: received "Hello Ferry!", onward /service/h1/service/app, return /service/echoer
App Received: Hello Ferry!
`},
		{"03-routing-many-hops", `h1: received "Hello Ferry!", onward /service/h1/service/h2/service/h3/service/echoer, return /service/app
h2: received "Hello Ferry!", onward /service/h2/service/h3/service/echoer, return /service/h1/service/app
h3: received "Hello Ferry!", onward /service/h3/service/echoer, return /service/h2/service/h1/service/app
echoer: received "Hello Ferry!", onward /service/echoer, return /service/h3/service/h2/service/h1/service/app
h3: received "Hello Ferry!", onward /service/h3/service/h2/service/h1/service/app, return /service/echoer
h2: received "Hello Ferry!", onward /service/h2/service/h1/service/app, return /service/h3/service/echoer
h1: received "Hello Ferry!", onward /service/h1/service/app, return /service/h2/service/h3/service/echoer
App Received: Hello Ferry!
`},
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = c.name
	}
	dir := buildExamples(t, names...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := runExample(t, filepath.Join(dir, c.name))
			if got != c.want {
				t.Errorf("output of %s:\n%s\nwant:\n%s", c.name, got, c.want)
			}
		})
	}
}
