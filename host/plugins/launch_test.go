package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

func launch(t *testing.T, env ...string) *Client {
	t.Helper()
	c, err := Launch(testCtx(t, 20*time.Second), LaunchConfig{Path: pluginBin, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}

func TestLaunchHandshakeAndEchoBatches(t *testing.T) {
	c := launch(t)
	info := c.Transport().Info()
	if info.Name != "testplugin" || info.Version != "0.0.1-test" || info.AddressType != "loop" {
		t.Fatalf("info = %+v", info)
	}
	if c.Remote().ProtocolMinor() != transport.ProtocolMinor || c.Pid() <= 0 || c.Pid() == os.Getpid() {
		t.Fatalf("minor %d pid %d", c.Remote().ProtocolMinor(), c.Pid())
	}
	ctx := testCtx(t, 20*time.Second)
	if err := c.Transport().Configure(ctx, map[string]string{"greeting": "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Transport().Configure(ctx, map[string]string{"fail": "on purpose"}); err == nil || !strings.Contains(err.Error(), "on purpose") {
		t.Fatalf("configure error did not cross the boundary: %v", err)
	}
	// Raw writes to descriptor 1 after the handshake reach the host's
	// stderr capture instead of the handshake pipe.
	if err := c.Transport().Configure(ctx, map[string]string{"raw_stdout": "raw write to fd 1"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(strings.Join(c.Stderr(), "\n"), "raw write to fd 1"); {
		if time.Now().After(deadline) {
			t.Fatalf("raw stdout write not redirected to stderr; stderr: %q", c.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
	link, err := c.Transport().Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()

	// Sizes from empty to well above one frame, in batches of varied length.
	var want [][]byte
	sizes := []int{0, 1, 63, 64, 1000, 70000, 0, 5, 300000}
	seq := 0
	for round := range 20 {
		var batch [][]byte
		for i := range round%7 + 1 {
			p := bytes.Repeat([]byte{byte(seq)}, sizes[(round+i)%len(sizes)])
			p = append(p, fmt.Sprint(seq)...)
			seq++
			batch = append(batch, p)
		}
		want = append(want, batch...)
		if err := link.Send(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]byte
	for len(got) < len(want) {
		ps, err := link.Recv(ctx)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(got), err)
		}
		for _, p := range ps {
			got = append(got, bytes.Clone(p))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("packet %d differs (len %d vs %d)", i, len(got[i]), len(want[i]))
		}
	}
}

// The plugin's gRPC limit follows the transport's maximum, not gRPC's
// default 4 MiB, and a packet over the maximum is refused, not a crash.
func TestLargePacketsAndOversize(t *testing.T) {
	const max = 6 << 20
	c := launch(t, fmt.Sprintf("FERRY_LOOP_MAX=%d", max))
	ctx := testCtx(t, 30*time.Second)
	link, err := c.Transport().Dial(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	big := bytes.Repeat([]byte("z"), max)
	if err := link.Send(ctx, [][]byte{big}); err != nil {
		t.Fatal(err)
	}
	ps, err := link.Recv(ctx)
	if err != nil || len(ps) != 1 || !bytes.Equal(ps[0], big) {
		t.Fatalf("6 MiB packet: %v (%d packets)", err, len(ps))
	}
	err = link.Send(ctx, [][]byte{[]byte("ok"), make([]byte, max+1)})
	if !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("oversize: got %v, want ErrTooLarge", err)
	}
	// Nothing of the refused call was sent and the link still works.
	if err := link.Send(ctx, [][]byte{[]byte("after")}); err != nil {
		t.Fatal(err)
	}
	ps, err = link.Recv(ctx)
	if err != nil || len(ps) != 1 || string(ps[0]) != "after" {
		t.Fatalf("after oversize: %v %q", err, ps)
	}
}

func TestListenAcceptAndClose(t *testing.T) {
	c := launch(t)
	ctx := testCtx(t, 20*time.Second)
	tr := c.Transport()
	ln, err := tr.Listen(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr() != "svc" {
		t.Fatalf("addr %q", ln.Addr())
	}
	if _, err := tr.Listen(ctx, "svc"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen: %v", err)
	}
	type res struct {
		l   transport.Link
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		l, err := ln.Accept(ctx)
		accepted <- res{l, err}
	}()
	d, err := tr.Dial(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	a := r.l
	if err := d.Send(ctx, [][]byte{[]byte("ping")}); err != nil {
		t.Fatal(err)
	}
	ps, err := a.Recv(ctx)
	if err != nil || string(ps[0]) != "ping" {
		t.Fatalf("%v %q", err, ps)
	}
	if err := a.Send(ctx, [][]byte{[]byte("pong")}); err != nil {
		t.Fatal(err)
	}
	ps, err = d.Recv(ctx)
	if err != nil || string(ps[0]) != "pong" {
		t.Fatalf("%v %q", err, ps)
	}
	// Data sent just before Close still arrives, then the peer sees EOF.
	if err := d.Send(ctx, [][]byte{[]byte("last")}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	ps, err = a.Recv(ctx)
	if err != nil || string(ps[0]) != "last" {
		t.Fatalf("last: %v %q", err, ps)
	}
	if _, err := a.Recv(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after peer close: got %v, want io.EOF", err)
	}
	if err := d.Send(ctx, [][]byte{[]byte("x")}); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	a.Close()
	ln.Close()
	if _, err := ln.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
	// Everything was released inside the plugin.
	deadline := time.Now().Add(10 * time.Second)
	for {
		nl, nk, err := c.Remote().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if nl == 0 && nk == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin still holds %d listeners, %d links", nl, nk)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A reader that does not read slows the writer: Send blocks (and honours
// its context) instead of buffering without bound.
func TestBackpressure(t *testing.T) {
	c := launch(t)
	ctx := testCtx(t, 30*time.Second)
	ln, err := c.Transport().Listen(ctx, "bp")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan transport.Link, 1)
	go func() {
		l, err := ln.Accept(ctx)
		if err == nil {
			accepted <- l
		}
	}()
	d, err := c.Transport().Dial(ctx, "bp")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var a transport.Link
	select {
	case a = <-accepted:
	case <-ctx.Done():
		t.Fatal("accept timed out")
	}
	defer a.Close()
	chunk := [][]byte{make([]byte, 64<<10)}
	sent := 0
	blocked := false
	for sent < 4096 { // 256 MiB: far beyond every window and queue
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := d.Send(sctx, chunk)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			blocked = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
	}
	if !blocked {
		t.Fatalf("sent %d × 64 KiB without the writer ever blocking", sent)
	}
	t.Logf("writer blocked after %d × 64 KiB", sent)
	// The link survived the cancelled Send: everything arrives in order.
	got := 0
	for got < sent {
		ps, err := a.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got += len(ps)
	}
	if err := d.Send(ctx, [][]byte{[]byte("end")}); err != nil {
		t.Fatal(err)
	}
	ps, err := a.Recv(ctx)
	if err != nil || string(ps[len(ps)-1]) != "end" {
		t.Fatalf("after draining: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	good := install(t, dir, "good", 0o755)
	noexec := install(t, dir, "noexec", 0o644)
	noisy := install(t, dir, "noisy", 0o755)
	silent := install(t, dir, "silent", 0o755)
	sum, err := fileSHA256(good)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("ab", 32)
	cases := []struct {
		name string
		cfg  LaunchConfig
		want []string
	}{
		{"missing", LaunchConfig{Path: dir + "/nope"}, []string{"plugin nope", "does not exist", "make build"}},
		{"not executable", LaunchConfig{Path: noexec}, []string{"plugin noexec", "not executable", "chmod +x"}},
		{"bad checksum", LaunchConfig{Path: good, SHA256: wrong}, []string{"plugin good", sum, wrong, "update the pin"}},
		{"stdout noise", LaunchConfig{Path: noisy}, []string{"plugin noisy", "handshake failed", "hello from a plugin", "stdout"}},
		{"never answers", LaunchConfig{Path: silent, StartTimeout: time.Second}, []string{"plugin silent", "never answered", "transport.Serve"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := Launch(testCtx(t, 20*time.Second), tc.cfg)
			if err == nil {
				c.Kill()
				t.Fatal("launch succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			t.Logf("%s (%s)", msg, time.Since(start).Round(time.Millisecond))
		})
	}
	// The right pin passes.
	c, err := Launch(testCtx(t, 20*time.Second), LaunchConfig{Path: good, SHA256: strings.ToUpper(sum)})
	if err != nil {
		t.Fatal(err)
	}
	c.Kill()
}

// A host killed with SIGKILL takes its plugin with it: through the
// parent-death signal, and through Serve's parent check alone.
func TestPluginDiesWithHost(t *testing.T) {
	t.Run("death signal", func(t *testing.T) { testPluginDiesWithHost(t, false) })
	t.Run("parent check only", func(t *testing.T) { testPluginDiesWithHost(t, true) })
}

func testPluginDiesWithHost(t *testing.T, parentCheckOnly bool) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	// The helper host is killed, so it cannot remove its plugin's socket
	// directory: give it a temp directory the test removes.
	cmd.Env = append(os.Environ(), "FERRY_TEST_HOST_HELPER="+pluginBin, "TMPDIR="+t.TempDir())
	if parentCheckOnly {
		cmd.Env = append(cmd.Env, "FERRY_TEST_NO_DEATH_SIGNAL=1")
	}
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
	if !alive(pid) {
		t.Fatalf("plugin %d not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d outlived its host by 5s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// Field 3, after the parenthesised command name, is the state.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
