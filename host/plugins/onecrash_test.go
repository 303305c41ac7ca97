package plugins

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// One kill -9 of a plugin is handled once: one "plugin crashed" line, one
// "plugin restarted" line, one Crashed and one Restarted event (so what the
// plugin carried is re-opened once), and the status goes running →
// restarting → running with the crash as its last error.
func TestOneCrashIsHandledOnce(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "loop", 0o755)
	var logBuf syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Debug})
	m := newManager(t, Config{Dir: dir, Logger: logger, RestartBackoff: 10 * time.Millisecond})
	ctx := testCtx(t, 60*time.Second)
	tr, err := m.Transport(ctx, "loop")
	if err != nil {
		t.Fatal(err)
	}
	ev := watch(t, tr)
	var reopens atomic.Int32
	cancel := tr.Subscribe(func(e Event) {
		if e.Kind == Restarted {
			reopens.Add(1)
		}
	})
	defer cancel()
	pid := tr.Client().Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got := ev.wait(t, Restarted)
	// Prove the new process serves before counting, so nothing is pending.
	l, err := tr.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := echo(ctx, l, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Kind != Crashed || got[1].Kind != Restarted || got[0].Pid != pid || got[1].Pid == pid {
		t.Fatalf("events for one crash: %+v", got)
	}
	if n := reopens.Load(); n != 1 {
		t.Fatalf("%d re-opens for one crash", n)
	}
	log := logBuf.String()
	if c, r := strings.Count(log, "plugin crashed"), strings.Count(log, "plugin restarted"); c != 1 || r != 1 {
		t.Fatalf("one crash logged %d crashed and %d restarted lines:\n%s", c, r, log)
	}
	st, ok := m.StatusOf(KindTransport, "loop")
	if !ok || st.State != StateRunning || st.Restarts != 1 || st.Pid != got[1].Pid || !strings.Contains(st.LastError, "exited unexpectedly") {
		t.Fatalf("status after one crash: %+v", st)
	}
	if all := m.Statuses(); len(all) != 1 || all[0].Name != "loop" || all[0].Kind != KindTransport {
		t.Fatalf("statuses: %+v", all)
	}
}

// A start in flight holds no lock that status and list calls need: while
// one caller waits for a plugin that never answers, Statuses returns at
// once and shows it starting.
func TestStatusDoesNotWaitForAStart(t *testing.T) {
	dir := t.TempDir()
	install(t, dir, "loop", 0o755)
	// A "plugin" that never shakes hands.
	if err := os.WriteFile(filepath.Join(dir, "hang"), []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, Config{Dir: dir, StartTimeout: 3 * time.Second})
	ctx := testCtx(t, 30*time.Second)
	started := make(chan error, 1)
	go func() { _, err := m.Transport(ctx, "hang"); started <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, ok := m.StatusOf(KindTransport, "hang")
		if ok && st.State == StateStarting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no starting status: %+v %v", st, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Another plugin starts meanwhile: one start in flight per plugin, not
	// per Manager.
	if _, err := m.Transport(ctx, "loop"); err != nil {
		t.Fatal(err)
	}
	m.Close()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the hung start never ended")
	}
}
