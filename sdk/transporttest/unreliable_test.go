package transporttest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// The unreliable profile is checked the same way as the reliable one: TCP
// wrapped to behave like a lossy datagram transport (it says Unreliable,
// drops every 13th packet and swaps the first two of each batch) passes,
// and the same wrapper with one more defect fails the named subtest.

const lossyMax = 1 << 20

const (
	corrupt   defect = "corrupt"    // Send flips a byte of every 50th packet
	duplicate defect = "duplicate"  // Send sends the first packet of a batch twice
	loseAll   defect = "lose-all"   // Send drops every packet
	closeMute defect = "close-mute" // Recv reports a clean close as a plain error
	partial   defect = "partial"    // Send cuts packets above 64 KiB, as a broken reassembler would
)

func TestUnreliableSuiteCatchesDefects(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child test processes")
	}
	cases := []struct {
		d       defect
		subtest string
		want    string
	}{
		{corrupt, "Delivery", "content corrupted"},
		{duplicate, "Delivery", "delivered 2 times, sent 1"},
		{loseAll, "Delivery", "delivered 0 of 2000 packets"},
		{closeMute, "CloseNoticedByPeer", "want io.EOF"},
		{partial, "Sizes", "(a partial or merged packet)"},
		{swallowOversize, "Oversize", "want an error wrapping transport.ErrTooLarge"},
	}
	for _, tc := range cases {
		t.Run(string(tc.d), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestDefectiveUnreliable$/^"+tc.subtest+"$", "-test.v")
			cmd.Env = append(os.Environ(), envDefect+"="+string(tc.d))
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the unreliable profile passed a transport with defect %q:\n%s", tc.d, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestDefectiveUnreliable/"+tc.subtest) {
				t.Fatalf("subtest %s did not fail:\n%s", tc.subtest, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("failure does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestDefectiveUnreliable is the child side of TestUnreliableSuiteCatchesDefects.
func TestDefectiveUnreliable(t *testing.T) {
	d := defect(os.Getenv(envDefect))
	if d == "" {
		t.Skip("child process of TestUnreliableSuiteCatchesDefects")
	}
	transporttest.Run(t, lossyConfig(d))
}

// TestLossyPasses is the control: lossy and reordering, but no defect.
func TestLossyPasses(t *testing.T) {
	transporttest.Run(t, lossyConfig(""))
}

func lossyConfig(d defect) transporttest.Config {
	return transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			return &lossyTransport{Transport: tcptransport.New(), d: d}
		},
		ListenAddress: "127.0.0.1:0",
		Links:         8,
		// Every 13th packet is lost: about 92% arrive, 85% of echoes.
		MinDelivered: 0.9,
	}
}

type lossyTransport struct {
	transport.Transport
	d defect
}

func (l *lossyTransport) Info() transport.Info {
	i := l.Transport.Info()
	i.Unreliable = true
	i.MaxMessageSize = lossyMax
	return i
}

func (l *lossyTransport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	ln, err := l.Transport.Listen(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &lossyListener{Listener: ln, d: l.d}, nil
}

func (l *lossyTransport) Dial(ctx context.Context, addr string) (transport.Link, error) {
	c, err := l.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &lossyLink{Link: c, d: l.d}, nil
}

type lossyListener struct {
	transport.Listener
	d defect
}

func (l *lossyListener) Accept(ctx context.Context) (transport.Link, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return &lossyLink{Link: c, d: l.d}, nil
}

type lossyLink struct {
	transport.Link
	d defect
	n atomic.Uint64
}

func (l *lossyLink) Send(ctx context.Context, packets [][]byte) error {
	for _, p := range packets {
		if len(p) > lossyMax && l.d != swallowOversize {
			return fmt.Errorf("lossy: %d bytes: %w", len(p), transport.ErrTooLarge)
		}
	}
	var out [][]byte
	for i, p := range packets {
		n := l.n.Add(1)
		if n%13 == 0 || l.d == loseAll || len(p) > lossyMax {
			continue
		}
		switch {
		case l.d == corrupt && n%50 == 0 && len(p) > 0:
			p = append([]byte(nil), p...)
			p[len(p)-1] ^= 1
		case l.d == duplicate && i == 0:
			out = append(out, p)
		case l.d == partial && len(p) > 64<<10:
			p = p[:64<<10]
		}
		out = append(out, p)
	}
	if len(out) >= 2 {
		out[0], out[1] = out[1], out[0]
	}
	return l.Link.Send(ctx, out)
}

func (l *lossyLink) Recv(ctx context.Context) ([][]byte, error) {
	ps, err := l.Link.Recv(ctx)
	if err != nil && l.d == closeMute && ctx.Err() == nil {
		return ps, fmt.Errorf("link ended: %v", err)
	}
	return ps, err
}
