package portals

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/internal/payloadbuf"
)

func TestFrameRoundTrip(t *testing.T) {
	id := newSessionID()
	for _, f := range []frame{
		{kind: kindOpen, version: ProtocolVersion, id: id, window: 1 << 20},
		{kind: kindOpen, version: ProtocolVersion, id: id, window: 1 << 20, data: []byte("GET / HTTP/1.1\r\n\r\n")},
		{kind: kindOpened, version: ProtocolVersion, window: 65536},
		{kind: kindData, seq: 1<<40 + 3, next: 17, consumed: 1 << 35, data: []byte("hello")},
		{kind: kindFin, seq: 7},
		{kind: kindAck, consumed: 123456789, next: 42},
		{kind: kindAck, consumed: 1, next: 7, sacks: []sackRange{{9, 10}, {12, 20}, {1 << 62, 1<<62 + 5}}},
		{kind: kindClose, reason: "dial 127.0.0.1:1: connection refused"},
		{kind: kindPing},
		{kind: kindPong},
	} {
		got, err := decodeFrame(f.encode())
		if err != nil {
			t.Fatalf("%s: %v", kindName(f.kind), err)
		}
		if !bytes.Equal(got.data, f.data) {
			t.Fatalf("%s: data %q, want %q", kindName(f.kind), got.data, f.data)
		}
		if !reflect.DeepEqual(got, f) {
			t.Fatalf("round trip: got %+v, want %+v", got, f)
		}
	}
}

func TestFrameDataInPlace(t *testing.T) {
	for _, seq := range []uint64{0, 127, 128, 1 << 63} {
		buf := make([]byte, dataHeadroom+3)
		copy(buf[dataHeadroom:], "abc")
		putDataHeader(buf, seq, seq/2, seq+9)
		f, err := decodeFrame(buf)
		if err != nil || f.kind != kindData || f.seq != seq || f.next != seq/2 || f.consumed != seq+9 || string(f.data) != "abc" {
			t.Fatalf("seq %d: %+v, %v", seq, f, err)
		}
		if want := (&frame{kind: kindData, seq: seq, next: seq / 2, consumed: seq + 9, data: []byte("abc")}).encode(); !bytes.Equal(buf, want) {
			t.Fatalf("seq %d: in place %x, encode %x", seq, buf, want)
		}
	}
}

func TestBufferPoolClasses(t *testing.T) {
	for size, pooled := range map[int]bool{4096: true, 65536: true, 1 << 20: true, 2048: false, 65537: false, 2 << 20: false} {
		b := getBuf(size)
		if len(b) != dataHeadroom+size {
			t.Fatalf("getBuf(%d) has %d bytes", size, len(b))
		}
		if got := cap(b) == payloadbuf.Headroom+size; got != pooled {
			t.Errorf("size %d: pooled %v, want %v", size, got, pooled)
		}
		putBuf(b)
	}
	putBuf(make([]byte, 100)) // not a class: ignored
}

func TestFrameRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          nil,
		"unknown kind":   {99},
		"data no bytes":  append([]byte{kindData}, make([]byte, dataHeadroom-1)...),
		"data truncated": append([]byte{kindData}, make([]byte, dataHeadroom-2)...),
		"open truncated": {kindOpen, 1, 1, 2},
		"open too early": append(append(append([]byte{kindOpen, 1}, make([]byte, idLen)...), 1), make([]byte, maxEarlyData+1)...),
		"window zero":    append(append([]byte{kindOpen, 1}, make([]byte, idLen)...), 0),
		"window huge":    {kindOpened, 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"fin trailing":   {kindFin, 1, 2},
		"ping trailing":  {kindPing, 0},
		"ack no next":    {kindAck, 1},
		"ack no count":   {kindAck, 1, 2},
		"ack range gap0": {kindAck, 1, 2, 1, 0, 1},
		"ack range len0": {kindAck, 1, 2, 1, 1, 0},
		"ack truncated":  {kindAck, 1, 2, 2, 1, 1},
		"ack too many":   {kindAck, 1, 2, maxSackRanges + 1},
		"ack overflow":   {kindAck, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 2, 0x7f},
		"bad varint":     {kindAck, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"close not utf8": {kindClose, 0xff, 0xfe},
		"close too long": append([]byte{kindClose}, bytes.Repeat([]byte("a"), maxReason+1)...),
	} {
		if _, err := decodeFrame(b); !errors.Is(err, errFrame) {
			t.Errorf("%s: got %v, want a malformed-frame error", name, err)
		}
	}
}

func TestCloseReasonTruncatedToValidUTF8(t *testing.T) {
	long := strings.Repeat("é", maxReason) // 2 bytes per rune: the cut splits one
	f, err := decodeFrame((&frame{kind: kindClose, reason: long}).encode())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.reason) > maxReason || !strings.HasPrefix(long, f.reason) {
		t.Fatalf("reason of %d bytes", len(f.reason))
	}
}

func FuzzDecodeFrame(f *testing.F) {
	id := newSessionID()
	for _, fr := range []frame{
		{kind: kindOpen, version: 1, id: id, window: 1 << 20},
		{kind: kindOpen, version: 4, id: id, window: 1 << 20, data: []byte("early")},
		{kind: kindOpened, version: 1, window: 4096},
		{kind: kindData, seq: 300, next: 2, consumed: 70000, data: []byte("xyz")},
		{kind: kindFin, seq: 2},
		{kind: kindAck, consumed: 1 << 33, next: 9},
		{kind: kindAck, consumed: 5, next: 3, sacks: []sackRange{{5, 6}, {8, 11}}},
		{kind: kindClose, reason: "bye"},
		{kind: kindPing},
	} {
		f.Add(fr.encode())
	}
	f.Add([]byte{})
	f.Add([]byte{kindData, 0x80})
	f.Add(append([]byte{kindData}, make([]byte, dataHeadroom)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		again, err := decodeFrame(fr.encode())
		if err != nil {
			t.Fatalf("re-decoding an accepted frame failed: %v", err)
		}
		if !reflect.DeepEqual(again, fr) {
			t.Fatalf("round trip changed the frame: %+v vs %+v", again, fr)
		}
	})
}
