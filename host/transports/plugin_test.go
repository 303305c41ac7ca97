package transports_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
)

var (
	pluginDir  string
	pluginOnce sync.Once
	pluginErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginDir != "" {
		os.RemoveAll(pluginDir)
	}
	os.Exit(code)
}

// tcpPluginDir builds plugins/tcp once into a temporary plugin directory.
func tcpPluginDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the tcp plugin")
	}
	pluginOnce.Do(func() {
		pluginDir, pluginErr = os.MkdirTemp("", "ferry-transports-plugins")
		if pluginErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(pluginDir, "tcp"), "github.com/ferryhq/ferry/plugins/tcp")
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginErr = &buildError{err: err, out: string(out)}
		}
	})
	if pluginErr != nil {
		t.Fatalf("build the tcp plugin: %v", pluginErr)
	}
	return pluginDir
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func newPluginTCP(t *testing.T) *plugins.Transport {
	t.Helper()
	m, err := plugins.NewManager(plugins.Config{Dir: tcpPluginDir(t), RestartBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tr, err := m.Transport(tctx(t), "tcp")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// waitRestart kills the plugin process with SIGKILL and waits for the
// manager to report it restarted.
func killAndWaitRestart(t *testing.T, tr *plugins.Transport) {
	t.Helper()
	restarted := make(chan struct{}, 1)
	cancel := tr.Subscribe(func(e plugins.Event) {
		if e.Kind == plugins.Restarted {
			select {
			case restarted <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	c := tr.Client()
	if c == nil {
		t.Fatal("plugin not running")
	}
	if err := syscall.Kill(c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-tctx(t).Done():
		t.Fatal("plugin was not restarted")
	}
}

func TestPluginEchoSurvivesPluginCrashes(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	pa, pb := newPluginTCP(t), newPluginTCP(t)
	ba, bb := attach(t, a, pa), attach(t, b, pb)
	l, c, r := echoPath(t, b, bb, ba)
	request(t, a, r, "through two plugin processes")

	works := func(payload string) func() bool {
		return func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			got, err := node.Request(ctx, a, r, payload)
			return err == nil && got == payload
		}
	}
	// The listening side's plugin dies: its listener is re-opened on the
	// same address and the initiator re-dials, keeping its worker address.
	killAndWaitRestart(t, pb)
	eventually(t, "recovered after the listener's plugin crashed", works("after listener crash"))
	if ls := bb.Listeners(); len(ls) != 1 || ls[0].Address != l.Address || !ls[0].Up {
		t.Fatalf("listeners: %+v", ls)
	}
	// The dialling side's plugin dies: the connection is re-dialled through
	// the restarted plugin.
	killAndWaitRestart(t, pa)
	eventually(t, "recovered after the dialler's plugin crashed", works("after dialler crash"))
	cs := ba.Connections()
	if len(cs) != 1 || cs[0].ID != c.ID || !cs[0].Up {
		t.Fatalf("connections: %+v", cs)
	}
}
