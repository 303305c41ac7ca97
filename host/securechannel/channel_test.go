package securechannel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/host/transports"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/routing"
)

func attachTCP(t *testing.T, n *node.Node) *transports.Binding {
	t.Helper()
	tr := tcptransport.New()
	t.Cleanup(func() { tr.Close() })
	b, err := transports.Attach(n, tr, transports.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// threeNodes builds initiator → relay → responder over TCP. The relay node
// forwards through a recording hop; the responder runs a listener at
// /service/api whose channels may reach uppercase, echo and whoami.
type threeNodes struct {
	ini, mid, resp *node.Node
	rec            *recordingHop
	lis            *Listener
	toAPI          routing.Route
}

func newThreeNodes(t *testing.T, respCfg ListenerConfig) *threeNodes {
	t.Helper()
	ini, mid, resp := newNode(t, "initiator"), newNode(t, "relay"), newNode(t, "responder")
	bi, bm, br := attachTCP(t, ini), attachTCP(t, mid), attachTCP(t, resp)
	startService(t, resp, "uppercase", services.Uppercase{})
	startService(t, resp, "echo", services.Echo{})
	startService(t, resp, "whoami", whoami{})
	respCfg.Allow = append(respCfg.Allow, "uppercase", "echo", "whoami")
	lis, err := Listen(resp, "api", respCfg)
	if err != nil {
		t.Fatal(err)
	}
	lr, err := br.Listen(tctx(t), "127.0.0.1:0", "api")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingHop{}
	startService(t, mid, "rec", rec)
	lm, err := bm.Listen(tctx(t), "127.0.0.1:0", "rec")
	if err != nil {
		t.Fatal(err)
	}
	toResp, err := bm.Connect(tctx(t), lr.Address)
	if err != nil {
		t.Fatal(err)
	}
	toMid, err := bi.Connect(tctx(t), lm.Address)
	if err != nil {
		t.Fatal(err)
	}
	toAPI := routing.Route{toMid.Worker, routing.Local("rec"), toResp.Worker, routing.Local("api")}
	return &threeNodes{ini: ini, mid: mid, resp: resp, rec: rec, lis: lis, toAPI: toAPI}
}

func TestChannelThroughRelaySeesOnlyCiphertext(t *testing.T) {
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	tn := newThreeNodes(t, ListenerConfig{Config: Config{Identity: idR}})
	ch, err := Create(tctx(t), tn.ini, tn.toAPI, Config{Identity: idI, Authorized: []string{idR.Identifier}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ch.PeerIdentifier(); got != idR.Identifier {
		t.Fatalf("initiator learnt %s, want %s", got, idR.Identifier)
	}
	eventually(t, "the responder's channel open", func() bool { return len(tn.lis.Channels()) == 1 })
	if got := tn.lis.Channels()[0].PeerIdentifier; got != idI.Identifier {
		t.Fatalf("responder learnt %s, want %s", got, idI.Identifier)
	}
	via := func(rest string) routing.Route {
		return append(routing.Route{ch.Address()}, route(t, rest)...)
	}
	const secret = "hello secret plaintext 7d1f"
	if got := request(t, tn.ini, via("/service/uppercase"), secret); got != strings.ToUpper(secret) {
		t.Fatalf("uppercase through the channel: %q", got)
	}
	// The responder's services see who sent the message.
	if got := request(t, tn.ini, via("/service/whoami"), "who"); got != idI.Identifier {
		t.Fatalf("whoami: %q, want %s", got, idI.Identifier)
	}
	// A message far larger than one Noise frame is split and joined.
	big := make([]byte, 700<<10)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	copy(big[1000:], secret)
	if got := request(t, tn.ini, via("/service/echo"), string(big)); got != string(big) {
		t.Fatalf("large echo: got %d bytes, want %d (equal: %v)", len(got), len(big), got == string(big))
	}
	n, found := tn.rec.contains([]byte(secret))
	if found {
		t.Fatal("the relay hop saw the plaintext")
	}
	if _, found := tn.rec.contains([]byte(strings.ToUpper(secret))); found {
		t.Fatal("the relay hop saw the reply's plaintext")
	}
	if _, found := tn.rec.contains(big[5000:5064]); found {
		t.Fatal("the relay hop saw part of the large message")
	}
	tn.rec.mu.Lock()
	recorded := 0
	for _, p := range tn.rec.seen {
		recorded += len(p)
	}
	tn.rec.mu.Unlock()
	if n < 6 || recorded < 2*len(big) {
		t.Fatalf("the relay hop recorded only %d messages, %d bytes; the test does not watch the path", n, recorded)
	}
	// Delivered is counted once the reply was handed on, which may be a
	// moment after the requester got it.
	eventually(t, "three replies counted", func() bool { return ch.Stats().Delivered == 3 })
	st := ch.Stats()
	if st.Dropped() != 0 || tn.lis.Stats().Dropped() != 0 {
		t.Fatalf("frames dropped on a clean path: %v / %v", st, tn.lis.Stats())
	}
	if st.Sent != 3 {
		t.Fatalf("initiator stats: %v", st)
	}

	// Closing the initiator's side stops the responder's worker too.
	before := tn.resp.WorkerCount()
	if err := ch.Close(tctx(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the responder's channel closed", func() bool {
		return len(tn.lis.Channels()) == 0 && tn.resp.WorkerCount() == before-1
	})
	if _, err := tn.ini.SendAndReceive(tctx(t), via("/service/echo"), []byte("x")); !errors.Is(err, node.ErrNoRoute) {
		t.Fatalf("send through a closed channel: %v", err)
	}
}

func TestChannelToUnauthorisedIdentifierFails(t *testing.T) {
	idI, idR, other := newIdentity(t, "ini"), newIdentity(t, "resp"), newIdentity(t, "other")
	tn := newThreeNodes(t, ListenerConfig{Config: Config{Identity: idR}})
	before := tn.ini.WorkerCount()
	_, err := Create(tctx(t), tn.ini, tn.toAPI, Config{Identity: idI, Authorized: []string{other.Identifier}})
	if !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("Create toward a node with another identity: %v, want ErrNotAuthorized", err)
	}
	if !strings.Contains(err.Error(), idR.Identifier) || !strings.Contains(err.Error(), other.Identifier) {
		t.Fatalf("the error does not name the identifiers: %v", err)
	}
	eventually(t, "initiator worker gone", func() bool { return tn.ini.WorkerCount() == before })
	// The responder was told and dropped its half-open channel.
	eventually(t, "responder dropped its half-open channel", func() bool {
		tn.lis.mu.Lock()
		defer tn.lis.mu.Unlock()
		return len(tn.lis.channels) == 0
	})
}

func TestListenerRefusesUnauthorisedInitiator(t *testing.T) {
	idI, idR, other := newIdentity(t, "ini"), newIdentity(t, "resp"), newIdentity(t, "other")
	tn := newThreeNodes(t, ListenerConfig{Config: Config{Identity: idR, Authorized: []string{other.Identifier}}})
	_, err := Create(tctx(t), tn.ini, tn.toAPI, Config{Identity: idI})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), idI.Identifier) {
		t.Fatalf("Create by an identity the listener does not authorise: %v", err)
	}
	if tn.lis.Stats().Refused != 1 {
		t.Fatalf("listener stats: %v", tn.lis.Stats())
	}
	// The authorised identity gets in.
	if err := tn.lis.Authorize(idI.Identifier); err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), tn.ini, tn.toAPI, Config{Identity: idI})
	if err != nil {
		t.Fatal(err)
	}
	if got := request(t, tn.ini, append(routing.Route{ch.Address()}, routing.Local("uppercase")), "ok"); got != "OK" {
		t.Fatal(got)
	}
}

func TestRekeyBothDirections(t *testing.T) {
	n := newNode(t, "one")
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	startService(t, n, "echo", services.Echo{})
	lis, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR, RekeyAfter: 3}, Allow: []string{"/service/echo"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), n, route(t, "/service/api"), Config{Identity: idI, RekeyAfter: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		p := strings.Repeat("x", i)
		if got := request(t, n, routing.Route{ch.Address(), routing.Local("echo")}, p); got != p {
			t.Fatalf("echo %d: %q", i, got)
		}
	}
	si, sr := ch.Stats(), lis.Stats()
	// 40 frames out (rekey every 5) and 41 in (ready + 40, every 3).
	if si.Rekeys < 7+13 || sr.Rekeys < 7+13 {
		t.Fatalf("rekeys: initiator %d, responder %d", si.Rekeys, sr.Rekeys)
	}
	if si.Dropped()+sr.Dropped() != 0 {
		t.Fatalf("drops: %v / %v", si, sr)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	n := newNode(t, "one")
	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	s := newSink()
	startService(t, n, "sink", s)
	if _, err := Listen(n, "", ListenerConfig{Config: Config{Identity: idR, MaxMessageSize: 200 << 10}, Allow: []string{"sink"}}); err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), n, route(t, "/service/api"), Config{Identity: idI, MaxMessageSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	to := routing.Route{ch.Address(), routing.Local("sink")}
	// Larger than the receiver's limit: the receiver drops it.
	if err := n.Send(tctx(t), to, bytes.Repeat([]byte("a"), 300<<10)); err != nil {
		t.Fatal(err)
	}
	if err := n.Send(tctx(t), to, []byte("small")); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "small" {
		t.Fatalf("got %d bytes first, want the small message", len(got))
	}
	if d := ch.Stats(); d.Sent != 2 {
		t.Fatalf("sent: %v", d)
	}
}
