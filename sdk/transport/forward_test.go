package transport

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/sdk/routing"
)

// testRule is forward_to_n3 between link a (address "la") and link b
// ("lb"), whose route back is /worker/lb/service/reg3.
func testRule() *fwdRule {
	return &fwdRule{
		a: &serverLink{}, b: &serverLink{},
		addrA: routing.Local("la"), addrB: routing.Local("lb"), fwd: routing.Local("forward_to_n3"),
		back:      routing.Route{routing.Local("lb"), routing.Local("reg3")},
		errPrefix: []byte("\x00\xffferry-error\x00"),
		codec:     routing.Codec{MaxSize: 1 << 20},
	}
}

func route(t testing.TB, s string) routing.Route {
	t.Helper()
	r, err := routing.ParseRoute(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRuleRewrite checks the rule against the host forwarder's rewrite
// (host/relays forwarder.HandleMessage after the link reader), case by case.
func TestRuleRewrite(t *testing.T) {
	r := testRule()
	long := strings.Repeat("/service/h", routing.MaxHops-1)
	for _, tc := range []struct {
		name           string
		fromB          bool
		onward, ret    string
		payload        string
		size           int
		ok, toB        bool
		wantOn, wantRt string
	}{
		{name: "request to the registrant", onward: "/service/forward_to_n3/service/outlet", ret: "/service/n1link/service/inlet",
			ok: true, toB: true, wantOn: "/service/reg3/service/outlet", wantRt: "/service/forward_to_n3/service/la/service/n1link/service/inlet"},
		{name: "onward already through the route back", onward: "/service/forward_to_n3/service/lb/service/reg3/service/outlet", ret: "/service/inlet",
			ok: true, toB: true, wantOn: "/service/reg3/service/outlet", wantRt: "/service/forward_to_n3/service/la/service/inlet"},
		{name: "reply from the registrant", fromB: true, onward: "/service/forward_to_n3/service/la/service/n1link/service/inlet", ret: "/service/reg3/service/outlet",
			ok: true, wantOn: "/service/n1link/service/inlet", wantRt: "/service/forward_to_n3/service/lb/service/reg3/service/outlet"},
		{name: "from b but not from the registrant", fromB: true, onward: "/service/forward_to_n3/service/la/service/x", ret: "/service/other"},
		{name: "from b for another link", fromB: true, onward: "/service/forward_to_n3/service/lc/service/x", ret: "/service/reg3"},
		{name: "reply that ends at the link", fromB: true, onward: "/service/forward_to_n3/service/la", ret: "/service/reg3"},
		{name: "error report", onward: "/service/forward_to_n3/service/outlet", ret: "/service/inlet", payload: "\x00\xffferry-error\x00..."},
		{name: "another forwarder", onward: "/service/forward_to_n4/service/outlet", ret: "/service/inlet"},
		{name: "nothing after the forwarder", onward: "/service/forward_to_n3", ret: "/service/inlet"},
		{name: "return route at the hop limit", onward: "/service/forward_to_n3/service/outlet", ret: long},
		{name: "over the size limit", onward: "/service/forward_to_n3/service/outlet", ret: "/service/inlet", size: 1<<20 + 1},
		// A's address goes in front first, so a forged route back is just
		// a return route: the host forwards it to the registrant too.
		{name: "sender forges the route back", onward: "/service/forward_to_n3/service/outlet", ret: "/service/reg3",
			ok: true, toB: true, wantOn: "/service/reg3/service/outlet", wantRt: "/service/forward_to_n3/service/la/service/reg3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := tc.payload
			if payload == "" {
				payload = "data"
			}
			m := routing.Message{Onward: route(t, tc.onward), Return: route(t, tc.ret), Payload: []byte(payload)}
			size := tc.size
			if size == 0 {
				size = routing.EncodedSize(&m)
			}
			from := r.a
			if tc.fromB {
				from = r.b
			}
			out, toB, ok := r.rewrite([]byte("keep"), from, &m, size)
			if ok != tc.ok || toB != tc.toB {
				t.Fatalf("ok %v toB %v, want %v %v", ok, toB, tc.ok, tc.toB)
			}
			if !ok {
				if string(out) != "keep" {
					t.Fatalf("a refused rewrite changed dst: %q", out)
				}
				return
			}
			if !bytes.HasPrefix(out, []byte("keep")) {
				t.Fatal("dst prefix lost")
			}
			got, err := r.codec.Decode(out[4:])
			if err != nil {
				t.Fatal(err)
			}
			if got.Onward.String() != tc.wantOn || got.Return.String() != tc.wantRt || string(got.Payload) != payload {
				t.Fatalf("got onward %s return %s payload %q\nwant onward %s return %s", got.Onward, got.Return, got.Payload, tc.wantOn, tc.wantRt)
			}
		})
	}
}

// FuzzRuleRewrite feeds arbitrary packets through a rule both ways: no
// panic, and whatever the rule forwards decodes with the same payload.
func FuzzRuleRewrite(f *testing.F) {
	codec := routing.Codec{}
	for _, s := range [][2]string{
		{"/service/forward_to_n3/service/outlet", "/service/inlet"},
		{"/service/forward_to_n3/service/la/service/inlet", "/service/reg3/service/outlet"},
		{"/service/forward_to_n3/service/lb/service/reg3", "/service/x"},
	} {
		b, err := codec.Encode(&routing.Message{Onward: route(f, s[0]), Return: route(f, s[1]), Payload: []byte("p")})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{routing.WireVersion, 0xff, 0xff}, false)
	f.Fuzz(func(t *testing.T, p []byte, fromB bool) {
		r := testRule()
		from := r.a
		if fromB {
			from = r.b
		}
		st := newFwdScratch()
		st.cur = bytes.Clone(p)
		m, err := r.codec.DecodeAlloc(st.cur, st.alloc)
		if err != nil {
			return
		}
		out, _, ok := r.rewrite(nil, from, &m, len(p))
		if !ok {
			if len(out) != 0 {
				t.Fatal("a refused rewrite wrote output")
			}
			return
		}
		got, err := r.codec.Decode(out)
		if err != nil {
			t.Fatalf("the rewritten packet does not decode: %v", err)
		}
		if !bytes.Equal(got.Payload, m.Payload) {
			t.Fatal("the payload changed")
		}
	})
}

// recordLink is a Link that records what is sent on it.
type recordLink struct {
	Link
	sent [][]string
}

func (l *recordLink) Send(_ context.Context, packets [][]byte) error {
	var b []string
	for _, p := range packets {
		b = append(b, string(p))
	}
	l.sent = append(l.sent, b)
	return nil
}

// TestFenceInterception: a fence among the host's packets for a link is
// taken out, what came before it is sent first, and the direction starts.
func TestFenceInterception(t *testing.T) {
	r := testRule()
	rec := &recordLink{}
	r.b = &serverLink{Link: rec}
	r.fence[0] = fenceState{payload: []byte("FENCE0"), done: make(chan struct{})}
	r.fence[0].pending.Store(true)
	rs := []*fwdRule{r}
	r.b.rules.Store(&rs)
	if err := r.b.sendFromHost(context.Background(), [][]byte{[]byte("one"), []byte("xFENCE0"), []byte("two")}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rec.sent); got != "[[one] [two]]" {
		t.Fatalf("sent %s", got)
	}
	select {
	case <-r.fence[0].done:
	default:
		t.Fatal("the fence did not end the wait")
	}
	if r.fence[0].pending.Load() || r.fence[0].fenced.Load() != 1 || r.counts().FencedForwarded != 1 {
		t.Fatalf("fence state after interception: pending %v fenced %d", r.fence[0].pending.Load(), r.fence[0].fenced.Load())
	}
	// Once started, a packet that looks like the fence is just a packet.
	rec.sent = nil
	if err := r.b.sendFromHost(context.Background(), [][]byte{[]byte("xFENCE0")}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rec.sent); got != "[[xFENCE0]]" {
		t.Fatalf("sent %s", got)
	}
	// A pump waiting on a fence of a rule removed meanwhile is released.
	r2 := testRule()
	r2.fence[1] = fenceState{payload: []byte("F1"), done: make(chan struct{})}
	r2.fence[1].pending.Store(true)
	st := newFwdScratch()
	st.wait = append(st.wait, &r2.fence[1])
	go r2.deactivate()
	st.awaitFences()
	if len(st.wait) != 0 || r2.fence[1].pending.Load() {
		t.Fatal("the wait did not end")
	}
}
