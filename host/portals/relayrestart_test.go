package portals

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

func relayTestNode(t *testing.T, name string) (*node.Node, *transports.Binding) {
	t.Helper()
	n, _ := newNode(t, name)
	tr := tcptransport.New()
	b, err := transports.Attach(n, tr, transports.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(); tr.Close() })
	return n, b
}

// The relay node in the middle of a download restarts (a new process knows
// none of the old link ids): the session pauses, the inlet finds the outlet
// session again through the configured route, the outlet follows, and the
// download completes with nothing lost or repeated.
func TestSessionSurvivesRelayRestart(t *testing.T) {
	checkLeaks(t)
	target := startTarget(t)
	n1, b1 := relayTestNode(t, "n1")
	n3, _ := relayTestNode(t, "n3")
	n2, b2 := relayTestNode(t, "n2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := relays.StartService(n2, relays.ServiceConfig{}); err != nil {
		t.Fatal(err)
	}
	l, err := b2.Listen(ctx, "127.0.0.1:0", relays.ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	fast := relays.Options{CheckInterval: 50 * time.Millisecond, Timeout: time.Second, BackoffMin: 5 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	reg, err := relays.Register(ctx, n3, routing.MustParseRoute("/tcp/"+l.Address+"/service/relay"), "n3", fast)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	pt := tcpportal.New()
	t.Cleanup(func() { pt.Close() })
	so := SessionOptions{KeepaliveInterval: 100 * time.Millisecond, SessionTimeout: 30 * time.Second}
	o, err := NewOutlet(n3, OutletOptions{Target: target, Portal: pt, Session: so})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	c1, err := b1.Connect(ctx, l.Address)
	if err != nil {
		t.Fatal(err)
	}
	route, err := routing.Route{c1.Worker}.Concat(routing.MustParseRoute("/service/forward_to_n3/service/outlet"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInlet(ctx, n1, InletOptions{ListenAddress: "127.0.0.1:0", Route: route, Portal: pt, Session: so})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })

	size := int64(16 << 20)
	if raceEnabled {
		size = 4 << 20
	}
	nc, err := net.DialTimeout("tcp", in.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*net.TCPConn)
	var req [17]byte
	req[0] = modeDownload
	binary.BigEndian.PutUint64(req[1:9], uint64(size))
	binary.BigEndian.PutUint64(req[9:], 77)
	if _, err := c.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	// Part of the download arrives; the rest waits in flight and in the
	// window while the relay restarts.
	if _, err := io.CopyN(h, c, size/4); err != nil {
		t.Fatal(err)
	}
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShutdown()
	if err := n2.Shutdown(shutdown); err != nil {
		t.Fatal(err)
	}
	b2.Close()
	waitFor(t, "the registrant to notice n2 is gone", 20*time.Second, func() bool { return reg.Info().State == relays.StateDown })
	n2b, b2b := relayTestNode(t, "n2")
	svc, err := relays.StartService(n2b, relays.ServiceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2b.Listen(ctx, l.Address, relays.ServiceAddress); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n3 to register at the new n2", 20*time.Second, func() bool {
		_, ok := svc.Get("n3")
		return ok && reg.Info().State == relays.StateUp
	})
	if n, err := io.CopyN(h, c, size-size/4); err != nil {
		t.Fatalf("after the relay restarted, %d more bytes arrived: %v", n, err)
	}
	var sum [32]byte
	if _, err := io.ReadFull(c, sum[:]); err != nil {
		t.Fatalf("read sum: %v", err)
	}
	want := sha256.New()
	io.Copy(want, io.LimitReader(newGen(77), size))
	if !bytes.Equal(sum[:], h.Sum(nil)) || !bytes.Equal(sum[:], want.Sum(nil)) {
		t.Fatalf("sums differ: target %x, received %x, expected %x", sum, h.Sum(nil), want.Sum(nil))
	}
	if in.Status().ActiveSessions != 1 || o.Status().TotalSessions != 1 {
		t.Fatalf("the download took a new session: inlet %+v, outlet %+v", in.Status(), o.Status())
	}
}
