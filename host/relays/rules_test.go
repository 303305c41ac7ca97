package relays

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/plugins/transportclient"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

// inProcessNode is a node whose TCP transport is served over the plugin
// protocol in-process (same SDK server and host client as a subprocess).
func inProcessNode(t *testing.T, name string, opts ...transportclient.InProcessOption) (*node.Node, *transports.Binding) {
	t.Helper()
	n := newNode(t, name)
	r, stop, err := transportclient.ServeInProcess(ctxT(t), tcptransport.New(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := transports.Attach(n, r, transports.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		stop()
	})
	return n, b
}

// rulePath is n1 → n2 (relay service) ← n3 (registered as "n3").
type rulePath struct {
	n1, n2, n3 *node.Node
	b1, b2, b3 *transports.Binding
	svc        *Service
	lis        transports.ListenerInfo
	c1, c3     transports.ConnectionInfo
	reg        *Registration
	via        routing.Route // n1 → forward_to_n3 → uppercase on n3
}

func newRulePath(t *testing.T, mk func(string) (*node.Node, *transports.Binding), regOpts Options) *rulePath {
	t.Helper()
	p := &rulePath{}
	p.n2, p.b2 = mk("n2")
	p.n3, p.b3 = mk("n3")
	p.n1, p.b1 = mk("n1")
	var err error
	p.svc, err = StartService(p.n2, ServiceConfig{Flows: ListenerFlows("", p.b2),
		Bindings: func() []*transports.Binding { return []*transports.Binding{p.b2} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.svc.Close(context.Background()) })
	if p.lis, err = p.b2.Listen(ctxT(t), "127.0.0.1:0", ServiceAddress); err != nil {
		t.Fatal(err)
	}
	if p.c3, err = p.b3.Connect(ctxT(t), p.lis.Address); err != nil {
		t.Fatal(err)
	}
	p.reg, err = Register(ctxT(t), p.n3, routing.Route{p.c3.Worker, routing.Local(ServiceAddress)}, "n3", regOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.reg.Close(context.Background()) })
	if p.c1, err = p.b1.Connect(ctxT(t), p.lis.Address); err != nil {
		t.Fatal(err)
	}
	p.via = routeOf(t, p.c1.Worker, "/service/forward_to_n3/service/uppercase")
	return p
}

func (p *rulePath) forwarder(t *testing.T) *forwarder {
	t.Helper()
	p.svc.mu.Lock()
	defer p.svc.mu.Unlock()
	f := p.svc.fwd["n3"]
	if f == nil {
		t.Fatal("no forwarder for n3")
	}
	return f
}

// exchange sends count requests over the relay, one at a time, each
// answered.
func (p *rulePath) exchange(t *testing.T, count int, tag string) {
	t.Helper()
	for i := range count {
		msg := fmt.Sprintf("%s %d", tag, i)
		got, err := node.Request(ctxT(t), p.n1, p.via, msg)
		if want := fmt.Sprintf("%s %d", upper(tag), i); err != nil || got != want {
			t.Fatalf("request %d over %s: got %q, %v; want %q", i, p.via, got, err, want)
		}
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// exactCounts waits until relay list shows exactly want messages each way
// (the last reply may be counted a moment after it arrived) and returns it.
func (p *rulePath) exactCounts(t *testing.T, want uint64) ForwarderInfo {
	t.Helper()
	var fi ForwarderInfo
	eventually(t, fmt.Sprintf("counts of %d each way", want), func() bool {
		fi, _ = p.svc.Get("n3")
		return fi.Forwarded >= want && fi.Returned >= want
	})
	if fi.Forwarded != want || fi.Returned != want || fi.Errors != 0 {
		t.Fatalf("relay counts %+v, want %d each way and no errors", fi, want)
	}
	return fi
}

// TestForwardingRuleOverPlugin relays over real tcp plugin processes: after
// the first exchange the relay node's plugin forwards by itself, the counts
// stay exact, other links are still refused, and a closed or replaced link
// of the registrant sends messages back through the node.
func TestForwardingRuleOverPlugin(t *testing.T) {
	tcpPluginDir(t)
	checkGoroutines(t)
	p := newRulePath(t, func(name string) (*node.Node, *transports.Binding) {
		n, b, _ := pluginNode(t, name)
		return n, b
	}, Options{CheckInterval: time.Minute, Timeout: 2 * time.Second, BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	f := p.forwarder(t)

	p.exchange(t, 1, "first")
	if f.ruleCount() != 1 {
		t.Fatalf("%d forwarding rules after the first exchange, want 1", f.ruleCount())
	}
	const n = 40
	p.exchange(t, n, "bulk")
	fi := p.exactCounts(t, n+1)
	// The first request taught the rule; the next one still went through
	// the node, followed by the rule's fence, and every later one through
	// the plugin alone (replies likewise).
	if fi.PluginForwarded < n-1 || fi.PluginReturned < n-1 {
		t.Fatalf("plugin forwarded %d / returned %d, want %d each", fi.PluginForwarded, fi.PluginReturned, n)
	}
	if fi.State != ForwarderUp || time.Since(fi.LastSeen) > time.Minute {
		t.Fatalf("forwarder %+v", fi)
	}

	// A link whose flow may not reach the forwarder is still refused: a
	// listener that allows only uppercase.
	l2, err := p.b2.Listen(ctxT(t), "127.0.0.1:0", "uppercase")
	if err != nil {
		t.Fatal(err)
	}
	c4, err := p.b1.Connect(ctxT(t), l2.Address)
	if err != nil {
		t.Fatal(err)
	}
	mustRequest(t, p.n1, routeOf(t, c4.Worker, "/service/uppercase").String(), "allowed", "ALLOWED")
	_, err = node.Request(ctxT(t), p.n1, routeOf(t, c4.Worker, "/service/forward_to_n3/service/uppercase"), "sneak")
	if !errors.Is(err, node.ErrAccessDenied) {
		t.Fatalf("a request through a listener that does not allow the forwarder: %v, want access denied", err)
	}

	// The registrant's link closes on the relay node: the rule lapses and
	// the next message goes through the node, which reports the dead
	// route back to the sender at once.
	before := p.exactCounts(t, n+1)
	p.closeBack(t, before.RouteBack)
	// relay list notices the rule's link is gone and removes the rule
	// from the plugin, so what follows is certain to reach the node.
	if fi, _ = p.svc.Get("n3"); f.ruleCount() != 0 {
		t.Fatalf("%d rules after the registrant's link closed", f.ruleCount())
	}
	_, err = node.Request(ctxT(t), p.n1, p.via, "lost")
	var re *node.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("a request to a registrant whose link closed: %v, want an error report", err)
	}
	fi, _ = p.svc.Get("n3")
	if fi.PluginForwarded != before.PluginForwarded || fi.Forwarded != n+1 || fi.Errors == 0 || fi.State != ForwarderDown {
		t.Fatalf("after the link closed: %+v", fi)
	}
}

// closeBack closes the connection on n2 that the route back starts with.
func (p *rulePath) closeBack(t *testing.T, routeBack string) {
	t.Helper()
	first := routing.MustParseRoute(routeBack)[0].Value
	for _, c := range p.b2.Connections() {
		if c.Worker.Value == first {
			if err := p.b2.CloseConnection(ctxT(t), c.ID); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no connection on n2 for route back %s", routeBack)
}

// TestForwardingRuleFollowsRegistration closes the registrant's link on the
// relay node; the registrant re-dials and registers again over the new
// link, and the forwarder installs a rule for it.
func TestForwardingRuleFollowsRegistration(t *testing.T) {
	tcpPluginDir(t)
	checkGoroutines(t)
	p := newRulePath(t, func(name string) (*node.Node, *transports.Binding) {
		n, b, _ := pluginNode(t, name)
		return n, b
	}, fast())
	f := p.forwarder(t)
	p.exchange(t, 5, "before")
	before := p.exactCounts(t, 5)
	if f.ruleCount() != 1 || before.PluginForwarded < 2 || before.PluginReturned < 2 {
		t.Fatalf("%d rules, %+v", f.ruleCount(), before)
	}
	p.closeBack(t, before.RouteBack)
	eventually(t, "n3 to register again", func() bool {
		fi, _ := p.svc.Get("n3")
		return fi.Registrations > before.Registrations && fi.RouteBack != before.RouteBack
	})
	requestEventually(t, p.n1, p.via, "again", "AGAIN")
	eventually(t, "a rule for the new link", func() bool { return f.ruleCount() == 1 })
	mid, _ := p.svc.Get("n3")
	p.exchange(t, 10, "after")
	var fi ForwarderInfo
	for deadline := time.Now().Add(testDeadline); ; time.Sleep(5 * time.Millisecond) {
		fi, _ = p.svc.Get("n3")
		if fi.Forwarded >= mid.Forwarded+10 && fi.Returned >= mid.Returned+10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new rule's counts: before %+v after %+v", mid, fi)
		}
	}
	// (The totals are checked exactly where the traffic is known, above;
	// here requests during the re-registration may or may not have been
	// counted by the time mid was read.)
	if fi.PluginForwarded < mid.PluginForwarded+9 || fi.PluginReturned < mid.PluginReturned+9 {
		t.Fatalf("counts before %+v after %+v", mid, fi)
	}
}

// TestForwardingRuleAfterPluginRestart kills the relay node's plugin: its
// rules die with it, and once the links are back the forwarder installs
// them again.
func TestForwardingRuleAfterPluginRestart(t *testing.T) {
	tcpPluginDir(t)
	checkGoroutines(t)
	var p2 *plugins.Transport
	p := newRulePath(t, func(name string) (*node.Node, *transports.Binding) {
		n, b, tr := pluginNode(t, name)
		if name == "n2" {
			p2 = tr
		}
		return n, b
	}, fast())
	f := p.forwarder(t)
	p.exchange(t, 5, "before")
	if f.ruleCount() != 1 {
		t.Fatalf("%d rules, want 1", f.ruleCount())
	}
	restarted := make(chan struct{}, 1)
	cancel := p2.Subscribe(func(e plugins.Event) {
		if e.Kind == plugins.Restarted {
			select {
			case restarted <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	before := p.reg.Info().Registrations
	if err := syscall.Kill(p2.Client().Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-ctxT(t).Done():
		t.Fatal("n2's plugin was not restarted")
	}
	eventually(t, "n3 to register again", func() bool {
		i := p.reg.Info()
		return i.State == StateUp && i.Registrations > before
	})
	requestEventually(t, p.n1, p.via, "again", "AGAIN")
	mid, _ := p.svc.Get("n3")
	p.exchange(t, 10, "after")
	eventually(t, "the plugin to forward again", func() bool {
		fi, _ := p.svc.Get("n3")
		return fi.PluginForwarded >= mid.PluginForwarded+8 && fi.PluginReturned >= mid.PluginReturned+8
	})
	if f.ruleCount() != 1 {
		t.Fatalf("%d rules after the restart, want 1", f.ruleCount())
	}
}

// TestForwardingRuleInProcess covers both data paths of the plugin
// protocol, and a host and plugin that do not both offer the capability
// (the node forwards everything, as before).
func TestForwardingRuleInProcess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []transportclient.InProcessOption
		rules bool
	}{
		{"data channel", nil, true},
		{"grpc streams", []transportclient.InProcessOption{transportclient.GRPCStreams()}, true},
		{"without the capability", []transportclient.InProcessOption{transportclient.WithoutCapabilities(pluginv1.Capability_CAPABILITY_FORWARD_RULES)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newRulePath(t, func(name string) (*node.Node, *transports.Binding) {
				return inProcessNode(t, name, tc.opts...)
			}, fast())
			const n = 25
			p.exchange(t, n, "msg")
			fi := p.exactCounts(t, n)
			got := p.forwarder(t).ruleCount()
			if !tc.rules {
				if got != 0 || fi.PluginForwarded != 0 {
					t.Fatalf("without the capability: %d rules, %+v", got, fi)
				}
				return
			}
			if got != 1 || fi.PluginForwarded < n-2 || fi.PluginReturned < n-2 {
				t.Fatalf("%d rules, %+v", got, fi)
			}
			// Deleting the relay removes the rule: nothing is forwarded
			// for a forwarder that is gone.
			f := p.forwarder(t)
			if err := p.svc.Delete(ctxT(t), "n3"); err != nil {
				t.Fatal(err)
			}
			if got := f.ruleCount(); got != 0 {
				t.Fatalf("%d rules left by a deleted forwarder", got)
			}
			// The registrant registers again when it finds the relay
			// forgot it; close it (its own delete finds nothing or the
			// new forwarder) so that no forwarder for n3 comes back.
			p.reg.Close(ctxT(t))
			eventually(t, "no forwarder for n3", func() bool { _, ok := p.svc.Get("n3"); return !ok })
			if _, err := node.Request(ctxT(t), p.n1, p.via, "gone"); err == nil {
				t.Fatal("a request through a deleted relay was answered")
			}
		})
	}
}

// TestForwardingRuleKeepsOrder sends a burst through the relay with no
// pause: the rule is installed while the rest of the burst is on its way
// through the node, and its fences keep the plugin from overtaking those
// messages, so the sink sees the burst in order.
func TestForwardingRuleKeepsOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []transportclient.InProcessOption
	}{
		{"data channel", nil},
		{"grpc streams", []transportclient.InProcessOption{transportclient.GRPCStreams()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newRulePath(t, func(name string) (*node.Node, *transports.Binding) {
				return inProcessNode(t, name, tc.opts...)
			}, fast())
			const burst = 400
			var mu sync.Mutex
			var got []int
			if _, err := p.n3.StartWorker("sink", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
				v, err := strconv.Atoi(string(m.Payload))
				if err != nil {
					return err
				}
				mu.Lock()
				got = append(got, v)
				mu.Unlock()
				return nil
			})); err != nil {
				t.Fatal(err)
			}
			route := routeOf(t, p.c1.Worker, "/service/forward_to_n3/service/sink")
			send := func(from, to int) {
				for i := from; i < to; i++ {
					if err := node.SendAs(ctxT(t), p.n1, route, strconv.Itoa(i)); err != nil {
						t.Fatal(err)
					}
				}
				eventually(t, "the whole burst at the sink", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(got) == to
				})
			}
			// The first burst has the rule installed somewhere in it. The
			// rule's fence comes back through the node only after the
			// messages ahead of it, which on a loaded machine can take
			// longer than a whole burst: send more until the plugin has
			// forwarded some of them.
			send(0, burst)
			total := burst
			deadline := time.Now().Add(testDeadline)
			for {
				if fi, _ := p.svc.Get("n3"); fi.PluginForwarded > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the plugin forwarded none of %d messages", total)
				}
				send(total, total+100)
				total += 100
			}
			mu.Lock()
			defer mu.Unlock()
			for i, v := range got {
				if v != i {
					t.Fatalf("message %d arrived in place %d: %v", v, i, got[max(0, i-3):min(len(got), i+4)])
				}
			}
			var fi ForwarderInfo
			eventually(t, "the burst counted", func() bool {
				fi, _ = p.svc.Get("n3")
				return fi.Forwarded >= uint64(total)
			})
			if fi.Forwarded != uint64(total) || fi.Returned != 0 || fi.PluginForwarded == 0 || fi.Errors != 0 {
				t.Fatalf("counts after %d messages, the plugin forwarding part of them: %+v", total, fi)
			}
		})
	}
}
