package relays

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// BenchmarkRelayRoundTrip measures 64-byte request/response round trips
// from n1 to n3's uppercase service over TCP (in-process transports):
// directly (n3 listens; the baseline) and through the relay on n2 (n3 only
// dials out). The two paths are measured alternately in the same run, so
// machine noise hits both alike, and a table with ratios to the baseline is
// printed:
//
//	go test -run '^$' -bench RelayRoundTrip -benchtime 5000x ./host/relays/
func BenchmarkRelayRoundTrip(b *testing.B) {
	n1, direct, relay := benchPaths(b)
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = 'a'
	}
	ctx := context.Background()
	once := func(r routing.Route) time.Duration {
		start := time.Now()
		m, err := n1.SendAndReceive(ctx, r, payload)
		if err != nil || len(m.Payload) != len(payload) {
			b.Fatalf("round trip over %s: %v", r, err)
		}
		return time.Since(start)
	}
	// Warm both paths up (connections, buffers) before measuring.
	for i := 0; i < 100; i++ {
		once(direct)
		once(relay)
	}
	lat := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			lat[0] = append(lat[0], once(direct))
			lat[1] = append(lat[1], once(relay))
		} else {
			lat[1] = append(lat[1], once(relay))
			lat[0] = append(lat[0], once(direct))
		}
	}
	b.StopTimer()
	type row struct{ p50, p99, mean time.Duration }
	var rows [2]row
	for k := range lat {
		l := lat[k]
		var sum time.Duration
		for _, d := range l {
			sum += d
		}
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		rows[k] = row{l[len(l)/2], l[len(l)*99/100], sum / time.Duration(len(l))}
	}
	b.ReportMetric(float64(rows[0].p50.Microseconds()), "direct-p50-µs")
	b.ReportMetric(float64(rows[1].p50.Microseconds()), "relay-p50-µs")
	b.ReportMetric(float64(rows[1].p50)/float64(rows[0].p50), "relay/direct-p50")
	b.ReportMetric(0, "ns/op")
	if b.N >= 1000 {
		fmt.Println()
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "64 B round trip, %d each\tp50\tp99\tmean\tp50 ratio\tp99 ratio\tround trips/s\t\n", b.N)
		for k, name := range []string{"direct TCP n1 -> n3 (baseline)", "relay n1 -> n2 -> n3"} {
			r := rows[k]
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.0f\t\n", name, r.p50, r.p99, r.mean,
				float64(r.p50)/float64(rows[0].p50), float64(r.p99)/float64(rows[0].p99), float64(time.Second)/float64(r.mean))
		}
		w.Flush()
	}
}

// benchPaths builds n2 (listens, relay service), n3 (listens for the direct
// path, and registers at n2) and n1 (connected to both).
func benchPaths(b *testing.B) (n1 *node.Node, direct, relay routing.Route) {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	n2, b2 := tcpNode(b, "n2")
	n3, b3 := tcpNode(b, "n3")
	n1, b1 := tcpNode(b, "n1")
	if _, err := StartService(n2, ServiceConfig{}); err != nil {
		b.Fatal(err)
	}
	l2, err := b2.Listen(ctx, "127.0.0.1:0", ServiceAddress)
	if err != nil {
		b.Fatal(err)
	}
	l3, err := b3.Listen(ctx, "127.0.0.1:0", "uppercase")
	if err != nil {
		b.Fatal(err)
	}
	c3, err := b3.Connect(ctx, l2.Address)
	if err != nil {
		b.Fatal(err)
	}
	reg, err := Register(ctx, n3, routing.Route{c3.Worker, routing.Local(ServiceAddress)}, "n3", Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reg.Close(context.Background()) })
	c12, err := b1.Connect(ctx, l2.Address)
	if err != nil {
		b.Fatal(err)
	}
	c13, err := b1.Connect(ctx, l3.Address)
	if err != nil {
		b.Fatal(err)
	}
	direct = append(routing.Route{c13.Worker}, routing.MustParseRoute("/service/uppercase")...)
	relay = append(routing.Route{c12.Worker}, routing.MustParseRoute("/service/forward_to_n3/service/uppercase")...)
	return n1, direct, relay
}
