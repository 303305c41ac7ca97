package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/ferryhq/ferry/internal/pluginpb/transportv1"
)

// echoTransport dials links that are never used; enough for the server's
// own bookkeeping tests.
type echoTransport struct{}

func (echoTransport) Info() Info {
	return Info{Name: "echo", Version: "1", AddressType: "echo", MaxMessageSize: 10}
}
func (echoTransport) Configure(context.Context, map[string]string) error { return nil }
func (echoTransport) Listen(context.Context, string) (Listener, error) {
	return nil, errors.New("no listening")
}
func (echoTransport) Dial(context.Context, string) (Link, error) { return idleLink{}, nil }
func (echoTransport) Close() error                               { return nil }

type idleLink struct{}

func (idleLink) LocalAddr() string                      { return "l" }
func (idleLink) RemoteAddr() string                     { return "r" }
func (idleLink) Send(context.Context, [][]byte) error   { return nil }
func (idleLink) Recv(context.Context) ([][]byte, error) { return nil, ErrClosed }
func (idleLink) Close() error                           { return nil }

// A link whose stream the host never opens is closed by the plugin.
func TestUnclaimedLinkIsClosed(t *testing.T) {
	srv := newServer(echoTransport{}, nil)
	srv.unclaimed = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	li, err := srv.Dial(ctx, &pb.DialRequest{Address: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.mu.Lock()
		l := srv.links[li.LinkId]
		srv.mu.Unlock()
		if l == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unclaimed link kept")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestParseSettings(t *testing.T) {
	schema := []Setting{
		{Name: "n", Type: Int, Default: "3"},
		{Name: "d", Type: Duration, Required: true},
		{Name: "b", Type: Bool},
		{Name: "s", Type: String},
	}
	s, err := ParseSettings(schema, map[string]string{"d": "1.5s", "b": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Int("n") != 3 || s.Duration("d") != 1500*time.Millisecond || !s.Bool("b") || s.Has("s") || s.String("s") != "" {
		t.Fatalf("parsed %v", s.Raw())
	}
	for _, bad := range []map[string]string{
		{"d": "x"},             // not a duration
		{},                     // d required
		{"d": "1s", "n": "x"},  // not an int
		{"d": "1s", "zz": "1"}, // unknown
		{"d": "1s", "b": "maybe"},
	} {
		if _, err := ParseSettings(schema, bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
