package transporttest_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// The suite must fail transports that break the contract. Each case runs
// the suite in a child test process against the TCP transport wrapped with
// one defect and checks that the named subtest fails (and only reports
// what it should).

// defect names one way a wrapper breaks the contract.
type defect string

const (
	swallowOversize defect = "swallow-oversize"  // Send drops oversize packets and returns nil
	reorder         defect = "reorder"           // Send swaps the first two packets of a batch
	errorsAsEOF     defect = "errors-as-eof"     // Recv reports every failure as a clean close
	acceptNotClosed defect = "accept-not-closed" // Accept after Close returns a plain error
	truncate        defect = "truncate"          // Send cuts packets above 1 MiB
)

const envDefect = "TRANSPORTTEST_DEFECT"

func TestSuiteCatchesDefects(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child test processes")
	}
	cases := []struct {
		d       defect
		subtest string
		want    string
	}{
		{swallowOversize, "Oversize", "want an error wrapping transport.ErrTooLarge"},
		{reorder, "InOrder", "packet 1/0: got"},
		{errorsAsEOF, "BadBytes", "reported as a clean close"},
		{acceptNotClosed, "ListenerClose", "want transport.ErrClosed"},
		{truncate, "Sizes", "got 1048576 bytes"},
	}
	for _, tc := range cases {
		t.Run(string(tc.d), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestDefectiveTransport$/^"+tc.subtest+"$", "-test.v")
			cmd.Env = append(os.Environ(), envDefect+"="+string(tc.d))
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a transport with defect %q:\n%s", tc.d, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestDefectiveTransport/"+tc.subtest) {
				t.Fatalf("subtest %s did not fail:\n%s", tc.subtest, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("failure does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestDefectiveTransport is the child side of TestSuiteCatchesDefects.
func TestDefectiveTransport(t *testing.T) {
	d := defect(os.Getenv(envDefect))
	if d == "" {
		t.Skip("child process of TestSuiteCatchesDefects")
	}
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			return &badTransport{Transport: tcptransport.New(), d: d}
		},
		ListenAddress: "127.0.0.1:0",
		RawDial:       func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
	})
}

// TestTCPPasses is the control: the same wrapper without a defect passes.
func TestTCPPasses(t *testing.T) {
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			return &badTransport{Transport: tcptransport.New()}
		},
		ListenAddress: "127.0.0.1:0",
		RawDial:       func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
		Skip:          map[string]string{"Sizes": "covered in plugins/tcp", "BothDirections": "covered in plugins/tcp"},
	})
}

type badTransport struct {
	transport.Transport
	d defect
}

func (b *badTransport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	l, err := b.Transport.Listen(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &badListener{Listener: l, d: b.d}, nil
}

func (b *badTransport) Dial(ctx context.Context, addr string) (transport.Link, error) {
	l, err := b.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &badLink{Link: l, d: b.d}, nil
}

type badListener struct {
	transport.Listener
	d defect
}

func (b *badListener) Accept(ctx context.Context) (transport.Link, error) {
	l, err := b.Listener.Accept(ctx)
	if err != nil {
		if b.d == acceptNotClosed && errors.Is(err, transport.ErrClosed) {
			return nil, errors.New("listener is gone")
		}
		return nil, err
	}
	return &badLink{Link: l, d: b.d}, nil
}

type badLink struct {
	transport.Link
	d defect
}

func (b *badLink) Send(ctx context.Context, packets [][]byte) error {
	switch b.d {
	case swallowOversize:
		kept := packets[:0:0]
		for _, p := range packets {
			if len(p) <= 16<<20 {
				kept = append(kept, p)
			}
		}
		packets = kept
	case reorder:
		if len(packets) >= 2 {
			packets = append([][]byte{packets[1], packets[0]}, packets[2:]...)
		}
	case truncate:
		cut := make([][]byte, len(packets))
		for i, p := range packets {
			cut[i] = p[:min(len(p), 1<<20)]
		}
		packets = cut
	}
	return b.Link.Send(ctx, packets)
}

func (b *badLink) Recv(ctx context.Context) ([][]byte, error) {
	ps, err := b.Link.Recv(ctx)
	if err != nil && b.d == errorsAsEOF && ctx.Err() == nil {
		return nil, io.EOF
	}
	return ps, err
}
