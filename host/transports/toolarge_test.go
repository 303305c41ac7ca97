package transports_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// lowLimit is below tcp's default max_message_size (16 MiB).
const lowLimit = 65536

var lowSettings = map[string]string{tcptransport.SettingMaxMessageSize: strconv.Itoa(lowLimit)}

// checkTooLarge requests an echo of a payload above the limit along r
// from n: the request must fail at once with a RemoteError from node
// reporter naming the size and the limit, and requests that fit must go
// through the same route afterwards.
func checkTooLarge(t *testing.T, n *node.Node, r routing.Route, reporter string, mention ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	start := time.Now()
	_, err := node.Request(ctx, n, r, strings.Repeat("x", lowLimit+1000))
	cancel()
	var re *node.RemoteError
	if !errors.As(err, &re) || re.Node != reporter || re.Code != node.CodeTooLarge || !errors.Is(err, routing.ErrTooLarge) {
		t.Fatalf("oversized request: got %v, want a RemoteError from %s with code %s matching routing.ErrTooLarge", err, reporter, node.CodeTooLarge)
	}
	for _, want := range append([]string{"message of", "exceeds", strconv.Itoa(lowLimit)}, mention...) {
		if !strings.Contains(re.Cause, want) {
			t.Errorf("cause %q does not mention %q", re.Cause, want)
		}
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("the error took %s", el)
	}
	t.Logf("oversized request: %v", err)
	// Nothing else is lost: the link is still up and carries what fits.
	request(t, n, r, "after the oversized one")
	request(t, n, r, strings.Repeat("y", lowLimit-512))
}

// TestConfiguredMaxMessageSizeInProcess: a tcp binding configured with a
// max_message_size below tcp's default refuses a larger message before it
// reaches the transport, tells the sender why and keeps the link.
func TestConfiguredMaxMessageSizeInProcess(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	ba, err := transports.Attach(a, newTCP(t), transports.Options{Settings: lowSettings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ba.Close() })
	bb := attach(t, b, newTCP(t))
	checkConfiguredPair(t, a, b, ba, bb)
}

// TestConfiguredMaxMessageSizePlugin is the same with the tcp plugin as a
// subprocess, where the plugin would otherwise break the link.
func TestConfiguredMaxMessageSizePlugin(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	pa := newPluginTCP(t)
	ba, err := transports.Attach(a, pa, transports.Options{Settings: lowSettings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ba.Close() })
	if got := pa.MaxMessageSize(); got != lowLimit {
		t.Errorf("plugin's MaxMessageSize = %d, want %d", got, lowLimit)
	}
	bb := attach(t, b, newPluginTCP(t))
	checkConfiguredPair(t, a, b, ba, bb)
}

func checkConfiguredPair(t *testing.T, a, b *node.Node, ba, bb *transports.Binding) {
	t.Helper()
	_, c, r := echoPath(t, b, bb, ba)
	request(t, a, r, "before")
	checkTooLarge(t, a, r, "a", "tcp transport's max_message_size", "setting max_message_size")
	cs := ba.Connections()
	if len(cs) != 1 || cs[0].ID != c.ID || !cs[0].Up {
		t.Fatalf("connections after the oversized message: %+v", cs)
	}
}

// limitedMem is the in-memory transport with a configured limit it reports
// through transport.MaxMessageSizer.
type limitedMem struct {
	*memTransport
	max int
}

func (l limitedMem) MaxMessageSize() int { return l.max }

// TestTooLargeErrorCrossesNodes: a message that fits every hop up to a
// node whose next link is configured smaller fails there, and the error
// travels back to the original sender on the other node.
func TestTooLargeErrorCrossesNodes(t *testing.T) {
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	ba, bbTCP := attach(t, a, newTCP(t)), attach(t, b, newTCP(t))
	mem := newMemNet()
	bbMem := attach(t, b, limitedMem{mem.transport(), lowLimit})
	bc := attach(t, c, mem.transport())
	if _, err := b.StartWorker("hop", services.Hop{}); err != nil {
		t.Fatal(err)
	}
	startEcho(t, c, "echoer")
	lc, err := bc.Listen(tctx(t), "c:0", "echoer")
	if err != nil {
		t.Fatal(err)
	}
	toC, err := bbMem.Connect(tctx(t), lc.Address)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := bbTCP.Listen(tctx(t), "127.0.0.1:0", "hop")
	if err != nil {
		t.Fatal(err)
	}
	toB, err := ba.Connect(tctx(t), lb.Address)
	if err != nil {
		t.Fatal(err)
	}
	r := route(t, toB.Worker, "/service/hop", toC.Worker, "/service/echoer")
	request(t, a, r, "before")
	checkTooLarge(t, a, r, "b", "mem transport's maximum message size")
}

// TestTooLargeForAnUnknownLimit: a transport configured by the caller
// before Attach (no settings given, no MaxMessageSizer) leaves the binding
// at the default limit; the transport's own refusal then drops only the
// oversized message, reports it back to its sender, and whatever was sent
// with it still arrives over the same link.
func TestTooLargeForAnUnknownLimit(t *testing.T) {
	a, b := newNode(t, "a"), newNode(t, "b")
	ta := newTCP(t)
	if err := ta.Configure(tctx(t), lowSettings); err != nil {
		t.Fatal(err)
	}
	ba, bb := attach(t, a, ta), attach(t, b, newTCP(t))
	_, c, r := echoPath(t, b, bb, ba)
	request(t, a, r, "before")
	// Small requests race the oversized one, so some share its batch.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("small %d", i)
			got, err := node.Request(tctx(t), a, r, want)
			if err == nil && got != want {
				err = fmt.Errorf("got %q, want %q", got, want)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	checkTooLarge(t, a, r, "a", "refused by the tcp transport", "65536")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a small request sent beside the oversized one: %v", err)
	}
	if cs := ba.Connections(); len(cs) != 1 || cs[0].ID != c.ID || !cs[0].Up {
		t.Fatalf("connections after the oversized message: %+v", cs)
	}
}
