package portals

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins"
)

// pluginBin is plugins/portal-tcp, built once for the package's tests.
var pluginBin string

func TestMain(m *testing.M) {
	if bin := os.Getenv("FERRY_TEST_PORTAL_HOST"); bin != "" {
		hostHelper(bin)
		return
	}
	dir, err := os.MkdirTemp("", "ferry-portals-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "portal-tcp")
	cmd := exec.Command("go", "build", "-o", pluginBin, "../../plugins/portal-tcp")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if bin := os.Getenv("FERRY_TEST_PORTAL_PLUGIN"); bin != "" {
		// A prebuilt plugin, e.g. one instrumented for profiling.
		pluginBin = bin
		cmd = exec.Command("true")
	}
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building plugins/portal-tcp:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostHelper is a host process for TestPluginDiesWithHost: it launches the
// portal plugin, prints its pid and waits to be killed.
func hostHelper(bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: bin})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(c.Pid())
	time.Sleep(30 * time.Second) // the test kills us long before
	c.Kill()
	os.Exit(2)
}
