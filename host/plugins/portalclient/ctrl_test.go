package portalclient_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins/portalclient"
	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/sdk/portal"
)

// fakePlugin is the plugin's end of a data channel whose control stream a
// test drives by hand: answer gets every control request the host sends
// and writes what it returns (nil: nothing).
func fakePlugin(t *testing.T, answer func(ms *pluginwire.MuxStream, m pluginwire.CtrlMsg) []byte) (*portalclient.Remote, *pluginwire.Mux, chan uint64) {
	t.Helper()
	host, child, err := pluginwire.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.FileConn(child)
	child.Close()
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan uint64, 16)
	var plug *pluginwire.Mux
	cfg := pluginwire.PortalMuxConfig()
	cfg.OnOpen = func(id uint64) {
		ms, err := plug.Open(id)
		if err != nil {
			return
		}
		if id != pluginwire.PortalCtrlID {
			opened <- id
			return
		}
		go func() {
			for {
				p, err := ms.Read(context.Background())
				if err != nil {
					return
				}
				m, err := pluginwire.DecodeCtrl(p)
				if err != nil {
					t.Errorf("host sent a bad control message: %v", err)
					return
				}
				if b := answer(ms, m); b != nil {
					ms.WriteFrame(context.Background(), len(b), func(p []byte) { copy(p, b) })
				}
			}
		}()
	}
	plug = pluginwire.NewMux(pc, cfg)
	hm := pluginwire.NewMux(host, pluginwire.PortalMuxConfig())
	t.Cleanup(func() { hm.Close(); plug.Close() })
	hello := &pluginv1.HelloResponse{Kind: pluginv1.Kind_KIND_PORTAL, Name: "fake", ProtocolMajor: 1, ProtocolMinor: pluginwire.PortalCtrlMinor, Portal: &pluginv1.PortalDetails{Protocol: "tcp"}}
	r, err := portalclient.NewWithData(nil, hello, hm)
	if err != nil {
		t.Fatal(err)
	}
	return r, hm, opened
}

// A plugin that answers on the control stream with garbage breaks the
// protocol: the channel fails (the plugin is restarted) and the caller
// gets ErrUnavailable instead of waiting.
func TestCtrlGarbageFailsTheChannel(t *testing.T) {
	r, hm, _ := fakePlugin(t, func(_ *pluginwire.MuxStream, m pluginwire.CtrlMsg) []byte {
		return []byte{0xff, 1, 2}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Dial(ctx, "127.0.0.1:1"); !errors.Is(err, portal.ErrUnavailable) {
		t.Fatalf("dial: %v, want ErrUnavailable", err)
	}
	if err := hm.Err(); !errors.Is(err, pluginwire.ErrProtocol) {
		t.Fatalf("channel: %v, want a protocol violation", err)
	}
}

// An answer that comes after its caller gave up is not lost in the
// plugin: the host opens the stream it names and closes it at once.
func TestCtrlLateAnswerIsClosed(t *testing.T) {
	release := make(chan struct{})
	r, _, opened := fakePlugin(t, func(ms *pluginwire.MuxStream, m pluginwire.CtrlMsg) []byte {
		switch m.Op {
		case pluginwire.CtrlDial:
			go func() {
				<-release
				b := (&pluginwire.CtrlMsg{Op: pluginwire.CtrlStream, Req: m.Req, Stream: 42}).Append(nil)
				ms.WriteFrame(context.Background(), len(b), func(p []byte) { copy(p, b) })
			}()
		case pluginwire.CtrlCancel:
			close(release) // answer anyway, as a dial finishing just then would
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := r.Dial(ctx, "127.0.0.1:1"); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("dial: %v, want context.Canceled", err)
	}
	select {
	case id := <-opened:
		if id != 42 {
			t.Fatalf("host opened stream %d, want 42", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the late answer's stream was never opened (and closed)")
	}
}

// A dial failure says why, as the gRPC call's does.
func TestCtrlDialFailure(t *testing.T) {
	r, _, _ := fakePlugin(t, func(_ *pluginwire.MuxStream, m pluginwire.CtrlMsg) []byte {
		return (&pluginwire.CtrlMsg{Op: pluginwire.CtrlFail, Req: m.Req, Code: pluginwire.CtrlFailed, Text: "connection refused"}).Append(nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.Dial(ctx, "127.0.0.1:1")
	if err == nil || errors.Is(err, portal.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("dial: %v, want the plugin's reason", err)
	}
}
