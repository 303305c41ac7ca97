package main

import (
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/kafka/internal/kafkatest"
	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// TestConformanceAsPlugin runs the conformance suite against the kafka
// plugin binary, launched as a subprocess and driven over gRPC as a node
// does, against kfake started here.
func TestConformanceAsPlugin(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	p := plugintest.Build(t, ".")
	p.Settings = map[string]string{
		kafkatransport.SettingBrokers:           addr,
		kafkatransport.SettingHeartbeatInterval: "200ms",
		kafkatransport.SettingIdleTimeout:       "6s",
		kafkatransport.SettingSessionTimeout:    "6s",
	}
	transporttest.Run(t, transporttest.Config{
		New:  p.New,
		Kill: p.Kill,
		// The kill subtest waits for the 6 s idle timeout after sending,
		// receiving and killing a process: 10 s left a loaded machine
		// little room.
		Timeout:           30 * time.Second,
		ListenAddressFunc: func(t *testing.T) string { return kafkatest.UniqueTopic(t) },
		Skip: map[string]string{
			"DialRefused": "Kafka is store-and-forward: a topic whose listener closed still takes records (see kafkatransport's conformance test)",
		},
	})
}
