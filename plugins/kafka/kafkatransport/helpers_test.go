package kafkatransport_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// startBroker runs an in-process Kafka-protocol broker (kfake) on a random
// loopback port for the test and returns its address.
func startBroker(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

// testSettings are quick liveness settings so death is noticed within the
// conformance suite's deadlines.
func testSettings(brokers string) map[string]string {
	return map[string]string{
		kafkatransport.SettingBrokers:           brokers,
		kafkatransport.SettingHeartbeatInterval: "200ms",
		kafkatransport.SettingIdleTimeout:       "3s",
		kafkatransport.SettingSessionTimeout:    "6s",
		kafkatransport.SettingDialTimeout:       "8s",
	}
}

var topicSeq atomic.Int64

// uniqueTopic is a fresh topic name for a (sub)test.
func uniqueTopic(t testing.TB) string {
	name := strings.NewReplacer("/", ".", " ", "_", "#", "_").Replace(t.Name())
	if len(name) > 180 {
		name = name[len(name)-180:]
	}
	return fmt.Sprintf("%s.%d", name, topicSeq.Add(1))
}

func newTransport(t testing.TB, settings map[string]string) transport.Transport {
	t.Helper()
	tr := kafkatransport.New()
	if err := tr.Configure(context.Background(), settings); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}
