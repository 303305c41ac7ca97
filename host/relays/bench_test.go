package relays

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// BenchmarkRelayRoundTrip measures a 64-byte request/response from n1 to
// n3's uppercase service over TCP (in-process transports), directly (n3
// listens, the baseline) and through a relay on n2 (n3 only dials out).
// Compare the two sub-benchmarks of one run: relay/direct is the cost of the
// extra TCP hop plus the forwarder and registrant hops.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, path := range []string{"direct", "relay"} {
		b.Run(path, func(b *testing.B) {
			n1, route := benchPath(b, path)
			payload := make([]byte, 64)
			for i := range payload {
				payload[i] = 'a'
			}
			lat := make([]time.Duration, 0, b.N)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				m, err := n1.SendAndReceive(ctx, route, payload)
				if err != nil || len(m.Payload) != 64 {
					b.Fatalf("round trip: %v", err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func benchPath(b *testing.B, path string) (*node.Node, routing.Route) {
	n3, b3 := tcpNode(b, "n3")
	n1, b1 := tcpNode(b, "n1")
	var route routing.Route
	switch path {
	case "direct":
		l, err := b3.Listen(context.Background(), "127.0.0.1:0", "uppercase")
		if err != nil {
			b.Fatal(err)
		}
		c, err := b1.Connect(context.Background(), l.Address)
		if err != nil {
			b.Fatal(err)
		}
		route = append(routing.Route{c.Worker}, routing.MustParseRoute("/service/uppercase")...)
	case "relay":
		n2, b2 := tcpNode(b, "n2")
		if _, err := StartService(n2, ServiceConfig{}); err != nil {
			b.Fatal(err)
		}
		l, err := b2.Listen(context.Background(), "127.0.0.1:0", ServiceAddress)
		if err != nil {
			b.Fatal(err)
		}
		c3, err := b3.Connect(context.Background(), l.Address)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		reg, err := Register(ctx, n3, append(routing.Route{c3.Worker}, routing.Local(ServiceAddress)), "n3", Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { reg.Close(context.Background()) })
		c1, err := b1.Connect(context.Background(), l.Address)
		if err != nil {
			b.Fatal(err)
		}
		route = append(routing.Route{c1.Worker}, routing.MustParseRoute("/service/forward_to_n3/service/uppercase")...)
	default:
		panic(fmt.Sprintf("unknown path %q", path))
	}
	return n1, route
}
