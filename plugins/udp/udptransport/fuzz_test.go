package udptransport

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

const fuzzMax = 1 << 16

func fragDatagram(linkID, msgID uint32, index, count uint16, total uint32, payload []byte) []byte {
	b := make([]byte, fragmentHeaderLen, fragmentHeaderLen+len(payload))
	putFragmentHeader(b, linkID, msgID, index, count, total)
	return append(b, payload...)
}

func dataDatagram(linkID, msgID uint32, payload []byte) []byte {
	b := make([]byte, dataHeaderLen, dataHeaderLen+len(payload))
	putDataHeader(b, linkID, msgID)
	return append(b, payload...)
}

// fragments splits msg as Send does for a datagram of size bytes.
func fragments(linkID, msgID uint32, msg []byte, size int) [][]byte {
	count := fragmentCount(len(msg), size-fragmentHeaderLen)
	var out [][]byte
	for i := 0; i < count; i++ {
		off, n, _ := fragmentSpan(len(msg), count, i)
		out = append(out, fragDatagram(linkID, msgID, uint16(i), uint16(count), uint32(len(msg)), msg[off:off+n]))
	}
	return out
}

// FuzzDecodeHeader: any bytes decode without panicking; what decodes is
// consistent (a fragment's claimed total is within the maximum and its
// payload is exactly its span) and re-encodes to the same bytes.
func FuzzDecodeHeader(f *testing.F) {
	f.Add(dataDatagram(7, 1, []byte("hello")))
	f.Add(fragDatagram(7, 2, 1, 3, 10, []byte("abcd")))
	f.Add(fragDatagram(7, 2, 0, 2, 0xFFFFFFFF, []byte("x")))
	f.Add(helloDatagram(9, nil))
	f.Add(helloDatagram(9, bytes.Repeat([]byte{1}, cookieLen)))
	f.Add(append(control(TypeCookie, 9), make([]byte, cookieLen)...))
	f.Add(control(TypeClose, 9, closeFull))
	f.Add(control(TypeKeepalive, 9))
	f.Add([]byte{})
	f.Add([]byte{WireVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b, fuzzMax)
		if err != nil {
			return
		}
		if h.LinkID == 0 {
			t.Fatal("link id 0 accepted")
		}
		switch h.Type {
		case TypeData:
			if !bytes.Equal(dataDatagram(h.LinkID, h.MsgID, h.Payload), b) {
				t.Fatal("data datagram does not re-encode to itself")
			}
		case TypeFragment:
			if h.Total == 0 || h.Total > fuzzMax || h.Index >= h.Count || h.Count < 2 {
				t.Fatalf("inconsistent fragment accepted: %+v", h)
			}
			off, n, ok := fragmentSpan(int(h.Total), int(h.Count), int(h.Index))
			if !ok || len(h.Payload) != n || off+n > int(h.Total) {
				t.Fatalf("fragment payload %d does not match its span (%d,%d,%v)", len(h.Payload), off, n, ok)
			}
			if !bytes.Equal(fragDatagram(h.LinkID, h.MsgID, h.Index, h.Count, h.Total, h.Payload), b) {
				t.Fatal("fragment does not re-encode to itself")
			}
		case TypeHello:
			if len(b) < helloMinLen {
				t.Fatal("short hello accepted")
			}
		case TypeCookie, TypeWelcome, TypeClose, TypeKeepalive:
		default:
			t.Fatalf("unknown type %d accepted", h.Type)
		}
	})
}

// FuzzReassembler feeds a sequence of datagrams, split from the fuzz input
// at 2-byte length prefixes, to a link's reassembler: it never panics,
// memory stays within the per-link cap and the transport budget, every
// message it completes is the length its fragments claimed, and all memory
// returns to the budget at the end.
func FuzzReassembler(f *testing.F) {
	msg := bytes.Repeat([]byte("0123456789"), 300)
	seed := func(ds ...[]byte) []byte {
		var b []byte
		for _, d := range ds {
			b = binary.BigEndian.AppendUint16(b, uint16(len(d)))
			b = append(b, d...)
		}
		return b
	}
	fr := fragments(7, 1, msg, 1000)
	fr2 := fragments(7, 2, msg[:2500], 1000)
	f.Add(seed(fr...))
	f.Add(seed(fr[0], fr2[0], fr[1], fr2[1], fr2[2], fr[2], fr[3]))
	f.Add(seed(fr[0], fr[0], fr[2]))
	f.Add(seed(fr[0], fragDatagram(7, 1, 1, 4, 2999, msg[:750])))
	f.Add(seed(fragDatagram(7, 5, 0, 2, 0xFFFFFFFF, []byte("x"))))
	f.Fuzz(func(t *testing.T, in []byte) {
		const peerCap = 3 * fuzzMax
		var cnt counters
		b := budget{max: 4 * fuzzMax}
		r := newReassembler(peerCap, &b, time.Second, &cnt)
		var replay replayWindow
		now := time.Unix(1000, 0)
		for len(in) >= 2 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			if n > len(in) {
				n = len(in)
			}
			d := in[:n]
			in = in[n:]
			now = now.Add(100 * time.Millisecond)
			h, err := decodeHeader(d, fuzzMax)
			if err != nil || h.Type != TypeFragment {
				continue
			}
			if replay.seen(h.MsgID) {
				continue
			}
			if m := r.add(h, now); m != nil {
				replay.mark(h.MsgID)
				if len(m) != int(h.Total) {
					t.Fatalf("completed message of %d bytes, fragments claimed %d", len(m), h.Total)
				}
			}
			if r.pending() > peerCap {
				t.Fatalf("reassembly holds %d bytes, cap %d", r.pending(), peerCap)
			}
			if u := b.used.Load(); u > b.max || u < 0 {
				t.Fatalf("budget used %d of %d", u, b.max)
			}
			r.sweep(now)
		}
		r.release()
		if u := b.used.Load(); u != 0 {
			t.Fatalf("budget not returned after release: %d", u)
		}
	})
}

// TestReassemblerInterleaved: fragments of two messages interleaved and
// out of order yield both messages whole.
func TestReassemblerInterleaved(t *testing.T) {
	a := bytes.Repeat([]byte("A0123456789"), 300)
	bm := bytes.Repeat([]byte("b9876543210"), 250)
	fa := fragments(7, 1, a, 1000)
	fb := fragments(7, 2, bm, 1000)
	var cnt counters
	bud := budget{max: 1 << 20}
	r := newReassembler(1<<20, &bud, time.Second, &cnt)
	order := [][]byte{fa[3], fb[0], fa[0], fb[2], fa[2], fb[1], fa[1]}
	var got [][]byte
	for _, d := range order {
		h, err := decodeHeader(d, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if m := r.add(h, time.Now()); m != nil {
			got = append(got, m)
		}
	}
	if len(got) != 2 || !bytes.Equal(got[0], bm) || !bytes.Equal(got[1], a) {
		t.Fatalf("interleaved fragments: got %d messages, want B then A intact", len(got))
	}
	if bud.used.Load() != 0 || r.pending() != 0 {
		t.Fatalf("memory held after completion: budget %d, pending %d", bud.used.Load(), r.pending())
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	for _, id := range []uint32{0xFFFFFFF0, 0xFFFFFFF2, 5, 0xFFFFFFF1} { // wraps
		if w.seen(id) {
			t.Fatalf("%#x seen before it was marked", id)
		}
		w.mark(id)
		if !w.seen(id) {
			t.Fatalf("%#x not seen after mark", id)
		}
	}
	if w.seen(0xFFFFFFF3) {
		t.Fatal("an unmarked id inside the window reported seen")
	}
	w.mark(5 + 2*replayBits)
	if !w.seen(5) {
		t.Fatal("an id older than the window is not refused")
	}
	if w.seen(5 + 2*replayBits - 1) {
		t.Fatal("a newer unmarked id reported seen")
	}
}

func TestCookie(t *testing.T) {
	j := cookieJar{bucket: int64(cookieBucket)}
	j.secret[0] = 1
	a := netip.MustParseAddrPort("127.0.0.1:4000")
	now := time.Now().UnixNano()
	c := j.make(now, a, 7)
	if !j.check(now, a, 7, c) || !j.check(now+int64(cookieBucket), a, 7, c) {
		t.Fatal("a fresh cookie is refused")
	}
	if j.check(now+3*int64(cookieBucket), a, 7, c) {
		t.Fatal("an expired cookie is accepted")
	}
	if j.check(now, netip.MustParseAddrPort("127.0.0.1:4001"), 7, c) || j.check(now, a, 8, c) {
		t.Fatal("a cookie is accepted for another address or link id")
	}
	other := cookieJar{bucket: int64(cookieBucket)}
	if other.check(now, a, 7, c) {
		t.Fatal("a cookie is accepted by a listener with another secret")
	}
}
