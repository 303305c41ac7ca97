package securechannel

import (
	"bytes"
	"testing"
)

// TestReassemblerInPlace: fragments arriving in any order are assembled at
// their offsets; a fragment that is not the last and not exactly
// maxFragmentBody long is refused, as is a count beyond the limit.
func TestReassemblerInPlace(t *testing.T) {
	msg := make([]byte, 3*maxFragmentBody-100)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	part := func(i int) []byte { return msg[i*maxFragmentBody : min(len(msg), (i+1)*maxFragmentBody)] }
	r := reassembler{max: 1 << 20}
	for n, i := range []int{2, 0, 1} {
		whole, err := r.add(fragment{id: 9, index: uint16(i), count: 3, part: part(i)})
		if err != nil {
			t.Fatal(err)
		}
		if n < 2 && whole != nil {
			t.Fatalf("message complete after %d fragments", n+1)
		}
		if n == 2 && !bytes.Equal(whole, msg) {
			t.Fatal("reassembled message differs")
		}
	}
	if r.bytes != 0 || len(r.parts) != 0 || len(r.order) != 0 {
		t.Fatalf("state left after a complete message: %d bytes, %d partials", r.bytes, len(r.parts))
	}
	if _, err := r.add(fragment{id: 10, index: 0, count: 2, part: []byte("short")}); err == nil {
		t.Fatal("a short fragment that is not the last was accepted")
	}
	small := reassembler{max: 2 * maxFragmentBody}
	if _, err := small.add(fragment{id: 1, index: 2, count: 3, part: []byte("x")}); err == nil {
		t.Fatal("a message that cannot fit the limit was accepted")
	}
	// A duplicate fragment changes nothing.
	if _, err := r.add(fragment{id: 11, index: 1, count: 2, part: []byte("tail")}); err != nil {
		t.Fatal(err)
	}
	if whole, err := r.add(fragment{id: 11, index: 1, count: 2, part: []byte("TAIL")}); err != nil || whole != nil {
		t.Fatalf("duplicate: %v %v", whole, err)
	}
	whole, err := r.add(fragment{id: 11, index: 0, count: 2, part: msg[:maxFragmentBody]})
	if err != nil || !bytes.Equal(whole, append(append([]byte(nil), msg[:maxFragmentBody]...), "tail"...)) {
		t.Fatalf("second message: %v", err)
	}
}
