package transportclient_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/host/plugins/transportclient"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// lowLimit is below tcp's default max_message_size (16 MiB).
const lowLimit = 65536

var lowSettings = map[string]string{tcptransport.SettingMaxMessageSize: strconv.Itoa(lowLimit)}

// checkConfiguredLimit sends a packet above the configured (not the
// default) max_message_size on a link of tr: the send must fail on the host
// side with ErrTooLarge naming the size and the limit, and the link must
// stay up and deliver the next packet.
func checkConfiguredLimit(t *testing.T, tr transport.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got := transport.EffectiveMaxMessageSize(tr, nil); got != lowLimit {
		t.Errorf("EffectiveMaxMessageSize = %d, want %d", got, lowLimit)
	}
	l, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan transport.Link, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			t.Errorf("accept: %v", err)
			close(accepted)
			return
		}
		accepted <- s
	}()
	c, err := tr.Dial(ctx, l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()

	big := bytes.Repeat([]byte{7}, lowLimit+1000)
	err = c.Send(ctx, [][]byte{big})
	if !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Send of %d bytes with max_message_size=%d: got %v, want an error wrapping transport.ErrTooLarge", len(big), lowLimit, err)
	}
	for _, want := range []string{strconv.Itoa(len(big)), strconv.Itoa(lowLimit), "max_message_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("oversized send: %v", err)
	if err := s.Send(ctx, [][]byte{big}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("accepted side: Send of %d bytes: got %v, want transport.ErrTooLarge", len(big), err)
	}

	// The link is still up and loses nothing that fits.
	fits := bytes.Repeat([]byte{9}, lowLimit)
	if err := c.Send(ctx, [][]byte{[]byte("after"), fits}); err != nil {
		t.Fatalf("Send after ErrTooLarge: %v (the link must stay up)", err)
	}
	var got [][]byte
	for len(got) < 2 {
		ps, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv after ErrTooLarge: %v (the link must stay up)", err)
		}
		for _, p := range ps {
			got = append(got, bytes.Clone(p))
		}
	}
	if len(got) != 2 || string(got[0]) != "after" || !bytes.Equal(got[1], fits) {
		t.Fatalf("after ErrTooLarge: got %d packets (first %q), want \"after\" and %d bytes", len(got), got[0][:min(len(got[0]), 16)], len(fits))
	}
}

func TestConfiguredMaxMessageSizeInProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []transportclient.InProcessOption
	}{
		{"data_channel", nil},
		{"grpc_streams", []transportclient.InProcessOption{transportclient.GRPCStreams()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, stop, err := transportclient.ServeInProcess(ctx, tcptransport.New(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			if err := r.Configure(ctx, lowSettings); err != nil {
				t.Fatal(err)
			}
			checkConfiguredLimit(t, r)
		})
	}
}

// TestConfiguredMaxMessageSizeDirect is the same check without a plugin
// boundary: the transport itself refuses.
func TestConfiguredMaxMessageSizeDirect(t *testing.T) {
	tr := tcptransport.New()
	defer tr.Close()
	if err := tr.Configure(context.Background(), lowSettings); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := tr.Dial(ctx, l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(ctx, [][]byte{make([]byte, lowLimit+1)}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if got := transport.EffectiveMaxMessageSize(tr, lowSettings); got != lowLimit {
		t.Fatalf("EffectiveMaxMessageSize = %d, want %d", got, lowLimit)
	}
}

func TestConfiguredMaxMessageSizeSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tcp plugin")
	}
	p := plugintest.Build(t, "github.com/ferryhq/ferry/plugins/tcp")
	p.Settings = lowSettings
	t.Run("data_channel", func(t *testing.T) { checkConfiguredLimit(t, p.New(t)) })
	t.Run("grpc_streams", func(t *testing.T) {
		q := &plugintest.Plugin{Path: p.Path, Settings: lowSettings, DisableDataChannel: true}
		checkConfiguredLimit(t, q.New(t))
	})
}
