package pluginwire

import (
	"errors"
	"strings"
	"testing"
)

func TestCtrlRoundTrip(t *testing.T) {
	for _, m := range []CtrlMsg{
		{Op: CtrlDial, Req: 1, Timeout: 5000, Address: "127.0.0.1:80"},
		{Op: CtrlDial, Req: 2},
		{Op: CtrlAccept, Req: 3, Listener: 7},
		{Op: CtrlCancel, Req: 1<<64 - 1},
		{Op: CtrlStream, Req: 4, Stream: 9, Local: "127.0.0.1:1", Remote: "[::1]:2"},
		{Op: CtrlStream, Req: 5, Stream: 10},
		{Op: CtrlFail, Req: 6, Code: CtrlClosed, Text: "listener closed"},
	} {
		got, err := DecodeCtrl(m.Append(nil))
		if err != nil || got != m {
			t.Errorf("%+v: decoded %+v, %v", m, got, err)
		}
	}
	long := CtrlMsg{Op: CtrlFail, Req: 1, Text: strings.Repeat("x", 10<<10)}
	if got, err := DecodeCtrl(long.Append(nil)); err != nil || len(got.Text) != maxCtrlText {
		t.Errorf("a long text: %d bytes, %v; want it cut to %d", len(got.Text), err, maxCtrlText)
	}
}

func TestCtrlDecodeRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short header":   {CtrlDial, 0, 0},
		"unknown op":     append([]byte{99}, make([]byte, 8)...),
		"short dial":     append([]byte{CtrlDial}, make([]byte, 10)...),
		"accept length":  append([]byte{CtrlAccept}, make([]byte, 12)...),
		"cancel payload": append([]byte{CtrlCancel}, make([]byte, 9)...),
		"local too long": append(append([]byte{CtrlStream}, make([]byte, 16)...), 0xff, 0xff),
		"no fail code":   append([]byte{CtrlFail}, make([]byte, 8)...),
	} {
		if _, err := DecodeCtrl(b); !errors.Is(err, ErrCtrl) {
			t.Errorf("%s: %v, want ErrCtrl", name, err)
		}
	}
}

func FuzzDecodeCtrl(f *testing.F) {
	for _, m := range []CtrlMsg{
		{Op: CtrlDial, Req: 1, Timeout: 5000, Address: "127.0.0.1:80"},
		{Op: CtrlAccept, Req: 3, Listener: 7},
		{Op: CtrlCancel, Req: 2},
		{Op: CtrlStream, Req: 4, Stream: 9, Local: "127.0.0.1:1", Remote: "[::1]:2"},
		{Op: CtrlFail, Req: 6, Code: CtrlClosed, Text: "closed"},
	} {
		f.Add(m.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeCtrl(b)
		if err != nil {
			return
		}
		// What decodes encodes back to what decodes the same.
		again, err := DecodeCtrl(m.Append(nil))
		if err != nil || again != m {
			t.Fatalf("%+v re-decoded as %+v, %v", m, again, err)
		}
	})
}
