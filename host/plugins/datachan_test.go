package plugins

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/sdk/transport"
)

// dataPlugin starts the test plugin under a Manager and returns it with a
// working echo link on the data channel.
func dataPlugin(t *testing.T, cfg Config) (*Manager, *Transport, *events, transport.Link, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	install(t, dir, "loop", 0o755)
	var logBuf syncBuffer
	cfg.Dir = dir
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Info})
	if cfg.RestartBackoff == 0 {
		cfg.RestartBackoff = 10 * time.Millisecond
	}
	m := newManager(t, cfg)
	ctx := testCtx(t, 60*time.Second)
	tr, err := m.Transport(ctx, "loop")
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Client().Remote().DataChannel() {
		t.Fatal("the data channel is not in use")
	}
	if runtime.GOOS == "linux" && !tr.Client().DataRing() {
		t.Fatal("the data channel does not use its shared-memory rings")
	}
	ev := watch(t, tr)
	l, err := tr.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := echo(ctx, l, []byte("before")); err != nil {
		t.Fatal(err)
	}
	return m, tr, ev, l, &logBuf
}

// recovered checks that the plugin was restarted once, that the link it
// carried fails (not hangs), and that the new process serves.
func recovered(t *testing.T, tr *Transport, ev *events, old transport.Link) {
	t.Helper()
	got := ev.wait(t, Restarted)
	if len(got) != 2 || got[0].Kind != Crashed {
		t.Fatalf("events: %+v", got)
	}
	ctx := testCtx(t, 30*time.Second)
	if _, err := old.Recv(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("the old link's Recv: %v (ctx %v)", err, ctx.Err())
	}
	if err := old.Send(ctx, [][]byte{[]byte("x")}); err == nil || ctx.Err() != nil {
		t.Fatalf("the old link's Send: %v", err)
	}
	l, err := tr.Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := echo(ctx, l, []byte("after")); err != nil {
		t.Fatal(err)
	}
}

// A plugin that writes garbage, a frame claiming 4 GiB, or frames for ids
// that do not exist on its data channel is ended and restarted; the host
// never crashes, hangs or allocates the claimed size.
func TestBadDataChannelInputRestartsThePlugin(t *testing.T) {
	evils := []string{"garbage", "4gib", "unknown-id"}
	if runtime.GOOS == "linux" {
		// Impossible counts in the shared rings' header.
		evils = append(evils, "ring-counts")
	}
	for _, evil := range evils {
		t.Run(evil, func(t *testing.T) {
			_, tr, ev, l, logBuf := dataPlugin(t, Config{})
			ctx := testCtx(t, 30*time.Second)
			if el, err := tr.Dial(ctx, "evil:"+evil); err == nil {
				defer el.Close()
			}
			recovered(t, tr, ev, l)
			if !strings.Contains(logBuf.String(), "broke its data channel") {
				t.Errorf("no log line says why the plugin was ended:\n%s", logBuf.String())
			}
		})
	}
}

// A plugin that stops reading (here: stopped with SIGSTOP): the host's
// senders see backpressure, then an error once the stall timeout ends the
// plugin; nothing hangs, and the plugin comes back.
func TestStalledPluginIsRestarted(t *testing.T) {
	_, tr, ev, l, _ := dataPlugin(t, Config{DataStallTimeout: time.Second})
	pid := tr.Client().Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	ctx := testCtx(t, 30*time.Second)
	batch := make([][]byte, 16)
	for i := range batch {
		batch[i] = make([]byte, 64<<10)
	}
	var err error
	start := time.Now()
	for err == nil {
		err = l.Send(ctx, batch)
	}
	if ctx.Err() != nil {
		t.Fatalf("senders hung: %v", err)
	}
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("send to a stalled plugin: %v, want ErrUnavailable", err)
	}
	t.Logf("senders failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	recovered(t, tr, ev, l)
}

// A plugin killed in the middle of a stream of batches: senders and
// receivers fail with ErrUnavailable, nothing hangs, one restart follows.
func TestPluginKilledMidBatch(t *testing.T) {
	_, tr, ev, l, _ := dataPlugin(t, Config{})
	ctx := testCtx(t, 30*time.Second)
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = make([]byte, 16<<10)
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			if _, err := l.Recv(ctx); err != nil {
				recvErr <- err
				return
			}
		}
	}()
	sendErr := make(chan error, 1)
	go func() {
		for {
			if err := l.Send(ctx, batch); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond) // let batches flow; not a synchronisation
	if err := tr.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan error{sendErr, recvErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, transport.ErrUnavailable) {
				t.Errorf("after the kill: %v, want ErrUnavailable", err)
			}
		case <-ctx.Done():
			t.Fatal("a sender or receiver hung after the plugin was killed")
		}
	}
	recovered(t, tr, ev, l)
}

// The data channel's rings are used only when the plugin offers them too:
// a plugin without them (FERRY_TESTPLUGIN_NO_RING: as one built before
// them) keeps its data on the socketpair, and the host's rings are not
// used; FERRY_DATA_CHANNEL=socketpair keeps them off on the host's side.
func TestDataRingNegotiation(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shared-memory rings are Linux only")
	}
	for _, tc := range []struct {
		name string
		cfg  LaunchConfig
		ring bool
	}{
		{"both offer", LaunchConfig{}, true},
		{"plugin without rings", LaunchConfig{Env: []string{"FERRY_TESTPLUGIN_NO_RING=1"}}, false},
		{"host without rings", LaunchConfig{DataRingSize: -1}, false},
		{"small rings", LaunchConfig{DataRingSize: 4 << 10}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Path = pluginBin
			ctx := testCtx(t, 30*time.Second)
			c, err := Launch(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Kill)
			if !c.DataChannel() || c.DataRing() != tc.ring {
				t.Fatalf("data channel %v, rings %v; want rings %v", c.DataChannel(), c.DataRing(), tc.ring)
			}
			l, err := c.Transport().Dial(ctx, "echo")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			for _, n := range []int{1, 5000, 70000} {
				if err := echo(ctx, l, bytes.Repeat([]byte{7}, n)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
