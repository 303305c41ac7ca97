package main

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func TestMemoryLimitFollowsSettings(t *testing.T) {
	var got []int64
	tr := tcptransport.New()
	sc, ok := tr.(transport.SettingsConfigurer)
	if !ok {
		t.Fatal("tcptransport no longer takes parsed settings; main serves it without a memory limit")
	}
	m := &memoryLimited{Transport: tr, inner: sc, apply: func(n int64) int64 { got = append(got, n); return 0 }}
	defer m.Close()
	if err := m.Configure(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	// Defaults: 128 MiB of large-frame buffers, 512 connections of 64 KiB.
	if want := int64(128<<20 + 512*64<<10 + memoryHeadroom); len(got) != 1 || got[0] != want {
		t.Fatalf("limit with default settings %v, want [%d]", got, want)
	}
	err := m.Configure(context.Background(), map[string]string{
		tcptransport.SettingMaxReceiveMemory: "1073741824",
		tcptransport.SettingMaxConnections:   "10",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1<<30 + 10*64<<10 + memoryHeadroom); len(got) != 2 || got[1] != want {
		t.Fatalf("limit with a 1 GiB receive budget %v, want %d", got, want)
	}
	// Refused settings change nothing.
	if err := m.Configure(context.Background(), map[string]string{tcptransport.SettingMaxConnections: "0"}); err == nil || len(got) != 2 {
		t.Fatalf("bad settings: error %v, limits %v", err, got)
	}
}
