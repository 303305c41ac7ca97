// Package clitest drives the ferry command in tests the way a user does:
// it builds the ferry binary and the plugins a test needs into the test's
// temporary directory and runs commands with a FERRY_HOME and plugin
// directory of their own. Every node the test left is deleted at the end.
package clitest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CommandTimeout bounds one ferry command run by Run or OK.
const CommandTimeout = 60 * time.Second

// Env is a ferry binary with its own home and plugin directory.
type Env struct {
	T       testing.TB
	Ferry   string // the ferry executable
	Home    string // FERRY_HOME
	Plugins string // FERRY_PLUGIN_DIR
	Tmp     string // TMPDIR of every process: plugin sockets land here, not in /tmp
}

// New builds ferry and each plugin of plugins (binary name → package,
// "." for the test's own package) and returns the environment to run them.
func New(t testing.TB, plugins map[string]string) *Env {
	t.Helper()
	dir := t.TempDir()
	e := &Env{T: t, Ferry: filepath.Join(dir, "ferry"), Home: filepath.Join(dir, "home"), Plugins: filepath.Join(dir, "plugins"), Tmp: filepath.Join(dir, "tmp")}
	if err := os.Mkdir(e.Tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	build := map[string]string{e.Ferry: "github.com/ferryhq/ferry/host/cmd/ferry"}
	for name, pkg := range plugins {
		build[filepath.Join(e.Plugins, name)] = pkg
	}
	for out, pkg := range build {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	t.Cleanup(func() { e.Run("node", "delete", "--all") })
	return e
}

// Command returns ferry with args, set up to use the environment.
func (e *Env) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.Ferry, args...)
	cmd.Env = append(os.Environ(), "FERRY_HOME="+e.Home, "FERRY_PLUGIN_DIR="+e.Plugins, "TMPDIR="+e.Tmp)
	return cmd
}

// Run runs ferry with args and returns what it printed.
func (e *Env) Run(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := e.Command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// OK runs ferry with args, fails the test if it fails, and returns stdout.
func (e *Env) OK(args ...string) string {
	e.T.Helper()
	out, errs, err := e.Run(args...)
	if err != nil {
		e.T.Fatalf("ferry %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errs)
	}
	return out
}
