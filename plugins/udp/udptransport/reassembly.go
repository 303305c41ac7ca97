package udptransport

import (
	"sync"
	"sync/atomic"
	"time"
)

// replayBits is how many recent message ids a link remembers to drop
// duplicates (the network may duplicate datagrams; a message is delivered
// at most once). An id older than that is dropped too: reordering by more
// than 1024 messages is treated as loss.
const replayBits = 1024

// replayWindow is an anti-replay window over 32-bit message ids in serial
// number arithmetic (they wrap), as IPsec and DTLS keep one.
type replayWindow struct {
	init bool
	top  uint32
	bits [replayBits / 64]uint64 // bit id%replayBits set: id was delivered
}

// seen reports whether id was already marked or is too old to tell.
func (w *replayWindow) seen(id uint32) bool {
	if !w.init {
		return false
	}
	d := int32(id - w.top)
	if d > 0 {
		return false
	}
	if -int64(d) >= replayBits {
		return true
	}
	i := id % replayBits
	return w.bits[i/64]&(1<<(i%64)) != 0
}

// mark records id as delivered.
func (w *replayWindow) mark(id uint32) {
	if !w.init {
		w.init = true
		w.top = id
		w.bits = [replayBits / 64]uint64{}
	} else if d := int32(id - w.top); d > 0 {
		if d >= replayBits {
			w.bits = [replayBits / 64]uint64{}
		} else {
			for k := w.top + 1; k != id+1; k++ {
				i := k % replayBits
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.top = id
	} else if -int64(d) >= replayBits {
		return
	}
	i := id % replayBits
	w.bits[i/64] |= 1 << (i % 64)
}

// budget is reassembly memory shared by every link of a transport.
type budget struct {
	max  int64
	used atomic.Int64
}

func (b *budget) reserve(n int) bool {
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *budget) release(n int) { b.used.Add(-int64(n)) }

// partial is a message being reassembled.
type partial struct {
	msgID   uint32
	total   int
	count   int
	got     int
	have    []uint64
	buf     []byte
	started time.Time
}

// reassembler collects the fragments of one link's messages. Only the
// link's reading goroutine uses it. Memory is reserved for a message's full
// length when its first fragment arrives, against a per-link cap and the
// transport-wide budget; a message whose fragments do not all arrive within
// the timeout is dropped whole.
type reassembler struct {
	mu      sync.Mutex // the reading goroutine, and release when the link ends
	parts   map[uint32]*partial
	used    int
	peerCap int
	total   *budget
	timeout time.Duration
	cnt     *counters
}

func newReassembler(peerCap int, total *budget, timeout time.Duration, cnt *counters) *reassembler {
	return &reassembler{parts: map[uint32]*partial{}, peerCap: peerCap, total: total, timeout: timeout, cnt: cnt}
}

// add takes one fragment (already checked by decodeHeader) and returns the
// whole message when this fragment completed it.
func (r *reassembler) add(h header, now time.Time) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.parts[h.MsgID]
	if p == nil {
		total := int(h.Total)
		if !r.makeRoom(total) {
			r.cnt.add(cDroppedFragments, 1)
			return nil
		}
		p = &partial{msgID: h.MsgID, total: total, count: int(h.Count),
			have: make([]uint64, (int(h.Count)+63)/64), buf: make([]byte, total), started: now}
		r.parts[h.MsgID] = p
		r.used += total
	} else if p.total != int(h.Total) || p.count != int(h.Count) {
		// Two messages under one id: neither can be trusted whole.
		r.cnt.add(cBadDatagrams, 1)
		r.drop(p)
		return nil
	}
	i := int(h.Index)
	if p.have[i/64]&(1<<(i%64)) != 0 {
		r.cnt.add(cDuplicates, 1)
		return nil
	}
	off, _, _ := fragmentSpan(p.total, p.count, i)
	copy(p.buf[off:], h.Payload)
	p.have[i/64] |= 1 << (i % 64)
	p.got++
	if p.got < p.count {
		return nil
	}
	delete(r.parts, p.msgID)
	r.used -= p.total
	r.total.release(p.total)
	return p.buf
}

// makeRoom reserves n bytes, evicting this link's oldest partial messages
// when the link is at its cap.
func (r *reassembler) makeRoom(n int) bool {
	if n > r.peerCap {
		return false
	}
	for r.used+n > r.peerCap {
		var oldest *partial
		for _, p := range r.parts {
			if oldest == nil || p.started.Before(oldest.started) {
				oldest = p
			}
		}
		if oldest == nil {
			return false
		}
		r.drop(oldest)
	}
	return r.total.reserve(n)
}

func (r *reassembler) drop(p *partial) {
	delete(r.parts, p.msgID)
	r.used -= p.total
	r.total.release(p.total)
	r.cnt.add(cDroppedFragments, uint64(p.got))
}

// pending is how many bytes are reserved for partial messages.
func (r *reassembler) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used
}

// sweep drops messages older than the timeout.
func (r *reassembler) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if now.Sub(p.started) > r.timeout {
			r.drop(p)
			r.cnt.add(cReassemblyTimeouts, 1)
		}
	}
}

// release frees everything (the link is gone).
func (r *reassembler) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		delete(r.parts, p.msgID)
		r.total.release(p.total)
	}
	r.used = 0
}
