package securechannel

import (
	"fmt"
	"sync/atomic"
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
	parts            [][]byte
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
// fragment arrived.
func (r *reassembler) add(f fragment) ([]byte, error) {
	maxCount := r.max/maxFragmentBody + 2
	if int(f.count) > maxCount {
		return nil, fmt.Errorf("a message of %d fragments exceeds the limit of %d bytes", f.count, r.max)
	}
	if r.parts == nil {
		r.parts = map[uint32]*partial{}
	}
	p := r.parts[f.id]
	if p == nil {
		for len(r.parts) >= maxPartials {
			r.evictOldest()
		}
		p = &partial{count: int(f.count), parts: make([][]byte, f.count)}
		r.parts[f.id] = p
		r.order = append(r.order, f.id)
	}
	if p.count != int(f.count) {
		r.drop(f.id)
		return nil, fmt.Errorf("fragments of message %d disagree on the count (%d, %d)", f.id, p.count, f.count)
	}
	if p.parts[f.index] != nil {
		return nil, nil // a duplicate; the replay window makes this rare
	}
	if p.size+len(f.part) > r.max {
		r.drop(f.id)
		return nil, fmt.Errorf("fragmented message %d exceeds the limit of %d bytes", f.id, r.max)
	}
	p.parts[f.index] = append([]byte(nil), f.part...)
	p.got++
	p.size += len(f.part)
	r.bytes += len(f.part)
	for r.bytes > 2*r.max && len(r.order) > 1 {
		r.evictOldest()
	}
	if p.got < p.count {
		return nil, nil
	}
	out := make([]byte, 0, p.size)
	for _, b := range p.parts {
		out = append(out, b...)
	}
	r.drop(f.id)
	return out, nil
}

func (r *reassembler) evictOldest() {
	if len(r.order) > 0 {
		r.drop(r.order[0])
	}
}

func (r *reassembler) drop(id uint32) {
	if p := r.parts[id]; p != nil {
		r.bytes -= p.size
		delete(r.parts, id)
	}
	for i, v := range r.order {
		if v == id {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}
