package kafkatransport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryhq/ferry/plugins/kafka/internal/kafkatest"
	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
)

// These tests run inside the package so they can produce records with
// crafted ferry headers, as a hostile or broken producer could.

func quick(brokers string, kv ...string) map[string]string {
	m := map[string]string{
		SettingBrokers:           brokers,
		SettingHeartbeatInterval: "200ms",
		SettingIdleTimeout:       "3s",
		SettingSessionTimeout:    "6s",
		SettingDialTimeout:       "8s",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var seq atomic.Int64

func topicFor(t testing.TB, what string) string {
	return fmt.Sprintf("%s.%s.%d", strings.ReplaceAll(t.Name(), "/", "."), what, seq.Add(1))
}

func configured(t testing.TB, settings map[string]string) *Transport {
	t.Helper()
	tr := newTransport()
	if err := tr.Configure(context.Background(), settings); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// recvPackets receives until n packets arrived and returns copies.
func recvPackets(ctx context.Context, t testing.TB, l transport.Link, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for len(out) < n {
		b, err := l.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv after %d of %d packets: %v", len(out), n, err)
		}
		for _, p := range b {
			out = append(out, bytes.Clone(p))
		}
	}
	if len(out) != n {
		t.Fatalf("received %d packets, want %d", len(out), n)
	}
	return out
}

func rawClient(t testing.TB, brokers string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestRequestReply: two nodes, each listening on its inbound topic; a
// request goes to the other's topic and the reply comes back on the same
// link to the sender's topic, both ways.
func TestRequestReply(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	ta, tb := topicFor(t, "a"), topicFor(t, "b")
	a := configured(t, quick(addr, SettingInboundTopic, ta))
	b := configured(t, quick(addr, SettingInboundTopic, tb))
	ctx := ctxFor(t, 30*time.Second)
	la, err := a.Listen(ctx, ta)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Listen(ctx, tb)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []struct {
		name    string
		from    *Transport
		to      transport.Listener
		toTopic string
		reply   string
	}{{"b_to_a", b, la, ta, tb}, {"a_to_b", a, lb, tb, ta}} {
		t.Run(dir.name, func(t *testing.T) {
			c, err := dir.from.Dial(ctx, dir.toTopic)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := dir.to.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.RemoteAddr() != dir.reply || c.RemoteAddr() != dir.toTopic {
				t.Errorf("addresses: accepted link's remote %q (want %q), dialled link's remote %q", s.RemoteAddr(), dir.reply, c.RemoteAddr())
			}
			for i := range 20 {
				req := []byte("request " + strconv.Itoa(i))
				if err := c.Send(ctx, [][]byte{req}); err != nil {
					t.Fatal(err)
				}
				got := recvPackets(ctx, t, s, 1)[0]
				if !bytes.Equal(got, req) {
					t.Fatalf("request %d arrived as %q", i, got)
				}
				if err := s.Send(ctx, [][]byte{bytes.ToUpper(got)}); err != nil {
					t.Fatal(err)
				}
				if rep := recvPackets(ctx, t, c, 1)[0]; string(rep) != strings.ToUpper(string(req)) {
					t.Fatalf("reply %d: %q", i, rep)
				}
			}
		})
	}
}

// TestBadRecords: records without the ferry headers, with garbage in them,
// without the reply-topic header, over the size limit, and a packet whose
// content claims a 4 GiB length are dropped and counted or passed through
// as opaque bytes; nothing breaks, and a healthy link keeps working.
func TestBadRecords(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	topic := topicFor(t, "in")
	srv := configured(t, quick(addr, SettingMaxMessageSize, "4096"))
	cli := configured(t, quick(addr))
	ctx := ctxFor(t, 30*time.Second)
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lk := c.(*link)
	raw := rawClient(t, addr)
	produce := func(r *kgo.Record) {
		t.Helper()
		r.Topic = topic
		if err := raw.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	replyTo := kgo.RecordHeader{Key: HeaderReplyTo, Value: []byte(lk.local)}
	dataHdr := kgo.RecordHeader{Key: HeaderLink, Value: linkHeader(kindData, fromDialer, lk.id)}
	produce(&kgo.Record{Value: []byte("no headers at all")})
	produce(&kgo.Record{Value: []byte("other headers"), Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("00-ab")}}})
	produce(&kgo.Record{Value: []byte("garbage link header"), Headers: []kgo.RecordHeader{replyTo, {Key: HeaderLink, Value: []byte{0xde, 0xad, 0xbe, 0xef}}}})
	produce(&kgo.Record{Value: []byte("garbage reply-to"), Headers: []kgo.RecordHeader{{Key: HeaderReplyTo, Value: []byte("../../etc\x00")}, dataHdr}})
	produce(&kgo.Record{Value: []byte("missing reply-to"), Headers: []kgo.RecordHeader{dataHdr}})
	produce(&kgo.Record{Value: bytes.Repeat([]byte{'x'}, 5000), Headers: []kgo.RecordHeader{replyTo, dataHdr}})
	// A well-formed record of the link whose packet claims a 4 GiB
	// length: the transport carries packets opaquely (it allocates by
	// the record's real size), and the routing codec refuses the claim.
	claim := []byte{routing.WireVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}
	produce(&kgo.Record{Key: lk.key, Value: claim, Headers: []kgo.RecordHeader{replyTo, {Key: HeaderLink, Value: linkHeader(kindDataEnd, fromDialer, lk.id)}}})
	if err := c.Send(ctx, [][]byte{[]byte("healthy")}); err != nil {
		t.Fatal(err)
	}
	got := recvPackets(ctx, t, s, 2)
	if !bytes.Equal(got[0], claim) || string(got[1]) != "healthy" {
		t.Fatalf("got %q, want the 4 GiB claim verbatim then healthy", got)
	}
	if _, err := (routing.Codec{}).Decode(got[0]); err == nil {
		t.Fatal("routing decoded a 4 GiB length claim")
	}
	cs := ln.(transport.Counters).Counters()
	for name, want := range map[string]uint64{"dropped_no_header": 2, "dropped_bad_header": 3, "dropped_oversize": 1} {
		if cs[name] != want {
			t.Errorf("listener counter %s = %d, want %d (all: %v)", name, cs[name], want, cs)
		}
	}
	// The link and the listener still work both ways.
	if err := s.Send(ctx, [][]byte{[]byte("reply")}); err != nil {
		t.Fatal(err)
	}
	if got := recvPackets(ctx, t, c, 1); string(got[0]) != "reply" {
		t.Fatalf("reply: %q", got[0])
	}
	c2, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := ln.Accept(ctx); err != nil {
		t.Fatalf("Accept after bad records: %v", err)
	}
}

// TestTooLarge: a packet over the topic's max.message.bytes at the broker
// (read at Dial) is refused with ErrTooLarge before anything is produced.
func TestTooLarge(t *testing.T) {
	_, addr := kafkatest.StartBroker(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "20000"}))
	topic := topicFor(t, "in")
	srv := configured(t, quick(addr))
	cli := configured(t, quick(addr))
	ctx := ctxFor(t, 30*time.Second)
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, [][]byte{make([]byte, 19900)}); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Send over the broker's limit: %v, want ErrTooLarge", err)
	}
	if err := c.Send(ctx, [][]byte{make([]byte, 19000)}); err != nil {
		t.Fatalf("Send under the broker's limit: %v", err)
	}
	if got := recvPackets(ctx, t, s, 1); len(got[0]) != 19000 {
		t.Fatalf("got %d bytes", len(got[0]))
	}
	if n := c.(transport.Counters).Counters()["produce_errors"]; n != 0 {
		t.Errorf("produce_errors = %d: the oversize packet reached the broker", n)
	}
}

// TestMaxLinks: a listener keeps at most max_links sender links; the next
// one is refused and its dialler's Recv says so.
func TestMaxLinks(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	topic := topicFor(t, "in")
	srv := configured(t, quick(addr, SettingMaxLinks, "2"))
	cli := configured(t, quick(addr))
	ctx := ctxFor(t, 30*time.Second)
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		c, err := cli.Dial(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := ln.Accept(ctx); err != nil {
			t.Fatalf("Accept %d: %v", i, err)
		}
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Until its Recv sees the refusal, the refused link heartbeats: those
	// records are dropped (as its opening record was, when refused), not
	// refused and counted again.
	counters := ln.(transport.Counters).Counters
	waitFor(t, 10*time.Second, "a heartbeat of the refused link dropped", func() bool {
		return counters()["dropped_unknown_link"] >= 2
	})
	if _, err := c.Recv(ctx); !errors.Is(err, ErrRefused) {
		t.Fatalf("Recv on the link over max_links: %v, want ErrRefused", err)
	}
	if n := counters()["links_refused"]; n != 1 {
		t.Errorf("links_refused = %d, want 1", n)
	}
}

// TestResumeAfterCleanRestart: a listening node that stops cleanly and
// starts again (same topic, same group) gets what was sent while it was
// down, and nothing it had handled before.
func TestResumeAfterCleanRestart(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	topic := topicFor(t, "in")
	cli := configured(t, quick(addr, SettingIdleTimeout, "30s"))
	ctx := ctxFor(t, 60*time.Second)
	srv := configured(t, quick(addr, SettingIdleTimeout, "30s"))
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := c.Send(ctx, [][]byte{[]byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, 50)
	for i, p := range recvPackets(ctx, t, s, 50) {
		if string(p) != strconv.Itoa(i) {
			t.Fatalf("packet %d: %q", i, p)
		}
	}
	// Records 50..59 arrive but are never handed over (no Recv): a clean
	// stop keeps them uncommitted.
	send(50, 60)
	waitFor(t, 10*time.Second, "records queued on the link", func() bool {
		l := s.(*link)
		l.qmu.Lock()
		defer l.qmu.Unlock()
		return len(l.items) == 10
	})
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	send(60, 100) // while the node is down
	srv2 := configured(t, quick(addr, SettingIdleTimeout, "30s"))
	ln2, err := srv2.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ln2.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A record the consumer dispatched before the listener was attached
	// was dropped and committed: lost for good (a later heartbeat then
	// opened a link that never got a packet).
	if n := ln2.(transport.Counters).Counters()["dropped_no_listener"]; n != 0 {
		t.Fatalf("after restart, %d records dropped for want of a listener", n)
	}
	for i, p := range recvPackets(ctx, t, s2, 50) {
		if string(p) != strconv.Itoa(50+i) {
			t.Fatalf("after restart, packet %d: %q, want %d", i, p, 50+i)
		}
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if b, err := s2.Recv(short); err == nil {
		t.Fatalf("after restart, %d packets more than were sent", len(b))
	}
}

// TestBrokerRestart: with the broker down a Send fails within
// produce_timeout and the links report it; when the broker is back on the
// same port (with its data), a new dial works and the listener (never
// re-created) accepts it.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	c1, addr := kafkatest.StartBroker(t, kfake.DataDir(dir))
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	topic := topicFor(t, "in")
	settings := quick(addr, SettingProduceTimeout, "2s", SettingHeartbeatInterval, "300ms", SettingIdleTimeout, "3s", SettingDialTimeout, "3s")
	srv := configured(t, settings)
	cli := configured(t, settings)
	ctx := ctxFor(t, 120*time.Second)
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, [][]byte{[]byte("before")}); err != nil {
		t.Fatal(err)
	}
	recvPackets(ctx, t, s, 1)

	c1.Close()
	start := time.Now()
	err = c.Send(ctx, [][]byte{[]byte("while down")})
	if err == nil {
		t.Fatal("Send with the broker down succeeded")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Send with the broker down took %s to fail (produce_timeout 2s)", d)
	}
	t.Logf("Send with the broker down: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	if err := c.Send(ctx, [][]byte{[]byte("again")}); err == nil {
		t.Error("Send on a link broken by the outage succeeded")
	}
	if n := c.(transport.Counters).Counters()["produce_errors"]; n == 0 {
		t.Error("produce_errors did not count the outage")
	}
	if _, err := s.Recv(ctx); !errors.Is(err, ErrIdle) {
		t.Errorf("accepted link's Recv with the broker down: %v, want ErrIdle", err)
	}

	c2, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.DataDir(dir))
	if err != nil {
		t.Fatalf("restart kfake on port %d: %v", p, err)
	}
	t.Cleanup(c2.Close)
	// Recovery: a fresh link works end to end again (the clients reconnect
	// with backoff, so the first attempts may still fail).
	var tries int
	waitFor(t, 90*time.Second, "a working link after the broker came back", func() bool {
		tries++
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c3, err := cli.Dial(actx, topic)
		if err != nil {
			t.Logf("attempt %d: dial: %v", tries, err)
			return false
		}
		defer c3.Close()
		s3, err := ln.Accept(actx)
		if err != nil {
			t.Logf("attempt %d: accept: %v", tries, err)
			return false
		}
		defer s3.Close()
		if err := c3.Send(actx, [][]byte{[]byte("after")}); err != nil {
			t.Logf("attempt %d: send: %v", tries, err)
			return false
		}
		for {
			b, err := s3.Recv(actx)
			if err != nil {
				t.Logf("attempt %d: recv: %v", tries, err)
				return false
			}
			if len(b) > 0 && string(b[len(b)-1]) == "after" {
				break
			}
		}
		if err := s3.Send(actx, [][]byte{[]byte("reply")}); err != nil {
			t.Logf("attempt %d: reply: %v", tries, err)
			return false
		}
		b, err := c3.Recv(actx)
		if err != nil || len(b) != 1 || string(b[0]) != "reply" {
			t.Logf("attempt %d: reply recv: %q %v", tries, b, err)
			return false
		}
		return true
	})
}

// TestCloseGivesEOF: the dialler's clean Close reaches the acceptor as
// io.EOF after the packets sent before it.
func TestCloseGivesEOF(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	topic := topicFor(t, "in")
	srv, cli := configured(t, quick(addr)), configured(t, quick(addr))
	ctx := ctxFor(t, 30*time.Second)
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, [][]byte{[]byte("last")}); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	recvPackets(ctx, t, s, 1)
	if _, err := s.Recv(ctx); err != io.EOF {
		t.Fatalf("Recv after the peer's Close: %v, want io.EOF", err)
	}
}

func TestConfigureValidates(t *testing.T) {
	bad := []map[string]string{
		{"nope": "1"},
		{SettingBrokers: "no-port"},
		{SettingBrokers: ""},
		{SettingInboundTopic: "a/b"},
		{SettingSASLMechanism: "GSSAPI", SettingSASLUser: "u"},
		{SettingSASLMechanism: "PLAIN"},
		{SettingSASLUser: "u"},
		{SettingTLSCAFile: "/nonexistent"},
		{SettingTLS: "true", SettingTLSCAFile: "/nonexistent"},
		{SettingHeartbeatInterval: "10s", SettingIdleTimeout: "15s"},
		{SettingMaxMessageSize: strconv.Itoa(DefaultMaxMessageSize + 1)},
		{SettingMaxLinks: "0"},
		{SettingProduceTimeout: "-1s"},
	}
	for _, s := range bad {
		if err := newTransport().Configure(context.Background(), s); err == nil {
			t.Errorf("Configure(%v) accepted", s)
		}
	}
	good := map[string]string{SettingBrokers: "127.0.0.1:1,127.0.0.1:2", SettingSASLMechanism: "scram-sha-512",
		SettingSASLUser: "u", SettingSASLPassword: "p", SettingTLS: "true", SettingInboundTopic: "n1.in_box-2"}
	if err := newTransport().Configure(context.Background(), good); err != nil {
		t.Errorf("Configure(%v): %v", good, err)
	}
	for _, st := range newTransport().Info().Settings {
		if st.Default == "" {
			continue
		}
		if err := newTransport().Configure(context.Background(), map[string]string{st.Name: st.Default}); err != nil {
			t.Errorf("the documented default of %s (%q) is refused: %v", st.Name, st.Default, err)
		}
	}
}

func TestDialUnknownTopic(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	cli := configured(t, quick(addr))
	ctx := ctxFor(t, 30*time.Second)
	if _, err := cli.Dial(ctx, "nobody-listens-here"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Dial of a topic that does not exist: %v", err)
	}
}

func waitFor(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
