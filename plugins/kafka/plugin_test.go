package main

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

func startBroker(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

var topicSeq atomic.Int64

func uniqueTopic(t testing.TB) string {
	name := strings.NewReplacer("/", ".", " ", "_", "#", "_").Replace(t.Name())
	if len(name) > 180 {
		name = name[len(name)-180:]
	}
	return fmt.Sprintf("%s.%d", name, topicSeq.Add(1))
}

// TestConformanceAsPlugin runs the conformance suite against the kafka
// plugin binary, launched as a subprocess and driven over gRPC as a node
// does, against kfake started here.
func TestConformanceAsPlugin(t *testing.T) {
	_, addr := startBroker(t)
	p := plugintest.Build(t, ".")
	p.Settings = map[string]string{
		kafkatransport.SettingBrokers:           addr,
		kafkatransport.SettingHeartbeatInterval: "200ms",
		kafkatransport.SettingIdleTimeout:       "3s",
		kafkatransport.SettingSessionTimeout:    "6s",
	}
	transporttest.Run(t, transporttest.Config{
		New:               p.New,
		Kill:              p.Kill,
		ListenAddressFunc: func(t *testing.T) string { return uniqueTopic(t) },
		Skip: map[string]string{
			"DialRefused": "Kafka is store-and-forward: a topic whose listener closed still takes records (see kafkatransport's conformance test)",
		},
	})
}
