package plugins

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// pluginBin is the test plugin (testdata/testplugin), built once for the
// package.
var pluginBin string

func TestMain(m *testing.M) {
	if os.Getenv("FERRY_TEST_HOST_HELPER") != "" {
		hostHelper()
		return
	}
	dir, err := os.MkdirTemp("", "ferry-plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "testplugin")
	cmd := exec.Command("go", "build", "-o", pluginBin, "./testdata/testplugin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the test plugin:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostHelper is a host process for TestPluginDiesWithHost: it launches the
// plugin named in FERRY_TEST_HOST_HELPER, prints the plugin's pid and waits
// to be killed.
func hostHelper() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Launch(ctx, LaunchConfig{
		Path:          os.Getenv("FERRY_TEST_HOST_HELPER"),
		noDeathSignal: os.Getenv("FERRY_TEST_NO_DEATH_SIGNAL") != "",
	})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(c.Pid())
	// The test kills us; never linger if it does not.
	time.Sleep(30 * time.Second)
	c.Kill()
	os.Exit(2)
}

// install copies the test plugin into dir under name, with mode perm.
func install(t *testing.T, dir, name string, perm os.FileMode) string {
	t.Helper()
	data, err := os.ReadFile(pluginBin)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
