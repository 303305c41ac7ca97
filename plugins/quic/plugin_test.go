package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/quic/internal/quictest"
	"github.com/ferryhq/ferry/plugins/quic/quictransport"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

func header(typ byte, n uint32) []byte {
	return []byte{quictransport.FrameVersion, typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// TestConformanceAsPlugin runs the conformance suite against the quic
// plugin binary, launched as a subprocess and driven over gRPC as a node
// does. RawDial is a real QUIC connection whose stream carries the suite's
// unframed bytes (QUIC has no raw byte stream below TLS); garbage UDP
// datagrams are sent in the quictransport tests.
func TestConformanceAsPlugin(t *testing.T) {
	p := plugintest.Build(t, ".")
	settings, fp := quictest.Settings(t)
	// The plugin binary is built without the race detector, so it keeps
	// the default maximum (and the host's Remote checks sizes against
	// Info().MaxMessageSize, which a lower setting would contradict).
	delete(settings, quictransport.SettingMaxMessageSize)
	p.Settings = settings
	transporttest.Run(t, transporttest.Config{
		New:           p.New,
		Kill:          p.Kill,
		ListenAddress: "127.0.0.1:0",
		Timeout:       30 * time.Second,
		RawDial:       quictest.RawDial(fp),
		BadInputs: []transporttest.BadInput{
			{Name: "4GiB_length", Bytes: header(1, 0xFFFFFFFF)},
			{Name: "good_then_bad", Bytes: append(append(header(1, 2), 'h', 'i'), 0, 0, 0)},
		},
	})
}

// TestKilledPeerNoticedWithinIdleTimeout kills a plugin process holding a
// link with SIGKILL (no close frame, no CONNECTION_CLOSE, no stateless
// reset: its socket is simply gone) and checks that the in-process end
// fails with ErrIdle within the idle timeout, both when it was the dialer
// and when it was the listener.
func TestKilledPeerNoticedWithinIdleTimeout(t *testing.T) {
	p := plugintest.Build(t, ".")
	settings, _ := quictest.Settings(t)
	settings[quictransport.SettingKeepAlive] = "300ms"
	settings[quictransport.SettingIdleTimeout] = "1500ms"
	p.Settings = settings
	for _, killed := range []string{"dialer", "listener"} {
		t.Run("killed_"+killed, func(t *testing.T) {
			local := quictransport.New(quictransport.WithLogger(hclog.NewNullLogger()))
			if err := local.Configure(context.Background(), settings); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = local.Close() })
			remote := p.New(t)
			srv, cli := transport.Transport(local), remote
			if killed == "listener" {
				srv, cli = remote, local
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ln, err := srv.Listen(ctx, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			c, s := transporttest.Pair(ctx, t, cli, ln, ln.Addr())
			localEnd := s
			if killed == "listener" {
				localEnd = c
			}
			// One message each way, so the link is known to work.
			if err := c.Send(ctx, [][]byte{[]byte("ping")}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Recv(ctx); err != nil || string(got[0]) != "ping" {
				t.Fatalf("got %q, %v", got, err)
			}
			p.Kill(t, remote)
			start := time.Now()
			_, err = localEnd.Recv(ctx)
			elapsed := time.Since(start)
			if !errors.Is(err, quictransport.ErrIdle) {
				t.Fatalf("Recv after the peer was killed: %v (after %s), want ErrIdle", err, elapsed)
			}
			t.Logf("noticed after %s: %v", elapsed.Round(time.Millisecond), err)
			// The idle timeout is 1.5s; allow for a loaded machine (the
			// check is that the idle timeout ends the link, not the
			// context).
			if elapsed > 1500*time.Millisecond+8*time.Second {
				t.Errorf("noticed after %s, idle timeout 1.5s", elapsed)
			}
			_ = localEnd.Close()
		})
	}
}
