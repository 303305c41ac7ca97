package serialtransport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Wire format. A frame on the line is the COBS encoding of
//
//	offset size field
//	0      1    version (FrameVersion)
//	1      1    type (data, hello, heartbeat, close)
//	2      4    sender's session id
//	6      4    receiver's session id as the sender knows it (0: unknown)
//	10     4    message id (data; the sender counts messages per session)
//	14     2    fragment index
//	16     2    fragment count (1 for an unfragmented message)
//	18     2    payload length
//	20     n    payload
//	20+n   4    CRC-32C (Castagnoli) of bytes 0 .. 20+n
//
// followed by a zero byte, the delimiter. Every integer is big-endian. COBS
// removes every zero from the encoded bytes, so a receiver that lost its
// place (line noise, a cut frame) starts again at the next zero.

// FrameVersion is the first byte of every frame. A frame with another version
// is dropped and counted as bad.
const FrameVersion = 1

// Frame types.
const (
	frameData      = 1
	frameHello     = 2
	frameHeartbeat = 3
	frameClose     = 4
)

const (
	headerSize = 20
	crcSize    = 4
	// frameOverhead is what a frame costs beyond its payload before COBS.
	frameOverhead = headerSize + crcSize
	// MinFrameSize and MaxFrameSize bound the max_frame_size setting.
	MinFrameSize = 64
	MaxFrameSize = 65535
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum is the frame CRC: CRC-32C, the standard Castagnoli CRC
// (check value 0xE3069283 for "123456789").
func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// header is a decoded frame header.
type header struct {
	typ       byte
	src, dst  uint32
	msgID     uint32
	fragIndex uint16
	fragCount uint16
}

// Errors the frame parser reports; the reader counts them and drops the frame.
var (
	errShortFrame  = errors.New("frame shorter than header and checksum")
	errBadCRC      = errors.New("frame checksum mismatch")
	errBadVersion  = errors.New("unknown frame version")
	errBadType     = errors.New("unknown frame type")
	errBadLength   = errors.New("frame length field does not match its size")
	errBadFragment = errors.New("fragment index out of range")
)

// parseFrame checks a decoded (un-COBSed) frame and returns its header and
// payload, which aliases b. The CRC is checked first, so a frame whose bytes
// were damaged on the line reports errBadCRC.
func parseFrame(b []byte) (header, []byte, error) {
	var h header
	if len(b) < frameOverhead {
		return h, nil, errShortFrame
	}
	body := b[:len(b)-crcSize]
	if checksum(body) != binary.BigEndian.Uint32(b[len(b)-crcSize:]) {
		return h, nil, errBadCRC
	}
	if body[0] != FrameVersion {
		return h, nil, errBadVersion
	}
	h.typ = body[1]
	if h.typ < frameData || h.typ > frameClose {
		return h, nil, errBadType
	}
	h.src = binary.BigEndian.Uint32(body[2:])
	h.dst = binary.BigEndian.Uint32(body[6:])
	h.msgID = binary.BigEndian.Uint32(body[10:])
	h.fragIndex = binary.BigEndian.Uint16(body[14:])
	h.fragCount = binary.BigEndian.Uint16(body[16:])
	n := int(binary.BigEndian.Uint16(body[18:]))
	if n != len(body)-headerSize {
		return h, nil, errBadLength
	}
	if h.fragCount == 0 || h.fragIndex >= h.fragCount {
		return h, nil, errBadFragment
	}
	return h, body[headerSize:], nil
}

// appendFrame appends the COBS encoding of one frame (header, payload, CRC)
// and its zero delimiter to dst. scratch is reused for the unencoded frame.
func appendFrame(dst, scratch []byte, h header, payload []byte) ([]byte, []byte) {
	raw := scratch[:0]
	raw = append(raw, FrameVersion, h.typ)
	raw = binary.BigEndian.AppendUint32(raw, h.src)
	raw = binary.BigEndian.AppendUint32(raw, h.dst)
	raw = binary.BigEndian.AppendUint32(raw, h.msgID)
	raw = binary.BigEndian.AppendUint16(raw, h.fragIndex)
	raw = binary.BigEndian.AppendUint16(raw, h.fragCount)
	raw = binary.BigEndian.AppendUint16(raw, uint16(len(payload)))
	raw = append(raw, payload...)
	raw = binary.BigEndian.AppendUint32(raw, checksum(raw))
	dst = cobsEncode(dst, raw)
	return append(dst, 0), raw
}

// cobsMaxEncoded is the largest COBS encoding of n bytes (without the
// delimiter): one code byte per 254 bytes, plus one.
func cobsMaxEncoded(n int) int { return n + n/254 + 1 }

// cobsEncode appends the COBS encoding of src (no delimiter) to dst.
func cobsEncode(dst, src []byte) []byte {
	for {
		// A block is up to 254 non-zero bytes; its code byte is its length
		// plus one. A block of 254 has no implied zero after it.
		n := bytes.IndexByte(src[:min(len(src), 254)], 0)
		if n < 0 {
			n = min(len(src), 254)
		}
		dst = append(dst, byte(n+1))
		dst = append(dst, src[:n]...)
		src = src[n:]
		if n == 254 {
			if len(src) == 0 {
				return dst
			}
			continue
		}
		if len(src) == 0 {
			return dst
		}
		src = src[1:] // the zero this block's code stands for
		if len(src) == 0 {
			// A trailing zero: encode it as a final empty block.
			return append(dst, 1)
		}
	}
}

// cobsDecode decodes one COBS block sequence (without delimiter) into dst,
// appending. It fails on a code byte that points past the end.
func cobsDecode(dst, src []byte) ([]byte, error) {
	for len(src) > 0 {
		code := int(src[0])
		if code == 0 {
			return dst, errCOBS
		}
		if code-1 > len(src)-1 {
			return dst, errCOBS
		}
		dst = append(dst, src[1:code]...)
		src = src[code:]
		if code < 255 && len(src) > 0 {
			dst = append(dst, 0)
		}
	}
	return dst, nil
}

var errCOBS = errors.New("malformed COBS block")

// decoder splits the byte stream read from the line into decoded frames. It
// never holds more than max encoded bytes of one frame: bytes beyond that are
// skipped up to the next delimiter, and the frame is reported oversized.
type decoder struct {
	max      int    // largest decoded frame accepted
	enc      []byte // encoded bytes of the current frame, at most cobsMaxEncoded(max)
	dec      []byte // decoded frame, reused
	skipping bool   // the current frame overflowed; drop bytes up to the next zero
}

func newDecoder(maxFrame int) *decoder {
	return &decoder{
		max: maxFrame,
		enc: make([]byte, 0, cobsMaxEncoded(maxFrame)),
		dec: make([]byte, 0, maxFrame),
	}
}

// decodeResult classifies what feed found for one delimited chunk.
type decodeResult int

const (
	decodedFrame decodeResult = iota
	decodedOversized
	decodedMalformed
)

// feed consumes p and calls fn once per delimited chunk: with the decoded
// frame (valid until fn returns), or with an oversized/malformed result and
// a nil frame. Empty chunks (two delimiters in a row) are idle fill and
// reported to nobody.
func (d *decoder) feed(p []byte, fn func(decodeResult, []byte)) {
	limit := cobsMaxEncoded(d.max)
	for len(p) > 0 {
		i := indexZero(p)
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !d.skipping {
			if len(d.enc)+len(chunk) > limit {
				d.skipping = true
				d.enc = d.enc[:0]
			} else {
				d.enc = append(d.enc, chunk...)
			}
		}
		if i < 0 {
			return
		}
		p = p[i+1:]
		switch {
		case d.skipping:
			d.skipping = false
			fn(decodedOversized, nil)
		case len(d.enc) == 0:
			// idle fill between frames
		default:
			var err error
			d.dec, err = cobsDecode(d.dec[:0], d.enc)
			d.enc = d.enc[:0]
			switch {
			case err != nil:
				fn(decodedMalformed, nil)
			case len(d.dec) > d.max:
				fn(decodedOversized, nil)
			default:
				fn(decodedFrame, d.dec)
			}
		}
	}
}

// pending reports how many bytes of an unfinished frame are held.
func (d *decoder) pending() int { return len(d.enc) }

func indexZero(p []byte) int { return bytes.IndexByte(p, 0) }
