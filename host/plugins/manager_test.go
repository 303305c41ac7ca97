package plugins

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/transport"
)

// events collects a plugin's events for a test.
type events struct {
	mu  sync.Mutex
	got []Event
	ch  chan struct{}
}

func watch(t *testing.T, tr *Transport) *events {
	e := &events{ch: make(chan struct{}, 100)}
	cancel := tr.Subscribe(func(ev Event) {
		e.mu.Lock()
		e.got = append(e.got, ev)
		e.mu.Unlock()
		e.ch <- struct{}{}
	})
	t.Cleanup(cancel)
	return e
}

// wait returns the events once the last one is of kind k.
func (e *events) wait(t *testing.T, k EventKind) []Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		e.mu.Lock()
		got := append([]Event(nil), e.got...)
		e.mu.Unlock()
		if len(got) > 0 && got[len(got)-1].Kind == k {
			return got
		}
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("no %v event; got %v", k, got)
		}
	}
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func echo(ctx context.Context, l transport.Link, payload []byte) error {
	if err := l.Send(ctx, [][]byte{payload}); err != nil {
		return err
	}
	ps, err := l.Recv(ctx)
	if err != nil {
		return err
	}
	if len(ps) != 1 || !bytes.Equal(ps[0], payload) {
		return errors.New("echo returned something else")
	}
	return nil
}

// A plugin killed with SIGKILL mid-stream: the host survives, the stream
// fails with an error instead of hanging, subscribers see Crashed then
// Restarted, and a new link works with the settings re-applied.
func TestManagerRestartsAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "loop", 0o755)
	m := newManager(t, Config{Dir: dir, RestartBackoff: 10 * time.Millisecond})
	ctx := testCtx(t, 60*time.Second)
	tr, err := m.Transport(ctx, "loop")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := m.Transport(ctx, "loop"); err != nil || again != tr {
		t.Fatalf("second Transport call: %v (same=%v)", err, again == tr)
	}
	if err := tr.Configure(ctx, map[string]string{"greeting": "hello"}); err != nil {
		t.Fatal(err)
	}
	ev := watch(t, tr)
	link, err := tr.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	oldPid := tr.Client().Pid()

	// Stream until the kill breaks the link.
	streamErr := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		payload := bytes.Repeat([]byte("k"), 1024)
		for i := 0; ; i++ {
			if err := echo(ctx, link, payload); err != nil {
				streamErr <- err
				return
			}
			if i == 10 {
				close(started)
			}
		}
	}()
	<-started
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-streamErr:
		if !errors.Is(err, transport.ErrUnavailable) {
			t.Errorf("stream error %v does not match ErrUnavailable", err)
		}
		t.Logf("stream ended with: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("stream hung after the plugin was killed")
	}
	got := ev.wait(t, Restarted)
	if len(got) != 2 || got[0].Kind != Crashed || got[0].Pid != oldPid || got[0].Err == nil {
		t.Fatalf("events: %+v", got)
	}
	newPid := got[1].Pid
	if newPid == oldPid || tr.Client() == nil || tr.Client().Pid() != newPid {
		t.Fatalf("pid after restart %d (was %d)", newPid, oldPid)
	}
	// The old link stays failed; a new one works.
	if err := link.Send(ctx, [][]byte{[]byte("x")}); err == nil {
		t.Fatal("send on a link of the dead process succeeded")
	}
	link2, err := tr.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer link2.Close()
	if err := echo(ctx, link2, []byte("after restart")); err != nil {
		t.Fatal(err)
	}
	if alive(oldPid) {
		t.Fatalf("old plugin %d still running", oldPid)
	}
}

// A crash is reported with the plugin's last stderr lines.
func TestManagerCrashReportsStderr(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "loop", 0o755)
	var logBuf syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Error})
	m := newManager(t, Config{Dir: dir, Logger: logger, RestartBackoff: 10 * time.Millisecond})
	ctx := testCtx(t, 60*time.Second)
	tr, err := m.Transport(ctx, "loop")
	if err != nil {
		t.Fatal(err)
	}
	ev := watch(t, tr)
	if _, err := tr.Dial(ctx, "panic"); err == nil {
		t.Fatal("dial that crashes the plugin succeeded")
	} else if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("in-flight call error %v does not match ErrUnavailable", err)
	}
	got := ev.wait(t, Restarted)
	crash := got[0]
	if crash.Kind != Crashed || !strings.Contains(strings.Join(crash.Stderr, "\n"), "asked to crash") {
		t.Fatalf("crash event lacks the panic message: %+v", crash)
	}
	if !strings.Contains(logBuf.String(), "asked to crash") {
		t.Errorf("crash log lacks the stderr lines:\n%s", logBuf.String())
	}
}

// When restarts keep failing the Manager reports the plugin degraded,
// with the reason, and keeps trying at the long interval: once the cause
// is fixed the plugin comes back on its own (issue 10: no giving up for
// good, honest status meanwhile).
func TestManagerDegradesAndKeepsTrying(t *testing.T) {
	dir := t.TempDir()
	path := install(t, dir, "loop", 0o755)
	m := newManager(t, Config{Dir: dir, RestartBackoff: 5 * time.Millisecond, MaxRestarts: 2, DegradedBackoff: 300 * time.Millisecond})
	ctx := testCtx(t, 60*time.Second)
	tr, err := m.Transport(ctx, "loop")
	if err != nil {
		t.Fatal(err)
	}
	ev := watch(t, tr)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(tr.Client().Pid(), syscall.SIGKILL)
	got := ev.wait(t, Degraded)
	last := got[len(got)-1]
	if !strings.Contains(last.Err.Error(), "not executable") {
		t.Fatalf("degraded error does not say why: %v", last.Err)
	}
	st, ok := m.StatusOf(KindTransport, "loop")
	if !ok || st.State != StateDegraded || !strings.Contains(st.LastError, "not executable") || st.Pid != 0 {
		t.Fatalf("status while degraded: %+v", st)
	}
	if _, err := tr.Dial(ctx, "echo"); !errors.Is(err, transport.ErrUnavailable) || !strings.Contains(err.Error(), "degraded") {
		t.Fatalf("dial while degraded: %v", err)
	}
	// Once fixed, the next long-interval attempt brings it back.
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, Restarted)
	if st := tr.Status(); st.State != StateRunning || st.Pid == 0 {
		t.Fatalf("status after recovery: %+v", st)
	}
	l, err := tr.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := echo(ctx, l, []byte("back")); err != nil {
		t.Fatal(err)
	}
}

// The plugin's hclog output lands in the host's log under the plugin's name.
func TestManagerForwardsPluginLogs(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "chatty", 0o755)
	var buf syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Name: "node1", Output: &buf, Level: hclog.Info})
	m := newManager(t, Config{Dir: dir, Logger: logger})
	ctx := testCtx(t, 30*time.Second)
	tr, err := m.Transport(ctx, "chatty")
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Configure(ctx, map[string]string{"greeting": "bonjour"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "greeting=bonjour") {
		if time.Now().After(deadline) {
			t.Fatalf("plugin log line not forwarded; host log:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, "greeting=bonjour") && !strings.Contains(line, "node1.chatty") {
			t.Fatalf("forwarded line not under the plugin's name: %s", line)
		}
	}
}

func TestManagerDiscoveryAndList(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "alpha", 0o755)
	install(t, dir, "beta", 0o755)
	sum, _ := fileSHA256(filepath.Join(dir, "alpha"))
	t.Setenv("FERRY_PLUGIN_DIR", dir)
	m := newManager(t, Config{Pins: map[string]string{"alpha": sum}})
	if m.Dir() != dir {
		t.Fatalf("dir %q, want %q from FERRY_PLUGIN_DIR", m.Dir(), dir)
	}
	ctx := testCtx(t, 60*time.Second)
	if _, err := m.Transport(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Transport(ctx, "../beta"); err == nil {
		t.Fatal("path as plugin name accepted")
	}
	if _, err := m.Transport(ctx, "gamma"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing plugin: %v", err)
	}
	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Fatalf("list: %+v", list)
	}
	a, b := list[0], list[1]
	if a.Running || !a.Pinned || a.SHA256 != sum || a.Version != "0.0.1-test" || a.AddressType != "loop" || a.Error != "" {
		t.Errorf("alpha: %+v", a)
	}
	if !b.Running || b.Pid <= 0 || b.Version != "0.0.1-test" || b.ProtocolMajor != transport.ProtocolMajor {
		t.Errorf("beta: %+v", b)
	}
	if _, err := NewManager(Config{Dir: dir, Pins: map[string]string{"alpha": "nothex"}}); err == nil {
		t.Fatal("bad pin accepted")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(b.Pid) {
		t.Fatalf("plugin %d survived Manager.Close", b.Pid)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
