package relays

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/sdk/routing"
)

// BenchmarkRelayRuleCPU measures what relaying costs the relay node with
// and without forwarding rules, over real tcp plugin processes: n1 sends
// 64 KiB messages (8 in flight) through n2 to a sink on n3, which answers
// each with one byte. n2 runs two relay services, one that hands rules to
// its plugin and one that does not, and n3 registers at both, so the two
// modes share every process and link and are measured alternately. It
// prints wall time and CPU time (n2's tcp plugin; this process, which holds
// all three nodes' hosts; a plain end node's plugin for comparison) per MB:
//
//	go test -run '^$' -bench RelayRuleCPU -benchtime 3x ./host/relays/
func BenchmarkRelayRuleCPU(b *testing.B) {
	tcpPluginDir(b)
	n2, b2, p2 := pluginNode(b, "n2")
	n3, b3, p3 := pluginNode(b, "n3")
	n1, b1, _ := pluginNode(b, "n1")
	ctx := ctxT(b)
	if _, err := StartService(n2, ServiceConfig{Flows: ListenerFlows("", b2),
		Bindings: func() []*transports.Binding { return []*transports.Binding{b2} }}); err != nil {
		b.Fatal(err)
	}
	if _, err := StartService(n2, ServiceConfig{Address: "relay_nr", Flows: ListenerFlows("relay_nr", b2)}); err != nil {
		b.Fatal(err)
	}
	l, err := b2.Listen(ctx, "127.0.0.1:0", ServiceAddress, "relay_nr")
	if err != nil {
		b.Fatal(err)
	}
	c3, err := b3.Connect(ctx, l.Address)
	if err != nil {
		b.Fatal(err)
	}
	for _, svc := range []string{ServiceAddress, "relay_nr"} {
		reg, err := Register(ctx, n3, routing.Route{c3.Worker, routing.Local(svc)}, "via_"+svc, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { reg.Close(context.Background()) })
	}
	if _, err := n3.StartWorker("sink", node.WorkerFunc(func(c *node.Context, m *routing.Message) error {
		return c.Reply(c, m, []byte{1})
	})); err != nil {
		b.Fatal(err)
	}
	c1, err := b1.Connect(ctx, l.Address)
	if err != nil {
		b.Fatal(err)
	}
	routes := map[string]routing.Route{}
	for _, mode := range []string{"rules", "no rules"} {
		svc := ServiceAddress
		if mode == "no rules" {
			svc = "relay_nr"
		}
		routes[mode] = routeOf2(b, c1.Worker, "/service/forward_to_via_"+svc+"/service/sink")
	}
	const (
		msgs     = 256
		size     = 64 << 10
		inFlight = 8
	)
	payload := make([]byte, size)
	run := func(r routing.Route) {
		var wg sync.WaitGroup
		for w := range inFlight {
			wg.Go(func() {
				for i := w; i < msgs; i += inFlight {
					if _, err := n1.SendAndReceive(context.Background(), r, payload); err != nil {
						b.Errorf("over %s: %v", r, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	for _, r := range routes { // warm up; the rule is learned here
		run(r)
	}
	type total struct{ wall, n2cpu, selfcpu, n3cpu time.Duration }
	sums := map[string]*total{"rules": {}, "no rules": {}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, mode := range []string{"rules", "no rules"} {
			if i%2 == 1 {
				mode = map[string]string{"rules": "no rules", "no rules": "rules"}[mode]
			}
			c2, c3, cs := procCPU(b, p2.Client().Pid()), procCPU(b, p3.Client().Pid()), selfCPU()
			start := time.Now()
			run(routes[mode])
			t := sums[mode]
			t.wall += time.Since(start)
			t.n2cpu += procCPU(b, p2.Client().Pid()) - c2
			t.n3cpu += procCPU(b, p3.Client().Pid()) - c3
			t.selfcpu += selfCPU() - cs
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	mb := float64(b.N*msgs*size) / 1e6
	per := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1e3/mb) }
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "per MB relayed (%d × %d × 64 KiB)\twall\tn2 tcp plugin CPU\thosts CPU (n1+n2+n3)\tn3 tcp plugin CPU\t\n", b.N, msgs)
	for _, mode := range []string{"no rules", "rules"} {
		t := sums[mode]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", mode, per(t.wall), per(t.n2cpu), per(t.selfcpu), per(t.n3cpu))
	}
	w.Flush()
}

func routeOf2(b testing.TB, first routing.Address, rest string) routing.Route {
	r, err := routing.Route{first}.Concat(routing.MustParseRoute(rest))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// procCPU is the user+system CPU time process pid has used (Linux).
func procCPU(b testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
