package kafkatransport

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzParseRecord feeds arbitrary header sets (what anyone able to produce
// to a topic controls) to the record header decoder: it must never panic,
// and whatever it accepts must be what the encoder would have written.
func FuzzParseRecord(f *testing.F) {
	f.Add(HeaderReplyTo, []byte("n1"), HeaderLink, linkHeader(kindData, fromDialer, 42), "", []byte(nil))
	f.Add(HeaderReplyTo, []byte("n1"), HeaderLink, linkHeader(kindClose, fromAcceptor, 1<<63), "x", []byte("y"))
	f.Add(HeaderLink, []byte{RecordVersion, 9, 9, 0, 0, 0, 0, 0, 0, 0, 1}, HeaderReplyTo, []byte("../etc"), "", []byte(nil))
	f.Add(HeaderReplyTo, bytes.Repeat([]byte("a"), 300), HeaderLink, []byte{0xff, 0xff, 0xff, 0xff}, "", []byte(nil))
	f.Add(HeaderLink, linkHeader(kindOpen, fromDialer, 7), HeaderLink, linkHeader(kindOpen, fromDialer, 7), HeaderReplyTo, []byte("t"))
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte, k3 string, v3 []byte) {
		hs := []kgo.RecordHeader{{Key: k1, Value: v1}, {Key: k2, Value: v2}, {Key: k3, Value: v3}}
		m, err := parseRecord(hs)
		if err != nil {
			return
		}
		if validTopic(m.replyTo) != nil {
			t.Fatalf("accepted reply topic %q", m.replyTo)
		}
		if m.kind < kindOpen || m.kind > kindDataEnd || (m.dir != fromDialer && m.dir != fromAcceptor) {
			t.Fatalf("accepted kind %d dir %d", m.kind, m.dir)
		}
		again, err := parseRecord([]kgo.RecordHeader{
			{Key: HeaderReplyTo, Value: []byte(m.replyTo)},
			{Key: HeaderLink, Value: linkHeader(m.kind, m.dir, m.link)},
		})
		if err != nil || again != m {
			t.Fatalf("re-encoded %+v parses as %+v, %v", m, again, err)
		}
	})
}

func TestParseRecordRejects(t *testing.T) {
	good := func() []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: HeaderReplyTo, Value: []byte("n1")}, {Key: HeaderLink, Value: linkHeader(kindData, fromDialer, 5)}}
	}
	if m, err := parseRecord(good()); err != nil || m.replyTo != "n1" || m.link != 5 || m.kind != kindData || m.dir != fromDialer {
		t.Fatalf("good headers: %+v, %v", m, err)
	}
	cases := map[string][]kgo.RecordHeader{
		"none":          nil,
		"other headers": {{Key: "trace", Value: []byte("x")}},
		"no reply-to":   good()[1:],
		"no link":       good()[:1],
		"short link":    {{Key: HeaderReplyTo, Value: []byte("n1")}, {Key: HeaderLink, Value: []byte{1, 2}}},
		"version":       {{Key: HeaderReplyTo, Value: []byte("n1")}, {Key: HeaderLink, Value: append([]byte{2}, linkHeader(kindData, fromDialer, 5)[1:]...)}},
		"kind":          {{Key: HeaderReplyTo, Value: []byte("n1")}, {Key: HeaderLink, Value: linkHeader(0, fromDialer, 5)}},
		"direction":     {{Key: HeaderReplyTo, Value: []byte("n1")}, {Key: HeaderLink, Value: linkHeader(kindData, 3, 5)}},
		"bad topic":     {{Key: HeaderReplyTo, Value: []byte("a/b")}, {Key: HeaderLink, Value: linkHeader(kindData, fromDialer, 5)}},
		"empty topic":   {{Key: HeaderReplyTo, Value: nil}, {Key: HeaderLink, Value: linkHeader(kindData, fromDialer, 5)}},
		"twice":         append(good(), good()[0]),
	}
	for name, hs := range cases {
		if m, err := parseRecord(hs); err == nil {
			t.Errorf("%s: accepted as %+v", name, m)
		}
	}
}
