package portals

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/relays"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// twoNodes is an inlet on n1 and an outlet on n2, joined by the TCP
// transport (in-process): n2 listens and admits network input only to the
// outlet, n1 reaches it by the route /tcp/<addr>/service/outlet.
type twoNodes struct {
	n1, n2       *node.Node
	b1, b2       *transports.Binding
	inlet        *Inlet
	outlet       *Outlet
	listenerAddr string
}

func newTwoNodes(t testing.TB, target string, so SessionOptions) *twoNodes {
	t.Helper()
	tn := &twoNodes{}
	tn.n1, _ = newNode(t, "n1")
	tn.n2, _ = newNode(t, "n2")
	var err error
	for _, x := range []struct {
		n *node.Node
		b **transports.Binding
	}{{tn.n1, &tn.b1}, {tn.n2, &tn.b2}} {
		tr := tcptransport.New()
		b, err := transports.Attach(x.n, tr, transports.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); tr.Close() })
		*x.b = b
	}
	pt := tcpportal.New()
	t.Cleanup(func() { pt.Close() })
	tn.outlet, err = NewOutlet(tn.n2, OutletOptions{Target: target, Portal: pt, Session: so})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.outlet.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	li, err := tn.b2.Listen(ctx, "127.0.0.1:0", tn.outlet.Address().Value)
	if err != nil {
		t.Fatal(err)
	}
	tn.listenerAddr = li.Address
	route := routing.Route{{Type: "tcp", Value: li.Address}, tn.outlet.Address()}
	tn.inlet, err = NewInlet(ctx, tn.n1, InletOptions{ListenAddress: "127.0.0.1:0", Route: route, Portal: pt, Session: so, OpenTimeout: 5 * time.Second, WaitTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.inlet.Close() })
	return tn
}

func (tn *twoNodes) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", tn.inlet.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestAcrossTCPTransport(t *testing.T) {
	checkLeaks(t)
	tn := newTwoNodes(t, startTarget(t), SessionOptions{})
	size := bigSize() / 2
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	up, down := tn.dial(t), tn.dial(t)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- upload(up, size, 11); up.Close() }()
	go func() { defer wg.Done(); errs <- download(down, size, 12); down.Close() }()
	for i := range 10 {
		c := tn.dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			payload := make([]byte, 200<<10+i)
			newGen(uint64(100 + i)).Read(payload)
			if err := echo(c, payload); err != nil {
				errs <- fmt.Errorf("echo %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return tn.inlet.Status().ActiveSessions == 0 && tn.outlet.Status().ActiveSessions == 0
	})
}

func TestAcrossTCPTransportLinkBreaks(t *testing.T) {
	checkLeaks(t)
	tn := newTwoNodes(t, startTarget(t), SessionOptions{KeepaliveInterval: 100 * time.Millisecond, SessionTimeout: time.Second})
	c := tn.dial(t)
	if _, err := c.Write([]byte{modeEcho, 'a'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	// The outlet's node loses its transport: both ends must notice.
	if err := tn.b2.Close(); err != nil {
		t.Fatal(err)
	}
	// The session pauses, then ends at its session timeout.
	expectClosed(t, c, 10*time.Second)
	waitFor(t, "sessions to end", 10*time.Second, func() bool {
		return tn.inlet.Status().ActiveSessions == 0 && tn.outlet.Status().ActiveSessions == 0
	})
}

func TestAcrossTCPTransportOutletNotAllowed(t *testing.T) {
	checkLeaks(t)
	target := startTarget(t)
	n1, _ := newNode(t, "n1")
	n2, _ := newNode(t, "n2")
	var bs []*transports.Binding
	for _, n := range []*node.Node{n1, n2} {
		tr := tcptransport.New()
		b, err := transports.Attach(n, tr, transports.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); tr.Close() })
		bs = append(bs, b)
	}
	pt := tcpportal.New()
	defer pt.Close()
	o, err := NewOutlet(n2, OutletOptions{Target: target, Portal: pt})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx := context.Background()
	li, err := bs[1].Listen(ctx, "127.0.0.1:0", "echo") // the outlet is not allowed
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInlet(ctx, n1, InletOptions{ListenAddress: "127.0.0.1:0", Route: routing.Route{{Type: "tcp", Value: li.Address}, o.Address()}, Portal: pt, OpenTimeout: 500 * time.Millisecond, WaitTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	c, err := net.DialTimeout("tcp", in.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, c, 5*time.Second)
	if o.Status().TotalSessions != 0 {
		t.Fatal("a session reached an outlet its listener does not allow")
	}
}

// TestThroughRelay is the path: n2 listens, n3 only dials out and
// registers a relay at n2, and n1's inlet reaches n3's outlet through it.
func TestThroughRelay(t *testing.T) {
	checkLeaks(t)
	target := startTarget(t)
	var ns [3]*node.Node
	var bs [3]*transports.Binding
	for i := range ns {
		ns[i], _ = newNode(t, fmt.Sprintf("n%d", i+1))
		tr := tcptransport.New()
		b, err := transports.Attach(ns[i], tr, transports.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); tr.Close() })
		bs[i] = b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc, err := relays.StartService(ns[1], relays.ServiceConfig{Flows: relays.ListenerFlows("", bs[1])})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	l, err := bs[1].Listen(ctx, "127.0.0.1:0", relays.ServiceAddress)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := bs[2].Connect(ctx, l.Address)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := relays.Register(ctx, ns[2], routing.Route{c3.Worker, routing.Local(relays.ServiceAddress)}, "n3", relays.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	pt := tcpportal.New()
	t.Cleanup(func() { pt.Close() })
	o, err := NewOutlet(ns[2], OutletOptions{Target: target, Portal: pt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	c1, err := bs[0].Connect(ctx, l.Address)
	if err != nil {
		t.Fatal(err)
	}
	route := routing.Route{c1.Worker, routing.Local("forward_to_n3"), routing.Local("hop"), o.Address()}
	if _, err := services.Start(ns[2], "hop", ""); err != nil {
		t.Fatal(err)
	}
	in, err := NewInlet(ctx, ns[0], InletOptions{ListenAddress: "127.0.0.1:0", Route: route, Portal: pt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	var wg sync.WaitGroup
	errs := make(chan error, 11)
	up, err := net.DialTimeout("tcp", in.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); defer up.Close(); errs <- upload(up.(*net.TCPConn), 16<<20, 41) }()
	for i := range 10 {
		c, err := net.DialTimeout("tcp", in.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			payload := make([]byte, 50<<10+i)
			newGen(uint64(300 + i)).Read(payload)
			if err := echo(c.(*net.TCPConn), payload); err != nil {
				errs <- fmt.Errorf("echo %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := o.Status().TotalSessions; got != 11 {
		t.Errorf("outlet on n3 saw %d sessions, want 11", got)
	}
}
