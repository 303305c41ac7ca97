package securechannel

import (
	"fmt"
	"sync/atomic"

	"github.com/ferryhq/ferry/internal/payloadbuf"
)

// Stats counts what a channel (or all channels of a listener) did.
type Stats struct {
	// Sent and Delivered count whole messages: encrypted toward the peer,
	// and decrypted and delivered on this node.
	Sent      uint64 `json:"sent"`
	Delivered uint64 `json:"delivered"`
	// FramesSent and FramesReceived count frames on the wire.
	FramesSent     uint64 `json:"frames_sent"`
	FramesReceived uint64 `json:"frames_received"`
	// Dropped frames, by cause. Tampered: failed authentication.
	// Malformed: truncated or not a frame. Replayed: a counter seen
	// before. TooOld: behind the replay window, or implausibly far ahead.
	// NotOpen: data before the handshake finished or after close.
	// Unexpected: a handshake message out of turn.
	Tampered   uint64 `json:"tampered"`
	Malformed  uint64 `json:"malformed"`
	Replayed   uint64 `json:"replayed"`
	TooOld     uint64 `json:"too_old"`
	NotOpen    uint64 `json:"not_open"`
	Unexpected uint64 `json:"unexpected"`
	// Undeliverable: decrypted, but the route onward failed or was refused.
	Undeliverable uint64 `json:"undeliverable"`
	// Refused: handshakes refused (peer not authorised, bad proof, too
	// many handshakes in progress).
	Refused uint64 `json:"refused"`
	// Rekeys counts key changes, both directions.
	Rekeys uint64 `json:"rekeys"`
	// ErrorReports counts error messages from the route (a node on the way
	// or the peer's node could not deliver a frame); each makes the channel
	// probe its peer, and a peer that does not answer closes the channel.
	ErrorReports uint64 `json:"error_reports"`
	// Probes counts probes sent after an error report.
	Probes uint64 `json:"probes"`
}

// Dropped sums every cause of a dropped frame.
func (s Stats) Dropped() uint64 {
	return s.Tampered + s.Malformed + s.Replayed + s.TooOld + s.NotOpen + s.Unexpected
}

func (s Stats) String() string {
	return fmt.Sprintf("sent=%d delivered=%d frames_sent=%d frames_received=%d tampered=%d malformed=%d replayed=%d too_old=%d not_open=%d unexpected=%d undeliverable=%d refused=%d rekeys=%d error_reports=%d probes=%d",
		s.Sent, s.Delivered, s.FramesSent, s.FramesReceived, s.Tampered, s.Malformed, s.Replayed, s.TooOld, s.NotOpen, s.Unexpected, s.Undeliverable, s.Refused, s.Rekeys, s.ErrorReports, s.Probes)
}

const (
	cSent = iota
	cDelivered
	cFramesSent
	cFramesReceived
	cTampered
	cMalformed
	cReplayed
	cTooOld
	cNotOpen
	cUnexpected
	cUndeliverable
	cRefused
	cRekeys
	cErrorReports
	cProbes
	nCounters
)

type counters struct{ c [nCounters]atomic.Uint64 }

func (k *counters) snapshot() Stats {
	return Stats{
		Sent: k.c[cSent].Load(), Delivered: k.c[cDelivered].Load(),
		FramesSent: k.c[cFramesSent].Load(), FramesReceived: k.c[cFramesReceived].Load(),
		Tampered: k.c[cTampered].Load(), Malformed: k.c[cMalformed].Load(),
		Replayed: k.c[cReplayed].Load(), TooOld: k.c[cTooOld].Load(),
		NotOpen: k.c[cNotOpen].Load(), Unexpected: k.c[cUnexpected].Load(),
		Undeliverable: k.c[cUndeliverable].Load(), Refused: k.c[cRefused].Load(),
		Rekeys: k.c[cRekeys].Load(), ErrorReports: k.c[cErrorReports].Load(),
		Probes: k.c[cProbes].Load(),
	}
}

// Reassembly limits: a peer can hold at most maxPartials incomplete
// messages, and at most twice the message limit in bytes; the oldest
// incomplete message is dropped to make room.
const maxPartials = 16

type partial struct {
	count, got, size int
	have             []bool
	// buf holds the message as it is assembled: fragment i at
	// i*maxFragmentBody (every fragment but the last is exactly that long,
	// as sendFragments splits), so no fragment is copied twice.
	buf      []byte
	reserved int // bytes counted in reassembler.bytes for buf
}

// reassembler joins fragmented messages. It only sees authenticated
// plaintext, but still bounds what a peer can make it hold.
type reassembler struct {
	max   int
	parts map[uint32]*partial
	order []uint32
	bytes int
}

// add stores one fragment and returns the whole message once every
// fragment arrived. The message is in a buffer from internal/payloadbuf
// that nothing else references: the caller may put it back once it is
// done with it.
func (r *reassembler) add(f fragment) ([]byte, error) {
	maxCount := r.max/maxFragmentBody + 2
	if int(f.count) > maxCount {
		return nil, fmt.Errorf("a message of %d fragments exceeds the limit of %d bytes", f.count, r.max)
	}
	if (int(f.count)-1)*maxFragmentBody >= r.max {
		return nil, fmt.Errorf("a message of %d fragments exceeds the limit of %d bytes", f.count, r.max)
	}
	if len(f.part) > maxFragmentBody || (int(f.index) < int(f.count)-1 && len(f.part) != maxFragmentBody) {
		r.drop(f.id)
		return nil, fmt.Errorf("fragment %d of %d of message %d has %d bytes", f.index, f.count, f.id, len(f.part))
	}
	if r.parts == nil {
		r.parts = map[uint32]*partial{}
	}
	p := r.parts[f.id]
	if p == nil {
		for len(r.parts) >= maxPartials {
			r.evictOldest()
		}
		n := int(f.count) * maxFragmentBody
		p = &partial{count: int(f.count), have: make([]bool, f.count), buf: payloadbuf.Get(n), reserved: n}
		r.parts[f.id] = p
		r.order = append(r.order, f.id)
		r.bytes += n
	}
	if p.count != int(f.count) {
		r.drop(f.id)
		return nil, fmt.Errorf("fragments of message %d disagree on the count (%d, %d)", f.id, p.count, f.count)
	}
	if p.have[f.index] {
		return nil, nil // a duplicate; the replay window makes this rare
	}
	if p.size+len(f.part) > r.max {
		r.drop(f.id)
		return nil, fmt.Errorf("fragmented message %d exceeds the limit of %d bytes", f.id, r.max)
	}
	copy(p.buf[int(f.index)*maxFragmentBody:], f.part)
	p.have[f.index] = true
	p.got++
	p.size += len(f.part)
	for r.bytes > 2*r.max {
		i := 0
		if len(r.order) > 0 && r.order[0] == f.id {
			i = 1 // keep the message this fragment belongs to
		}
		if i >= len(r.order) {
			break
		}
		r.drop(r.order[i])
	}
	if p.got < p.count {
		return nil, nil
	}
	r.drop(f.id)
	return p.buf[:p.size], nil
}

func (r *reassembler) evictOldest() {
	if len(r.order) > 0 {
		r.drop(r.order[0])
	}
}

func (r *reassembler) drop(id uint32) {
	// An incomplete message's buffer is left to the garbage collector:
	// only a returned message goes back to the pool, by its one holder.
	if p := r.parts[id]; p != nil {
		r.bytes -= p.reserved
		delete(r.parts, id)
	}
	for i, v := range r.order {
		if v == id {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}
