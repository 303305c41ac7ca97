package tcptransport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

func rawDial(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }

func header(typ byte, n uint32) []byte {
	return []byte{FrameVersion, typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			tr := New()
			// Short idle timeout so bad input that parses as an incomplete
			// frame is still noticed quickly.
			if err := tr.Configure(context.Background(), map[string]string{
				SettingHeartbeatInterval: "200ms",
				SettingIdleTimeout:       "2s",
			}); err != nil {
				t.Fatal(err)
			}
			return tr
		},
		ListenAddress: "127.0.0.1:0",
		RawDial:       rawDial,
		BadInputs: []transporttest.BadInput{
			{Name: "4GiB_length", Bytes: header(frameData, 0xFFFFFFFF)},
			{Name: "max_plus_one", Bytes: header(frameData, 16<<20+1)},
			{Name: "wrong_version", Bytes: append([]byte{2}, header(frameData, 3)[1:]...)},
			{Name: "unknown_type", Bytes: header(9, 0)},
			{Name: "heartbeat_with_payload", Bytes: append(header(frameHeartbeat, 1), 0)},
			{Name: "http", Bytes: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
			{Name: "good_then_bad", Bytes: append(append(header(frameData, 2), 'h', 'i'), 0, 0, 0)},
		},
	})
}

// pair returns two connected links with the given settings on both sides.
func pair(t testing.TB, settings map[string]string) (client, server transport.Link, srv transport.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	srv = New()
	cli := New()
	for _, tr := range []transport.Transport{srv, cli} {
		if err := tr.Configure(ctx, settings); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
	}
	ln, err := srv.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client, server = transporttest.Pair(ctx, t, cli, ln, ln.Addr())
	return client, server, srv
}

// rawLink accepts a raw TCP connection on a transport listener.
func rawLink(t testing.TB, settings map[string]string) (net.Conn, transport.Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	srv := New()
	if err := srv.Configure(ctx, settings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ln, err := srv.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	l, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return raw, l
}

func TestStallMidFrameClosedByIdleTimeout(t *testing.T) {
	raw, l := rawLink(t, map[string]string{SettingHeartbeatInterval: "50ms", SettingIdleTimeout: "300ms"})
	// A header promising 1000 bytes, then only 10 of them, then silence.
	if _, err := raw.Write(append(header(frameData, 1000), make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := l.Recv(ctx)
	if !errors.Is(err, ErrIdle) {
		t.Fatalf("Recv on a stalled connection: got %v, want ErrIdle", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("idle timeout fired after %s, before the configured 300ms", el)
	}
	// And the connection was closed.
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for {
		if _, err := raw.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("stalled connection not closed")
			}
			break
		}
	}
}

func TestHeartbeatsKeepQuietLinkAlive(t *testing.T) {
	// Generous margins: on a loaded machine goroutines can be descheduled
	// for hundreds of milliseconds (an 800 ms idle timeout left 650 ms).
	c, s, _ := pair(t, map[string]string{SettingHeartbeatInterval: "200ms", SettingIdleTimeout: "2s"})
	// No data for longer than the idle timeout: heartbeats must keep both
	// ends up.
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if _, err := s.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("quiet link: Recv got %v, want only the context deadline", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := c.Send(ctx2, [][]byte{[]byte("still here")}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Recv(ctx2)
	if err != nil || len(b) != 1 || string(b[0]) != "still here" {
		t.Fatalf("after a quiet period: got %q, %v", b, err)
	}
}

func TestBadBytesErrorIsClear(t *testing.T) {
	cases := []struct {
		name  string
		bytes []byte
		want  string
	}{
		{"4GiB", header(frameData, 0xFFFFFFFF), "exceeds the maximum message size"},
		{"version", []byte{7, 1, 0, 0, 0, 0}, "version byte 7"},
		{"type", header(42, 0), "unknown frame type 42"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, l := rawLink(t, nil)
			if _, err := raw.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := l.Recv(ctx)
			if !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrBadFrame mentioning %q", err, tc.want)
			}
			// Sticky: the link stays failed.
			if _, err2 := l.Recv(ctx); err2 == nil {
				t.Fatal("second Recv after bad bytes succeeded")
			}
		})
	}
}

func TestFramesBeforeBadBytesAreDelivered(t *testing.T) {
	raw, l := rawLink(t, nil)
	msg := append(header(frameData, 5), "hello"...)
	msg = append(msg, header(77, 0)...)
	if _, err := raw.Write(msg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	var err error
	for err == nil {
		var b [][]byte
		b, err = l.Recv(ctx)
		for _, p := range b {
			got = append(got, string(p))
		}
	}
	if len(got) != 1 || got[0] != "hello" || !errors.Is(err, ErrBadFrame) {
		t.Fatalf("got %q then %v; want [hello] then ErrBadFrame", got, err)
	}
}

func TestPeerVanishedIsNotEOF(t *testing.T) {
	raw, l := rawLink(t, nil)
	if _, err := raw.Write(append(header(frameData, 1), 'x')); err != nil {
		t.Fatal(err)
	}
	_ = raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := l.Recv(ctx)
	if err != nil || len(b) != 1 {
		t.Fatalf("first Recv: %q %v", b, err)
	}
	_, err = l.Recv(ctx)
	if err == io.EOF || !errors.Is(err, ErrPeerVanished) {
		t.Fatalf("got %v, want ErrPeerVanished (not io.EOF)", err)
	}
}

func TestRecvBatchesBufferedFrames(t *testing.T) {
	raw, l := rawLink(t, nil)
	var msg []byte
	for i := 0; i < 100; i++ {
		msg = append(msg, header(frameData, 1)...)
		msg = append(msg, byte(i))
	}
	if _, err := raw.Write(msg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, batches := 0, 0
	for n < 100 {
		b, err := l.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range b {
			if p[0] != byte(n) {
				t.Fatalf("packet %d carries %d", n, p[0])
			}
			n++
		}
		batches++
	}
	// 606 bytes written at once arrive together on loopback; a reader that
	// returned one frame per call would need 100 calls.
	if batches > 10 {
		t.Errorf("100 small buffered frames took %d Recv calls", batches)
	}
}

func TestSendOversizeKeepsLink(t *testing.T) {
	c, s, _ := pair(t, map[string]string{SettingMaxMessageSize: "1000"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Send(ctx, [][]byte{[]byte("a"), make([]byte, 1001)})
	if !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if err := c.Send(ctx, [][]byte{[]byte("b")}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Recv(ctx)
	if err != nil || len(b) != 1 || string(b[0]) != "b" {
		t.Fatalf("got %q %v, want only [b] (nothing of the refused batch)", b, err)
	}
}

func TestSendContextCancelledOnFullSocket(t *testing.T) {
	c, _, _ := pair(t, nil)
	// Nobody reads the server side: one batch far larger than the socket
	// buffers blocks mid-write until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	big := make([]byte, 1<<20)
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = big
	}
	err := c.Send(ctx, batch)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send on a full socket: got %v, want the context's error", err)
	}
	// A frame may have been cut: the link is closed, not silently corrupt.
	if err := c.Send(context.Background(), [][]byte{{1}}); err == nil {
		t.Fatal("Send after an interrupted Send succeeded on a possibly corrupt stream")
	}
}

func TestConfigure(t *testing.T) {
	ctx := context.Background()
	bad := []struct {
		settings map[string]string
		want     string
	}{
		{map[string]string{"nope": "1"}, `unknown setting "nope"`},
		{map[string]string{SettingMaxMessageSize: "big"}, "max_message_size"},
		{map[string]string{SettingMaxMessageSize: "0"}, "between"},
		{map[string]string{SettingMaxMessageSize: "16777217"}, "between"},
		{map[string]string{SettingIdleTimeout: "1s", SettingHeartbeatInterval: "1s"}, "at least twice"},
		{map[string]string{SettingDialTimeout: "-1s"}, "positive"},
	}
	for _, b := range bad {
		err := New().Configure(ctx, b.settings)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Configure(%v): got %v, want an error mentioning %q", b.settings, err, b.want)
		}
	}
	if err := New().Configure(ctx, map[string]string{SettingMaxMessageSize: "1024", SettingDialTimeout: "1s"}); err != nil {
		t.Fatal(err)
	}
	// Every declared setting is accepted with its default.
	tr := New()
	defaults := map[string]string{}
	for _, s := range tr.Info().Settings {
		defaults[s.Name] = s.Default
	}
	if err := tr.Configure(ctx, defaults); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
}

func TestDialTimeoutAndContext(t *testing.T) {
	tr := New()
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Dial(ctx, "127.0.0.1:1"); err == nil {
		t.Fatal("Dial with a cancelled context succeeded")
	}
	if _, err := tr.Dial(context.Background(), "not an address"); err == nil || !strings.Contains(err.Error(), "not an address") {
		t.Fatalf("Dial of a bad address: %v, want an error naming it", err)
	}
}

func TestTransportCloseRefusesNewWork(t *testing.T) {
	tr := New()
	_ = tr.Close()
	ctx := context.Background()
	if _, err := tr.Listen(ctx, "127.0.0.1:0"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Listen after Close: %v", err)
	}
	if _, err := tr.Dial(ctx, "127.0.0.1:1"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
}
