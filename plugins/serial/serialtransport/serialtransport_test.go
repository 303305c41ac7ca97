package serialtransport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

func TestConformance(t *testing.T) {
	peers := &peerMap{}
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			tr := New()
			if err := tr.Configure(context.Background(), testSettings); err != nil {
				t.Fatal(err)
			}
			return crossed{tr, peers}
		},
		ListenAddressFunc: peers.listenAddressFunc,
		// A line carries one link at a time.
		Links:   1,
		Timeout: 30 * time.Second,
	})
}

func TestConfigureValidates(t *testing.T) {
	for _, bad := range []map[string]string{
		{"nope": "1"},
		{SettingBaudRate: "fast"},
		{SettingBaudRate: "0"},
		{SettingDataBits: "7"},
		{SettingParity: "sometimes"},
		{SettingStopBits: "3"},
		{SettingMaxFrameSize: "32"},
		{SettingMaxFrameSize: "70000"},
		{SettingMaxMessageSize: "0"},
		{SettingMaxMessageSize: fmt.Sprint(MaxMessageSize + 1)},
		{SettingHeartbeatInterval: "-1s"},
		{SettingHeartbeatInterval: "5s", SettingIdleTimeout: "6s"},
	} {
		if err := New().Configure(context.Background(), bad); err == nil {
			t.Errorf("Configure(%v) accepted", bad)
		}
	}
	ok := map[string]string{SettingBaudRate: "9600", SettingParity: "even", SettingStopBits: "2", SettingMaxFrameSize: "64"}
	if err := New().Configure(context.Background(), ok); err != nil {
		t.Errorf("Configure(%v): %v", ok, err)
	}
	info := New().Info()
	if !info.Unreliable || info.AddressType != "serial" || info.MaxMessageSize != MaxMessageSize {
		t.Errorf("Info: %+v", info)
	}
	for _, s := range info.Settings {
		if s.Default == "" {
			t.Errorf("setting %s documents no default", s.Name)
		}
	}
	defaults, err := transport.ParseSettings(settingsSchema(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig(defaults); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestListenMissingDevice(t *testing.T) {
	tr := newConfigured(t, testSettings)
	_, err := tr.Listen(testCtx(t), t.TempDir()+"/nope")
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Listen of a missing device: %v", err)
	}
	// Nothing is left claimed: the path can be tried again.
	if _, err := tr.Listen(testCtx(t), t.TempDir()+"/nope"); err == nil || strings.Contains(err.Error(), "already open") {
		t.Fatalf("second Listen: %v", err)
	}
}

func TestSameDeviceTwice(t *testing.T) {
	nm := newNullModem(t)
	tr := newConfigured(t, testSettings)
	ln, err := tr.Listen(testCtx(t), nm.Path(0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := tr.Dial(testCtx(t), nm.Path(0)); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("Dial of the listener's own device: %v", err)
	}
}

// Small frames: every packet above one frame is fragmented and reassembled.
func TestFragmentation(t *testing.T) {
	nm := newNullModem(t)
	s := withSettings(map[string]string{SettingMaxFrameSize: "64"})
	_, c, sv := pair(t, nm, newConfigured(t, s), newConfigured(t, s))
	ctx := testCtx(t)
	var sent [][]byte
	for _, n := range []int{0, 1, 39, 40, 41, 80, 1000, 70000} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		sent = append(sent, p)
	}
	if err := c.Send(ctx, sent); err != nil {
		t.Fatal(err)
	}
	got := recvAll(t, ctx, sv, len(sent))
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("packet %d (%d bytes) arrived as %d bytes", i, len(sent[i]), len(got[i]))
		}
	}
}

func recvAll(t testing.TB, ctx context.Context, l transport.Link, n int) [][]byte {
	t.Helper()
	var got [][]byte
	for len(got) < n {
		b, err := l.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv after %d of %d: %v", len(got), n, err)
		}
		for _, p := range b {
			got = append(got, append([]byte(nil), p...))
		}
	}
	return got
}

// A relay that flips bits, drops bytes and injects zeros between the two
// ends: whatever is delivered is intact (each packet carries its own
// checksum), the losses are counted, and the line keeps working.
func TestCorruptingLine(t *testing.T) {
	nm := newNullModem(t)
	s := withSettings(map[string]string{SettingMaxFrameSize: "256", SettingIdleTimeout: "10s"})
	srv, cli := newConfigured(t, s), newConfigured(t, s)
	_, c, sv := pair(t, nm, srv, cli)
	ctx := testCtx(t)

	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 8))
	var damaged int
	nm.SetFilter(func(from int, p []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		out := make([]byte, 0, len(p))
		for _, b := range p {
			switch r := rng.IntN(2000); {
			case r == 0:
				damaged++
				continue // dropped byte
			case r == 1:
				damaged++
				b ^= 1 << rng.IntN(8) // flipped bit
			case r == 2:
				damaged++
				out = append(out, 0) // a spurious delimiter
			}
			out = append(out, b)
		}
		return out
	})

	const n = 600
	mk := func(i int) []byte {
		size := 16 + i%3*300 // one, two and several frames
		p := make([]byte, size)
		copy(p, fmt.Sprintf("packet %06d ", i))
		for j := 14; j < size; j++ {
			p[j] = byte(i + j)
		}
		return p
	}
	sendErr := make(chan error, 1)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < n; i++ {
			if err := c.Send(ctx, [][]byte{mk(i)}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	last := -1
	got := 0
	for last < n-1 {
		allSent := false
		select {
		case <-sent:
			allSent = true
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		b, err := sv.Recv(rctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				if allSent {
					break // three seconds of silence after the last Send: the tail was lost
				}
				continue // silence while still sending: a loaded machine
			}
			t.Fatalf("Recv: %v", err)
		}
		for _, p := range b {
			var i int
			if _, err := fmt.Sscanf(string(p[:14]), "packet %06d ", &i); err != nil {
				t.Fatalf("damaged packet delivered: %q", p[:14])
			}
			if !bytes.Equal(p, mk(i)) {
				t.Fatalf("packet %d delivered damaged", i)
			}
			if i <= last {
				t.Fatalf("packet %d after %d: duplicated or reordered", i, last)
			}
			last = i
			got++
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	nm.SetFilter(nil)
	ctr := c.(transport.Counters).Counters()
	sctr := sv.(transport.Counters).Counters()
	mu.Lock()
	t.Logf("line damaged %d times; %d of %d packets delivered intact; receiver counters %v", damaged, got, n, sctr)
	mu.Unlock()
	if got == 0 || got == n {
		t.Fatalf("delivered %d of %d: the relay should lose some and deliver most", got, n)
	}
	dropped := sctr["crc_errors"] + sctr["bad_frames"] + sctr["oversized_frames"]
	if dropped == 0 || sctr["resyncs"] == 0 {
		t.Fatalf("damaged frames were not counted: %v", sctr)
	}
	if sctr["messages_in"] != uint64(got) || ctr["messages_out"] < n {
		t.Fatalf("messages_in %d (delivered %d), messages_out %d (sent %d)", sctr["messages_in"], got, ctr["messages_out"], n)
	}
	// The line still works once the noise stops.
	if err := c.Send(ctx, [][]byte{[]byte("after the storm")}); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := sv.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[len(b)-1]) == "after the storm" {
			break
		}
	}
}

// The far end restarts (a new transport opens the same device): the
// listener's old link ends with ErrPeerRestarted and Accept returns a new
// one; the new far end talks on a fresh session.
func TestFarEndRestarts(t *testing.T) {
	nm := newNullModem(t)
	srv := newConfigured(t, testSettings)
	cli := newConfigured(t, testSettings)
	ln, c, sv := pair(t, nm, srv, cli)
	ctx := testCtx(t)
	if err := c.Send(ctx, [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	recvAll(t, ctx, sv, 1)

	// Crash the dialling side: no close frame, its device just goes.
	cl := c.(*link).ln
	cl.shutdown(errors.New("crash"))

	cli2 := newConfigured(t, testSettings)
	c2, err := cli2.Dial(ctx, nm.Path(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sv2, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv2.Close()
	if _, err := sv.Recv(ctx); !errors.Is(err, ErrPeerRestarted) {
		t.Fatalf("old link after the far end restarted: %v, want ErrPeerRestarted", err)
	}
	if err := c2.Send(ctx, [][]byte{[]byte("two")}); err != nil {
		t.Fatal(err)
	}
	if got := recvAll(t, ctx, sv2, 1); string(got[0]) != "two" {
		t.Fatalf("got %q", got[0])
	}
	if err := sv2.Send(ctx, [][]byte{[]byte("back")}); err != nil {
		t.Fatal(err)
	}
	if got := recvAll(t, ctx, c2, 1); string(got[0]) != "back" {
		t.Fatalf("got %q", got[0])
	}

	// And the listening side restarts: the dialled link notices.
	_ = srv.Close()
	if _, err := c2.Recv(ctx); err == nil {
		t.Fatal("dialled link survived the listener's transport closing")
	}
	srv2 := newConfigured(t, testSettings)
	ln3, err := srv2.Listen(ctx, nm.Path(0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln3.Close()
	c3, err := cli2.Dial(ctx, nm.Path(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	sv3, err := ln3.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv3.Close()
	if err := c3.Send(ctx, [][]byte{[]byte("three")}); err != nil {
		t.Fatal(err)
	}
	if got := recvAll(t, ctx, sv3, 1); string(got[0]) != "three" {
		t.Fatalf("got %q", got[0])
	}
}

// A listening side that restarts while the dialled link is up: its
// announcement makes the dialled link end at once instead of after the idle
// timeout.
func TestListenerRestartResetsDialler(t *testing.T) {
	nm := newNullModem(t)
	s := withSettings(map[string]string{SettingIdleTimeout: "20s", SettingHeartbeatInterval: "5s"})
	srv := newConfigured(t, s)
	cli := newConfigured(t, s)
	_, c, _ := pair(t, nm, srv, cli)
	// Crash the listener's transport: no close frame.
	srv.mu.Lock()
	var lns []*listener
	for l := range srv.listeners {
		lns = append(lns, l)
	}
	srv.mu.Unlock()
	for _, l := range lns {
		l.mu.Lock()
		ln := l.cur
		l.closed = true
		l.mu.Unlock()
		ln.shutdown(errors.New("crash"))
	}
	srv2 := newConfigured(t, s)
	ctx := testCtx(t)
	eventually(t, 10*time.Second, "the device is free", func() bool {
		ln, err := srv2.Listen(ctx, nm.Path(0))
		if err != nil {
			return false
		}
		t.Cleanup(func() { _ = ln.Close() })
		return true
	})
	start := time.Now()
	_, err := c.Recv(ctx)
	if !errors.Is(err, ErrPeerRestarted) {
		t.Fatalf("dialled link: %v, want ErrPeerRestarted", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("noticed after %s", d)
	}
}

// The listener's device is unplugged: its link ends, the listener re-opens
// the device with backoff once it is back, and Accept returns a new link.
func TestDeviceUnpluggedAndBack(t *testing.T) {
	nm := newNullModem(t)
	srv := newConfigured(t, testSettings)
	cli := newConfigured(t, testSettings)
	ln, c, sv := pair(t, nm, srv, cli)
	ctx := testCtx(t)
	if err := c.Send(ctx, [][]byte{[]byte("before")}); err != nil {
		t.Fatal(err)
	}
	recvAll(t, ctx, sv, 1)

	nm.Unplug(0)
	if _, err := sv.Recv(ctx); !errors.Is(err, ErrDeviceGone) {
		t.Fatalf("Recv on an unplugged device: %v, want ErrDeviceGone", err)
	}
	lctr := ln.(transport.Counters)
	eventually(t, 10*time.Second, "failed re-open attempts", func() bool { return lctr.Counters()["open_failures"] >= 2 })
	// The dialled side's link ends too (idle, or the new session's hello).
	if _, err := c.Recv(ctx); err == nil {
		t.Fatal("dialled link survived its peer's device going away")
	}

	if err := nm.Plug(0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "re-opened", func() bool { return lctr.Counters()["opens"] >= 2 })
	c2, err := cli.Dial(ctx, nm.Path(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sv2, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv2.Close()
	if err := c2.Send(ctx, [][]byte{[]byte("after")}); err != nil {
		t.Fatal(err)
	}
	if got := recvAll(t, ctx, sv2, 1); string(got[0]) != "after" {
		t.Fatalf("got %q", got[0])
	}
}

// The dialled side's device goes away: its link ends with ErrDeviceGone and
// the listener's link ends (idle) so the listener is ready for the next.
func TestDialledDeviceUnplugged(t *testing.T) {
	nm := newNullModem(t)
	srv := newConfigured(t, testSettings)
	cli := newConfigured(t, testSettings)
	ln, c, sv := pair(t, nm, srv, cli)
	ctx := testCtx(t)
	nm.Unplug(1)
	if _, err := c.Recv(ctx); !errors.Is(err, ErrDeviceGone) {
		t.Fatalf("Recv: %v, want ErrDeviceGone", err)
	}
	if _, err := sv.Recv(ctx); !errors.Is(err, ErrIdle) {
		t.Fatalf("listener's link: %v, want ErrIdle", err)
	}
	if err := nm.Plug(1); err != nil {
		t.Fatal(err)
	}
	c2, err := cli.Dial(ctx, nm.Path(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sv2, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sv2.Close()
}

// A clean close is seen as io.EOF, and the listener takes the next dial.
func TestRedialAfterClose(t *testing.T) {
	nm := newNullModem(t)
	srv := newConfigured(t, testSettings)
	cli := newConfigured(t, testSettings)
	ln, c, sv := pair(t, nm, srv, cli)
	ctx := testCtx(t)
	for i := 0; i < 3; i++ {
		if err := c.Send(ctx, [][]byte{[]byte("x")}); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		recvAll(t, ctx, sv, 1)
		if _, err := sv.Recv(ctx); err != io.EOF {
			t.Fatalf("round %d: %v, want io.EOF", i, err)
		}
		var err error
		if c, err = cli.Dial(ctx, nm.Path(1)); err != nil {
			t.Fatal(err)
		}
		if sv, err = ln.Accept(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Close()
	_ = sv.Close()
}
