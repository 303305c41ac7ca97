package portals

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins"
)

func launchPlugin(t *testing.T) *plugins.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: pluginBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	if !c.DataChannel() {
		t.Fatal("the portal plugin's stream data is not on the data channel")
	}
	return c
}

func TestPluginPortal(t *testing.T) {
	checkLeaks(t)
	pc := launchPlugin(t)
	if i := pc.Portal().Info(); i.Name != "portal-tcp" || i.Protocol != "tcp" {
		t.Fatalf("info %+v", i)
	}
	p := newPair(t, startTarget(t), pairOptions{portal: pc.Portal()})
	size := bigSize() / 4
	var wg sync.WaitGroup
	errs := make(chan error, 22)
	up, down := p.dial(t), p.dial(t)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- upload(up, size, 21); up.Close() }()
	go func() { defer wg.Done(); errs <- download(down, size, 22); down.Close() }()
	for i := range 20 {
		c := p.dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			payload := make([]byte, 100<<10+i)
			newGen(uint64(200 + i)).Read(payload)
			if err := echo(c, payload); err != nil {
				errs <- fmt.Errorf("echo %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
}

func TestPluginTargetRefuses(t *testing.T) {
	checkLeaks(t)
	pc := launchPlugin(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := l.Addr().String()
	l.Close()
	p := newPair(t, target, pairOptions{portal: pc.Portal()})
	// The inlet may reset the client before a loaded machine lets the
	// dialler see its connect complete: that is the expected end too.
	c, err := net.DialTimeout("tcp", p.inlet.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		expectClosed(t, c, 5*time.Second)
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	waitFor(t, "the reason in the outlet's status", 5*time.Second, func() bool {
		return strings.Contains(p.outlet.Status().LastError, "refused")
	})
}

func TestPluginKilledEndsSessions(t *testing.T) {
	checkLeaks(t)
	pc := launchPlugin(t)
	p := newPair(t, startTarget(t), pairOptions{portal: pc.Portal()})
	c := p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	pc.Kill()
	expectClosed(t, c, 5*time.Second)
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return p.inlet.Status().ActiveSessions == 0 && p.outlet.Status().ActiveSessions == 0
	})
}

func TestLaunchPluginErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: "/nonexistent/portal-tcp"}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing binary: %v", err)
	}
	if _, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: pluginBin, SHA256: strings.Repeat("0", 64)}); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("wrong pin: %v", err)
	}
}

func TestSupervisedPluginRestartsAndNewSessionsWork(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := plugins.NewManager(plugins.Config{Paths: map[string]string{"portal-tcp": pluginBin}, RestartBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sp, err := m.Portal(ctx, "portal-tcp")
	if err != nil {
		t.Fatal(err)
	}
	p := newPair(t, startTarget(t), pairOptions{portal: sp})
	if err := upload(p.dial(t), 1<<20, 31); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	pid := sp.Pid()
	if err := sp.Kill(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 5*time.Second)
	// The inlet listens again on the same address through a new process.
	var c2 *net.TCPConn
	waitFor(t, "the inlet to accept again", 15*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", p.inlet.Addr(), time.Second)
		if err != nil {
			return false
		}
		c2 = conn.(*net.TCPConn)
		return true
	})
	defer c2.Close()
	if err := upload(c2, 4<<20, 32); err != nil {
		t.Fatal(err)
	}
	if st := sp.Status(); st.Pid == pid || st.Restarts != 1 || st.State != plugins.StateRunning {
		t.Fatalf("pid %d → %+v", pid, st)
	}
}

// A portal plugin never outlives its host, even one killed with SIGKILL.
func TestPluginDiesWithHost(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	// The helper host is killed, so it cannot remove its plugin's socket
	// directory: give it a temp directory the test removes.
	cmd.Env = append(os.Environ(), "FERRY_TEST_PORTAL_HOST="+pluginBin, "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line := make(chan string, 1)
	go func() {
		var b [64]byte
		n, _ := out.Read(b[:])
		line <- strings.TrimSpace(string(b[:n]))
	}()
	var pid int
	select {
	case l := <-line:
		if _, err := fmt.Sscan(l, &pid); err != nil {
			t.Fatalf("helper said %q", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper did not report the plugin's pid")
	}
	alive := func() bool { return syscall.Kill(pid, 0) == nil && !isZombie(pid) }
	if !alive() {
		t.Fatalf("plugin %d not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitFor(t, "the plugin to exit after its host was killed", 10*time.Second, func() bool { return !alive() })
}

// isZombie reports whether pid has exited but not been reaped (its parent
// is gone, so init reaps it shortly).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

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
	for _, tc := range []struct {
		name     string
		maxProcs int
		want     string
	}{
		{"default", 0, fmt.Sprint(plugins.DefaultPluginMaxProcs)},
		{"explicit", 3, "3"},
		{"runtime decides", -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := plugins.Launch(ctx, plugins.LaunchConfig{Kind: plugins.KindPortal, Path: pluginBin, MaxProcs: tc.maxProcs})
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
