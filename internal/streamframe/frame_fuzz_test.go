package streamframe

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// chunkReader returns its data in reads of at most n bytes, so frames split
// across reads are exercised.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

const fuzzMax = 1 << 16

// decodeAll runs the frame reader over data as Recv does and returns the data
// payloads (copied) and the terminal error.
func decodeAll(data []byte, chunk int) (payloads [][]byte, closed bool, err error) {
	// A tiny initial buffer exercises compaction and growth on every input.
	fr := &Reader{r: &chunkReader{data: data, n: chunk}, max: fuzzMax, errs: testErrors, buf: make([]byte, 16)}
	for {
		for {
			typ, p, ok, err := fr.Next()
			if err != nil {
				return payloads, false, err
			}
			if !ok {
				break
			}
			switch typ {
			case TypeData:
				payloads = append(payloads, append([]byte(nil), p...))
			case TypeClose:
				return payloads, true, nil
			}
		}
		n, err := fr.Fill()
		fr.Advance(n)
		if len(fr.buf) > fuzzMax+HeaderSize {
			return nil, false, errors.New("buffer grew beyond the maximum frame")
		}
		if err != nil {
			return payloads, false, err
		}
	}
}

func encode(payloads [][]byte, closeFrame bool) []byte {
	var b []byte
	for _, p := range payloads {
		b = AppendHeader(b, TypeData, len(p))
		b = append(b, p...)
		b = AppendHeader(b, TypeSignal, 0)
	}
	if closeFrame {
		b = AppendHeader(b, TypeClose, 0)
	}
	return b
}

// FuzzFrameDecoder feeds arbitrary bytes, in arbitrary read sizes, to the
// frame reader: it must never panic nor allocate beyond the maximum, and
// re-encoding what it decoded must reproduce the valid prefix.
func FuzzFrameDecoder(f *testing.F) {
	f.Add(encode([][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{7}, 300)}, true), uint16(7))
	f.Add(encode(nil, true), uint16(1))
	f.Add(header(TypeData, 0xFFFFFFFF), uint16(100))
	f.Add([]byte{2, 1, 0, 0, 0, 0}, uint16(3))
	f.Add(header(TypeSignal, 4), uint16(3))
	f.Add(append(header(TypeData, 10), 1, 2, 3), uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		n := int(chunk)%4096 + 1
		payloads, closed, err := decodeAll(data, n)
		if err != nil && err.Error() == "buffer grew beyond the maximum frame" {
			t.Fatal(err)
		}
		if err != nil && !errors.Is(err, errBadFrame) && err != io.EOF {
			t.Fatalf("unexpected error kind: %v", err)
		}
		for _, p := range payloads {
			if len(p) > fuzzMax {
				t.Fatalf("payload of %d bytes above max %d", len(p), fuzzMax)
			}
		}
		// Round trip: what was decoded re-encodes and decodes the same.
		again, closed2, err2 := decodeAll(encode(payloads, closed), n)
		if !closed && err2 != io.EOF || closed && err2 != nil || closed != closed2 {
			t.Fatalf("re-decoding: closed %v/%v err %v", closed, closed2, err2)
		}
		if len(again) != len(payloads) {
			t.Fatalf("round trip: %d payloads, then %d", len(payloads), len(again))
		}
		for i := range again {
			if !bytes.Equal(again[i], payloads[i]) {
				t.Fatalf("payload %d differs after round trip", i)
			}
		}
	})
}

// FuzzRoundTrip checks that any sequence of payloads survives encoding and
// decoding whatever the read sizes.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("a\x00bc\x00\x00def"), uint16(1))
	f.Add(bytes.Repeat([]byte{1}, 5000), uint16(999))
	f.Add(append(bytes.Repeat([]byte{1}, InlineMax+1), 0, 2, 0), uint16(4096))
	f.Fuzz(func(t *testing.T, blob []byte, chunk uint16) {
		payloads := bytes.Split(blob, []byte{0})
		for _, p := range payloads {
			if len(p) > fuzzMax {
				t.Skip("payload above the decoder's maximum")
			}
		}
		// Encode with the writer Send uses (inline and vectored payloads).
		var fw Writer
		var wire []byte
		for _, b := range fw.Build(payloads) {
			wire = append(wire, b...)
		}
		fw.Release()
		wire = AppendHeader(wire, TypeClose, 0)
		got, closed, err := decodeAll(wire, int(chunk)%8192+1)
		if err != nil || !closed {
			t.Fatalf("decode: closed %v err %v", closed, err)
		}
		if len(got) != len(payloads) {
			t.Fatalf("%d payloads in, %d out", len(payloads), len(got))
		}
		for i := range got {
			if !bytes.Equal(got[i], payloads[i]) {
				t.Fatalf("payload %d differs", i)
			}
		}
	})
}

func TestReaderBufferShrinksAfterLargeFrame(t *testing.T) {
	big := bytes.Repeat([]byte{1}, 1<<20)
	payloads := [][]byte{big, big}
	for i := 0; i < ShrinkAfter+1; i++ {
		payloads = append(payloads, []byte{2})
	}
	var data []byte
	for _, p := range payloads {
		data = AppendHeader(data, TypeData, len(p))
		data = append(data, p...)
	}
	// Reads of one small frame each, as when they arrive one by one.
	fr := NewReader(&chunkReader{data: data, n: HeaderSize + 1}, 2<<20, 0, nil, testErrors)
	got, maxBuf := 0, 0
	for got < len(payloads) {
		fr.Shrink(MinReadBuffer)
		_, p, ok, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			n, err := fr.Fill()
			fr.Advance(n)
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if len(p) != len(payloads[got]) {
			t.Fatalf("frame %d: %d bytes, want %d", got, len(p), len(payloads[got]))
		}
		got++
		maxBuf = max(maxBuf, len(fr.buf))
	}
	if maxBuf < 1<<20 {
		t.Fatalf("buffer never grew to the large frame (max %d)", maxBuf)
	}
	fr.Shrink(MinReadBuffer)
	if len(fr.buf) != MinReadBuffer {
		t.Errorf("buffer is %d bytes after %d small frames, want it shrunk to %d", len(fr.buf), ShrinkAfter+1, MinReadBuffer)
	}
}

var (
	errBadFrame      = errors.New("test transport: bad frame")
	errReceiveMemory = errors.New("test transport: receive memory budget exhausted")
	testErrors       = &Errors{Transport: "test", BadFrame: errBadFrame, ReceiveMemory: errReceiveMemory}
)

func header(typ byte, n uint32) []byte {
	return []byte{Version, typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func TestReaderRefusesHugeLengthBeforeAllocating(t *testing.T) {
	fr := &Reader{r: &chunkReader{data: header(TypeData, 0xFFFFFFFF), n: 6}, max: fuzzMax, errs: testErrors, buf: make([]byte, 16)}
	n, err := fr.Fill()
	fr.Advance(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := fr.Next(); !errors.Is(err, errBadFrame) || !strings.Contains(err.Error(), "maximum message size") {
		t.Fatalf("got %v, want the transport's bad-frame error naming the maximum", err)
	}
	if len(fr.buf) > 16 {
		t.Fatalf("buffer grew to %d bytes for a refused frame", len(fr.buf))
	}
	bad := &Reader{r: &chunkReader{data: []byte{9, TypeData, 0, 0, 0, 0}, n: 6}, max: fuzzMax, errs: testErrors, buf: make([]byte, 16)}
	n, _ = bad.Fill()
	bad.Advance(n)
	if _, _, _, err := bad.Next(); !errors.Is(err, errBadFrame) || !strings.Contains(err.Error(), "ferry test transport") {
		t.Fatalf("wrong version: got %v, want the bad-frame error naming the transport", err)
	}
}

// TestBudgetSharedByReaders checks that growth beyond the base buffer is
// charged to the shared budget, refused with the transport's error once the
// budget is spent, and returned when a reader is released.
func TestBudgetSharedByReaders(t *testing.T) {
	var b Budget
	b.SetLimit(MinReadBuffer)
	frame := append(header(TypeData, 3*MinReadBuffer), make([]byte, 3*MinReadBuffer)...)
	read := func(fr *Reader) error {
		for {
			_, _, ok, err := fr.Next()
			if err != nil || ok {
				return err
			}
			n, err := fr.Fill()
			fr.Advance(n)
			if err != nil {
				return err
			}
		}
	}
	a := NewReader(&chunkReader{data: frame, n: 1 << 20}, 4*MinReadBuffer, 0, &b, testErrors)
	// The first doubling (to 2×MinReadBuffer) fits; the frame needs more.
	if err := read(a); !errors.Is(err, errReceiveMemory) {
		t.Fatalf("a frame beyond the budget: got %v, want the receive-memory error", err)
	}
	if u := b.Used(); u != MinReadBuffer {
		t.Fatalf("%d bytes charged, want %d", u, MinReadBuffer)
	}
	c := NewReader(&chunkReader{data: frame, n: 1 << 20}, 4*MinReadBuffer, 0, &b, testErrors)
	if err := read(c); !errors.Is(err, errReceiveMemory) {
		t.Fatalf("a second reader while the budget is spent: got %v", err)
	}
	a.Release()
	if u := b.Used(); u != 0 {
		t.Fatalf("%d bytes still charged after release", u)
	}
	b.SetLimit(0) // no limit
	if err := read(c); err != nil {
		t.Fatalf("without a limit: %v", err)
	}
	c.Release()
	if u := b.Used(); u != 0 {
		t.Fatalf("%d bytes still charged after every reader was released", u)
	}
}
