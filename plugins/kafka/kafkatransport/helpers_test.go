package kafkatransport_test

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// testSettings are quick liveness settings so death is noticed within the
// conformance suite's 10 s deadlines, with room for heartbeats delayed
// by a loaded machine (3 s was once not enough for 32 links at load 10).
func testSettings(brokers string) map[string]string {
	return map[string]string{
		kafkatransport.SettingBrokers:           brokers,
		kafkatransport.SettingHeartbeatInterval: "200ms",
		kafkatransport.SettingIdleTimeout:       "6s",
		kafkatransport.SettingSessionTimeout:    "6s",
		kafkatransport.SettingDialTimeout:       "8s",
	}
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
