package plugins

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// pluginGOMAXPROCS is the last GOMAXPROCS in the plugin process's
// environment (the value the Go runtime uses), or "" if none; it skips the
// test where /proc is missing.
func pluginGOMAXPROCS(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Skipf("cannot read the plugin's environment: %v", err)
	}
	v := ""
	for kv := range bytes.SplitSeq(data, []byte{0}) {
		if val, ok := bytes.CutPrefix(kv, []byte("GOMAXPROCS=")); ok {
			v = string(val)
		}
	}
	return v
}

func TestPluginMaxProcs(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("the host's GOMAXPROCS overrides the launch setting")
	}
	cases := []struct {
		name string
		cfg  LaunchConfig
		want string
	}{
		{"default", LaunchConfig{}, fmt.Sprint(DefaultPluginMaxProcs)},
		{"explicit", LaunchConfig{MaxProcs: 3}, "3"},
		{"runtime decides", LaunchConfig{MaxProcs: -1}, ""},
		{"env wins", LaunchConfig{MaxProcs: 3, Env: []string{"GOMAXPROCS=2"}}, "2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Path = pluginBin
			c, err := Launch(testCtx(t, 20*time.Second), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Kill()
			if got := pluginGOMAXPROCS(t, c.Pid()); got != tc.want {
				t.Fatalf("plugin GOMAXPROCS = %q, want %q", got, tc.want)
			}
		})
	}
}
