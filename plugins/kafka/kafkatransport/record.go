package kafkatransport

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record headers every record of the transport carries. The record value is
// the packet itself (opaque to the transport); the key is the link id, so
// every record of a link lands on one partition and keeps its order.
const (
	// HeaderReplyTo names the sender's inbound topic: where records for the
	// other direction of the link go.
	HeaderReplyTo = "ferry-reply-to"
	// HeaderLink is RecordVersion, a kind byte, a direction byte and the
	// 8-byte big-endian link id.
	HeaderLink = "ferry-link"
)

// RecordVersion is the first byte of the HeaderLink value.
const RecordVersion = 1

const linkHeaderLen = 11

// Record kinds.
const (
	kindOpen      = 1 // a dialled link announces itself (Accept returns)
	kindData      = 2 // the value is one packet
	kindHeartbeat = 3 // the sender is alive
	kindClose     = 4 // clean close: the peer's Recv returns io.EOF
	kindRefuse    = 5 // the listener refused the link (max_links)
	kindDataEnd   = 6 // a packet, the last of one Send: Recv batches end there
)

// Directions: which end of a link produced the record.
const (
	fromDialer   = 1 // to a listener's topic
	fromAcceptor = 2 // back to a dialler's inbound topic
)

// Reasons a record is dropped, wrapped by parseRecord's errors.
var (
	errNoHeader  = errors.New("no ferry headers")
	errBadHeader = errors.New("malformed ferry header")
)

type recordMeta struct {
	kind    byte
	dir     byte
	link    uint64
	replyTo string
}

func linkHeader(kind, dir byte, link uint64) []byte {
	b := make([]byte, linkHeaderLen)
	b[0], b[1], b[2] = RecordVersion, kind, dir
	binary.BigEndian.PutUint64(b[3:], link)
	return b
}

func linkKey(link uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], link)
	return b[:]
}

// parseRecord reads the ferry headers of a record from the network. Any
// record it does not return nil for is dropped and counted by the caller.
func parseRecord(headers []kgo.RecordHeader) (recordMeta, error) {
	var m recordMeta
	var haveLink, haveReply bool
	for _, h := range headers {
		switch h.Key {
		case HeaderLink:
			if haveLink {
				return m, fmt.Errorf("%w: %s twice", errBadHeader, HeaderLink)
			}
			haveLink = true
			v := h.Value
			if len(v) != linkHeaderLen {
				return m, fmt.Errorf("%w: %s is %d bytes, want %d", errBadHeader, HeaderLink, len(v), linkHeaderLen)
			}
			if v[0] != RecordVersion {
				return m, fmt.Errorf("%w: record version %d, want %d", errBadHeader, v[0], RecordVersion)
			}
			m.kind, m.dir = v[1], v[2]
			if m.kind < kindOpen || m.kind > kindDataEnd {
				return m, fmt.Errorf("%w: unknown kind %d", errBadHeader, m.kind)
			}
			if m.dir != fromDialer && m.dir != fromAcceptor {
				return m, fmt.Errorf("%w: unknown direction %d", errBadHeader, m.dir)
			}
			m.link = binary.BigEndian.Uint64(v[3:])
		case HeaderReplyTo:
			if haveReply {
				return m, fmt.Errorf("%w: %s twice", errBadHeader, HeaderReplyTo)
			}
			haveReply = true
			if err := validTopic(string(h.Value)); err != nil {
				return m, fmt.Errorf("%w: %s: %v", errBadHeader, HeaderReplyTo, err)
			}
			m.replyTo = string(h.Value)
		}
	}
	switch {
	case !haveLink && !haveReply:
		return m, errNoHeader
	case !haveLink:
		return m, fmt.Errorf("%w: %s missing", errBadHeader, HeaderLink)
	case !haveReply:
		return m, fmt.Errorf("%w: %s missing", errBadHeader, HeaderReplyTo)
	}
	return m, nil
}
