package transport_test

import (
	"os/exec"
	"strings"
	"testing"
)

// Nothing a plugin author imports may pull in the host: the SDK's
// dependency closure holds no host/ package.
func TestSDKDoesNotImportHost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/ferryhq/ferry/sdk/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/ferryhq/ferry/host/") {
			t.Errorf("an sdk package depends on %s", pkg)
		}
	}
}

// The author's package documents only the plugin side: no host-side
// client in `go doc`.
func TestSDKTransportHasNoHostClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go doc")
	}
	out, err := exec.Command("go", "doc", "-short", "github.com/ferryhq/ferry/sdk/transport").CombinedOutput()
	if err != nil {
		t.Fatalf("go doc: %v\n%s", err, out)
	}
	for _, host := range []string{"Remote", "NewRemote", "ServeInProcess", "PluginSet", "DialOptions"} {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, " "+host+"(") || strings.Contains(line, "type "+host+" ") {
				t.Errorf("go doc sdk/transport lists host-side %q: %s", host, line)
			}
		}
	}
}
