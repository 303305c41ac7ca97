package securechannel

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format. Every message between two channel workers carries one frame
// as its payload:
//
//	version (1 byte, 1) | type (1 byte) | body
//
//	typeHello, typeReply, typeFinish: body is a Noise XX handshake message
//	typeData:  body is counter (8 bytes, big-endian) | AEAD ciphertext;
//	           the AEAD nonce is the counter and the additional data is the
//	           first 10 bytes of the frame, so header and body are bound
//	typeRefuse: body is a short human-readable reason (unauthenticated, so
//	           accepted only while a handshake is in progress)
//	typeBatch: body is one or more data frames, each preceded by its length
//	           (4 bytes, big-endian): the Noise frames of one message too
//	           large for a single one travel in one routing message, so a
//	           64 KiB portal chunk costs the route one message, not two.
//	           Each inner frame is authenticated, replay-checked and counted
//	           on its own.
//
// The plaintext of a data frame starts with a kind byte:
//
//	kindWhole: the rest is one encoded routing message (onward and return
//	           route inside the channel, and the payload)
//	kindFragment: message id (4) | index (2) | count (2) | part of an
//	           encoded routing message too large for one frame
//	kindReady: the responder accepted the initiator (no body)
//	kindClose: the peer closed the channel (no body)
//	kindKeepalive: nothing; proves the peer is still there (no body)
//	kindProbe: asks the peer to prove it is still there; answered with a
//	           kindKeepalive (no body)
const (
	wireVersion byte = 1

	typeHello  byte = 1
	typeReply  byte = 2
	typeFinish byte = 3
	typeData   byte = 4
	typeRefuse byte = 5
	typeBatch  byte = 6

	kindWhole     byte = 0
	kindFragment  byte = 1
	kindReady     byte = 2
	kindClose     byte = 3
	kindKeepalive byte = 4
	kindProbe     byte = 5
)

const (
	frameHeaderLen = 2
	dataHeaderLen  = frameHeaderLen + 8
	// maxNoiseMessage is Noise's limit on one message; the AEAD tag is 16 bytes.
	maxNoiseMessage = 65535
	tagLen          = 16
	// MaxPlaintext is the most plaintext one data frame carries.
	MaxPlaintext    = maxNoiseMessage - tagLen
	fragHeaderLen   = 1 + 4 + 2 + 2
	maxFragmentBody = MaxPlaintext - fragHeaderLen
	maxRefuseLen    = 512
)

var (
	errMalformed = errors.New("malformed frame")
	errVersion   = errors.New("unsupported secure channel version")
)

// frame is a decoded frame; body aliases the input.
type frame struct {
	typ     byte
	counter uint64 // data frames only
	body    []byte
}

// decodeFrame parses the outer frame without decrypting anything.
func decodeFrame(b []byte) (frame, error) {
	if len(b) < frameHeaderLen {
		return frame{}, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	if b[0] != wireVersion {
		return frame{}, fmt.Errorf("%w %d (this node speaks %d)", errVersion, b[0], wireVersion)
	}
	f := frame{typ: b[1], body: b[frameHeaderLen:]}
	switch f.typ {
	case typeHello, typeReply, typeFinish:
		if len(f.body) == 0 || len(f.body) > maxNoiseMessage {
			return frame{}, fmt.Errorf("%w: handshake message of %d bytes", errMalformed, len(f.body))
		}
	case typeData:
		if len(b) < dataHeaderLen+tagLen {
			return frame{}, fmt.Errorf("%w: data frame of %d bytes", errMalformed, len(b))
		}
		if len(b)-dataHeaderLen > maxNoiseMessage {
			return frame{}, fmt.Errorf("%w: data frame of %d bytes exceeds the Noise limit", errMalformed, len(b))
		}
		f.counter = binary.BigEndian.Uint64(b[frameHeaderLen:dataHeaderLen])
		f.body = b[dataHeaderLen:]
	case typeRefuse:
		if len(f.body) > maxRefuseLen {
			f.body = f.body[:maxRefuseLen]
		}
	case typeBatch:
		if len(f.body) < batchLenSize+dataHeaderLen+tagLen {
			return frame{}, fmt.Errorf("%w: batch of %d bytes", errMalformed, len(b))
		}
	default:
		return frame{}, fmt.Errorf("%w: unknown type %d", errMalformed, f.typ)
	}
	return f, nil
}

func appendFrameHeader(dst []byte, typ byte) []byte { return append(dst, wireVersion, typ) }

// batchLenSize is the length prefix of each frame in a batch.
const batchLenSize = 4

// nextInBatch splits the first frame off a batch's body: the decoded data
// frame, its bytes and the rest. A length that runs past the body, or a
// frame that is not a valid data frame, ends the batch with an error.
func nextInBatch(body []byte) (f frame, inner, rest []byte, err error) {
	if len(body) < batchLenSize {
		return frame{}, nil, nil, fmt.Errorf("%w: %d bytes left in a batch", errMalformed, len(body))
	}
	n := binary.BigEndian.Uint32(body)
	body = body[batchLenSize:]
	if uint64(n) > uint64(len(body)) {
		return frame{}, nil, nil, fmt.Errorf("%w: a batched frame of %d bytes in %d", errMalformed, n, len(body))
	}
	inner = body[:n]
	if f, err = decodeFrame(inner); err != nil {
		return frame{}, nil, nil, err
	}
	if f.typ != typeData {
		return frame{}, nil, nil, fmt.Errorf("%w: a batch carries only data frames", errMalformed)
	}
	return f, inner, body[n:], nil
}

// refuseReason makes a peer's refusal printable: at most maxRefuseLen
// bytes, control characters replaced.
func refuseReason(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// fragment is a decoded kindFragment plaintext; part aliases the input.
type fragment struct {
	id           uint32
	index, count uint16
	part         []byte
}

func decodeFragment(p []byte) (fragment, error) {
	if len(p) < fragHeaderLen || p[0] != kindFragment {
		return fragment{}, fmt.Errorf("%w: fragment of %d bytes", errMalformed, len(p))
	}
	f := fragment{
		id:    binary.BigEndian.Uint32(p[1:5]),
		index: binary.BigEndian.Uint16(p[5:7]),
		count: binary.BigEndian.Uint16(p[7:9]),
		part:  p[fragHeaderLen:],
	}
	if f.count < 2 || f.index >= f.count || len(f.part) == 0 {
		return fragment{}, fmt.Errorf("%w: fragment %d of %d with %d bytes", errMalformed, f.index, f.count, len(f.part))
	}
	return f, nil
}

func appendFragmentHeader(dst []byte, id uint32, index, count uint16) []byte {
	dst = append(dst, kindFragment)
	dst = binary.BigEndian.AppendUint32(dst, id)
	dst = binary.BigEndian.AppendUint16(dst, index)
	return binary.BigEndian.AppendUint16(dst, count)
}

// The handshake payload each side sends inside the encrypted part of its
// Noise message (message 2 for the responder, 3 for the initiator): the
// identity's public key, its signature over the sender's static Noise key
// (which the handshake proves the sender holds), and the rekey interval the
// sender will use for what it sends.
//
//	version (1) | Ed25519 public key (32) | signature (64) | rekey interval (8)
const handshakePayloadLen = 1 + ed25519.PublicKeySize + ed25519.SignatureSize + 8

// bindingContext is signed together with the static key, so a signature
// made for anything else cannot be replayed here.
const bindingContext = "ferry secure channel v1: static key of identity\x00"

type handshakePayload struct {
	identityKey ed25519.PublicKey
	signature   []byte
	rekeyAfter  uint64
}

func (p handshakePayload) append(dst []byte) []byte {
	dst = append(dst, wireVersion)
	dst = append(dst, p.identityKey...)
	dst = append(dst, p.signature...)
	return binary.BigEndian.AppendUint64(dst, p.rekeyAfter)
}

func decodeHandshakePayload(b []byte) (handshakePayload, error) {
	if len(b) != handshakePayloadLen {
		return handshakePayload{}, fmt.Errorf("%w: identity payload of %d bytes, want %d", errMalformed, len(b), handshakePayloadLen)
	}
	if b[0] != wireVersion {
		return handshakePayload{}, fmt.Errorf("%w %d in the identity payload", errVersion, b[0])
	}
	k := 1
	p := handshakePayload{identityKey: ed25519.PublicKey(append([]byte(nil), b[k:k+ed25519.PublicKeySize]...))}
	k += ed25519.PublicKeySize
	p.signature = append([]byte(nil), b[k:k+ed25519.SignatureSize]...)
	k += ed25519.SignatureSize
	p.rekeyAfter = binary.BigEndian.Uint64(b[k:])
	if p.rekeyAfter == 0 || p.rekeyAfter > maxRekeyAfter {
		return handshakePayload{}, fmt.Errorf("%w: rekey interval %d out of range 1..%d", errMalformed, p.rekeyAfter, uint64(maxRekeyAfter))
	}
	return p, nil
}

func bindingMessage(static []byte) []byte {
	return append([]byte(bindingContext), static...)
}

// replayWindow accepts each counter at most once and refuses counters that
// fell more than windowSize behind the highest one accepted, so frames
// reordered within the window are accepted and replays are not.
type replayWindow struct {
	any  bool
	max  uint64
	bits [windowSize / 64]uint64
}

// windowSize is how far behind the newest frame a reordered frame may
// arrive and still be accepted.
const windowSize = 1024

type windowVerdict int

const (
	windowOK windowVerdict = iota
	windowReplay
	windowTooOld
)

// check tells whether n would be accepted; it changes nothing, so a frame
// that fails authentication cannot move the window.
func (w *replayWindow) check(n uint64) windowVerdict {
	if !w.any || n > w.max {
		return windowOK
	}
	if w.max-n >= windowSize {
		return windowTooOld
	}
	if w.bits[(n/64)%(windowSize/64)]&(1<<(n%64)) != 0 {
		return windowReplay
	}
	return windowOK
}

// accept records n, which check approved.
func (w *replayWindow) accept(n uint64) {
	if !w.any {
		w.any, w.max = true, n
		w.bits = [windowSize / 64]uint64{}
	} else if n > w.max {
		if n-w.max >= windowSize {
			w.bits = [windowSize / 64]uint64{}
		} else {
			for i := w.max + 1; i <= n; i++ {
				w.bits[(i/64)%(windowSize/64)] &^= 1 << (i % 64)
			}
		}
		w.max = n
	}
	w.bits[(n/64)%(windowSize/64)] |= 1 << (n % 64)
}
