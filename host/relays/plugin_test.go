package relays

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
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
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
func tcpPluginDir(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the tcp plugin")
	}
	pluginOnce.Do(func() {
		pluginDir, pluginErr = os.MkdirTemp("", "ferry-relays-plugins")
		if pluginErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(pluginDir, "tcp"), "github.com/ferryhq/ferry/plugins/tcp").CombinedOutput()
		if err != nil {
			pluginErr = &buildError{err, string(out)}
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

// pluginNode is a node whose TCP transport is a real plugin process.
func pluginNode(t testing.TB, name string) (*node.Node, *transports.Binding, *plugins.Transport) {
	t.Helper()
	n := newNode(t, name)
	m, err := plugins.NewManager(plugins.Config{Dir: tcpPluginDir(t), RestartBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := m.Transport(ctxT(t), "tcp")
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	b, err := transports.Attach(n, tr, transports.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	cancel := tr.Subscribe(func(e plugins.Event) {
		if e.Kind == plugins.Restarted {
			b.Reconnect()
		}
	})
	t.Cleanup(func() {
		cancel()
		b.Close()
		m.Close()
	})
	return n, b, tr
}

// TestRelayOverPluginProcesses runs the three-node relay with every TCP
// transport in its own plugin process, then SIGKILLs the relay node's
// plugin: it is restarted, its listener re-opened, n3 and n1 re-dial, n3
// registers again and the path works again without touching n1 or n3.
func TestRelayOverPluginProcesses(t *testing.T) {
	tcpPluginDir(t) // build first, so the goroutine check below is not confused by it
	checkGoroutines(t)
	n2, b2, p2 := pluginNode(t, "n2")
	n3, b3, _ := pluginNode(t, "n3")
	n1, b1, _ := pluginNode(t, "n1")
	if _, err := StartService(n2, ServiceConfig{Flows: ListenerFlows("", b2)}); err != nil {
		t.Fatal(err)
	}
	l, err := b2.Listen(ctxT(t), "127.0.0.1:0", ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := b3.Connect(ctxT(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := Register(ctxT(t), n3, routing.Route{c3.Worker, routing.Local(ServiceAddress)}, "n3", fast())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	c1, err := b1.Connect(ctxT(t), l.Address)
	if err != nil {
		t.Fatal(err)
	}
	viaRelay := routeOf(t, c1.Worker, "/service/forward_to_n3/service/uppercase")
	mustRequest(t, n1, viaRelay.String(), "hello", "HELLO")

	before := reg.Info().Registrations
	restarted := make(chan struct{}, 1)
	cancel := p2.Subscribe(func(e plugins.Event) {
		if e.Kind == plugins.Restarted {
			select {
			case restarted <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	c := p2.Client()
	if c == nil {
		t.Fatal("n2's plugin is not running")
	}
	if err := syscall.Kill(c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-ctxT(t).Done():
		t.Fatal("n2's plugin was not restarted")
	}
	eventually(t, "n3 to register again", func() bool {
		i := reg.Info()
		return i.State == StateUp && i.Registrations > before
	})
	requestEventually(t, n1, viaRelay, "again", "AGAIN")
}
