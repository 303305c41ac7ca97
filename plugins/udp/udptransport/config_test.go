package udptransport

import (
	"context"
	"strings"
	"testing"
)

func TestConfigureValidates(t *testing.T) {
	for _, c := range []struct {
		settings map[string]string
		want     string
	}{
		{map[string]string{"nope": "1"}, `unknown setting "nope"`},
		{map[string]string{SettingDatagramSize: "100"}, "between 512 and 65507"},
		{map[string]string{SettingDatagramSize: "70000"}, "between 512 and 65507"},
		{map[string]string{SettingMaxMessageSize: "2000000"}, "between 1 and 1048576"},
		{map[string]string{SettingIdleTimeout: "1s", SettingKeepaliveInterval: "1s"}, "at least twice"},
		{map[string]string{SettingKeepaliveInterval: "-1s"}, "positive duration"},
		{map[string]string{SettingDialTimeout: "soon"}, "a duration"},
		{map[string]string{SettingReassemblyPeerBytes: "1000"}, "must be at least max_message_size"},
		{map[string]string{SettingReassemblyTotalBytes: "1048576", SettingReassemblyPeerBytes: "2097152"}, "must be at least reassembly_peer_bytes"},
		{map[string]string{SettingRecvQueueBytes: "10"}, "must be at least max_message_size"},
		{map[string]string{SettingBatchSize: "0"}, "between 1 and 1024"},
		{map[string]string{SettingMaxPeers: "x"}, "whole number"},
	} {
		err := New().Configure(context.Background(), c.settings)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Configure(%v): %v; want an error saying %q", c.settings, err, c.want)
		}
	}
	// Every default in the schema is accepted as a value.
	all := map[string]string{}
	for _, s := range New().Info().Settings {
		all[s.Name] = s.Default
	}
	if err := New().Configure(context.Background(), all); err != nil {
		t.Fatalf("the schema's defaults are refused: %v", err)
	}
	// Defaults are valid as they stand.
	if err := defaultConfig().validate(); err != nil {
		t.Fatal(err)
	}
}
