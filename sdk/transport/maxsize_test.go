package transport

import (
	"context"
	"testing"
)

type sizedTransport struct {
	info Info
	max  int
}

func (s sizedTransport) Info() Info                                       { return s.info }
func (sizedTransport) Configure(context.Context, map[string]string) error { return nil }
func (sizedTransport) Listen(context.Context, string) (Listener, error)   { return nil, ErrClosed }
func (sizedTransport) Dial(context.Context, string) (Link, error)         { return nil, ErrClosed }
func (sizedTransport) Close() error                                       { return nil }

type sizerTransport struct{ sizedTransport }

func (s sizerTransport) MaxMessageSize() int { return s.max }

func TestEffectiveMaxMessageSize(t *testing.T) {
	withSetting := Info{MaxMessageSize: 1000, Settings: []Setting{{Name: SettingMaxMessageSize, Type: Int, Default: "800"}}}
	plain := Info{MaxMessageSize: 1000}
	for _, tc := range []struct {
		name     string
		t        Transport
		settings map[string]string
		want     int
	}{
		{"setting given", sizedTransport{info: withSetting}, map[string]string{SettingMaxMessageSize: "500"}, 500},
		{"setting default", sizedTransport{info: withSetting}, nil, 800},
		{"setting above the maximum", sizedTransport{info: withSetting}, map[string]string{SettingMaxMessageSize: "5000"}, 1000},
		{"setting not a number", sizedTransport{info: withSetting}, map[string]string{SettingMaxMessageSize: "lots"}, 1000},
		{"setting zero", sizedTransport{info: withSetting}, map[string]string{SettingMaxMessageSize: "0"}, 1000},
		{"no such setting", sizedTransport{info: plain}, map[string]string{SettingMaxMessageSize: "10"}, 1000},
		{"setting of another type", sizedTransport{info: Info{MaxMessageSize: 1000, Settings: []Setting{{Name: SettingMaxMessageSize, Type: String}}}}, map[string]string{SettingMaxMessageSize: "10"}, 1000},
		{"sizer wins over settings", sizerTransport{sizedTransport{info: withSetting, max: 300}}, map[string]string{SettingMaxMessageSize: "500"}, 300},
		{"sizer above the maximum", sizerTransport{sizedTransport{info: plain, max: 5000}}, nil, 1000},
		{"sizer without an answer", sizerTransport{sizedTransport{info: withSetting}}, map[string]string{SettingMaxMessageSize: "500"}, 500},
	} {
		if got := EffectiveMaxMessageSize(tc.t, tc.settings); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}
