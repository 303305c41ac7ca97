package securechannel

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/flynn/noise"
)

// suite is the one cipher suite channels speak: Noise_XX_25519_ChaChaPoly_BLAKE2s.
var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// prologue is mixed into every handshake so a Ferry channel handshake cannot
// be confused with any other protocol's.
var prologue = []byte("ferry secure channel v1")

// maxRekeyAfter bounds the rekey interval a peer may announce.
const maxRekeyAfter = 1 << 40

// maxEpochSkip bounds how many keys a receiver derives ahead for a frame
// from a later epoch (frames before it lost): a forged counter costs at most
// this many cheap derivations and no state.
const maxEpochSkip = 16

var (
	errTooOld   = errors.New("frame is older than the replay window")
	errReplay   = errors.New("frame was already received")
	errAhead    = errors.New("frame's counter is implausibly far ahead")
	errTampered = errors.New("frame does not authenticate")
)

// epochKey is the key of one epoch: counters [epoch*R, (epoch+1)*R) use it.
// Nonces are the counters themselves, so no nonce repeats under one key.
type epochKey struct {
	epoch uint64
	cs    *noise.CipherState // kept for Rekey and UnsafeKey
	c     noise.Cipher
}

// next derives the following epoch's key with Noise's REKEY function.
func (k epochKey) next() epochKey {
	cs := noise.UnsafeNewCipherState(suite, k.cs.UnsafeKey(), 0)
	cs.Rekey()
	return epochKey{epoch: k.epoch + 1, cs: cs, c: cs.Cipher()}
}

func newEpochKey(cs *noise.CipherState) epochKey {
	// Cipher() hands out the raw AEAD: this code supplies explicit nonces
	// (the frame counters), because frames over an unreliable route may be
	// lost or reordered and implicit nonces would desynchronise.
	return epochKey{cs: cs, c: cs.Cipher()}
}

// sender encrypts outgoing frames: one counter for every frame, a new key
// every rekeyAfter frames.
type sender struct {
	key        epochKey
	counter    uint64
	rekeyAfter uint64
	rekeys     uint64
}

// seal appends a data frame carrying plaintext to dst.
func (s *sender) seal(dst, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("plaintext of %d bytes exceeds %d", len(plaintext), MaxPlaintext)
	}
	if s.counter >= noise.MaxNonce {
		return nil, errors.New("the channel has used every nonce; create a new channel")
	}
	n := s.counter
	if e := n / s.rekeyAfter; e != s.key.epoch {
		for s.key.epoch < e {
			s.key = s.key.next()
			s.rekeys++
		}
	}
	s.counter++
	start := len(dst)
	dst = appendFrameHeader(dst, typeData)
	dst = binary.BigEndian.AppendUint64(dst, n)
	ad := dst[start : start+dataHeaderLen]
	return s.key.c.Encrypt(dst, n, ad, plaintext), nil
}

// sealParts appends a data frame whose plaintext is head followed by body
// to dst, without joining them first: the plaintext is assembled where the
// ciphertext goes and sealed in place (sealAt).
func (s *sender) sealParts(dst, head, body []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, dataHeaderLen)...)
	dst = append(dst, head...)
	dst = append(dst, body...)
	return s.sealAt(dst, start)
}

// sealAt seals in place the data frame that starts at dst[start]: its
// dataHeaderLen header bytes (written here) followed by the plaintext, up
// to the end of dst. The ciphertext overwrites the plaintext (the AEAD
// allows exact overlap) and the tag is appended, so encrypting costs no
// copy of the plaintext.
func (s *sender) sealAt(dst []byte, start int) ([]byte, error) {
	pt := start + dataHeaderLen
	if n := len(dst) - pt; n > MaxPlaintext || n < 0 {
		return nil, fmt.Errorf("plaintext of %d bytes exceeds %d", n, MaxPlaintext)
	}
	if s.counter >= noise.MaxNonce {
		return nil, errors.New("the channel has used every nonce; create a new channel")
	}
	c := s.counter
	if e := c / s.rekeyAfter; e != s.key.epoch {
		for s.key.epoch < e {
			s.key = s.key.next()
			s.rekeys++
		}
	}
	s.counter++
	appendFrameHeader(dst[start:start], typeData)
	binary.BigEndian.PutUint64(dst[start+frameHeaderLen:pt], c)
	return s.key.c.Encrypt(dst[:pt], c, dst[start:pt], dst[pt:]), nil
}

// receiver decrypts incoming frames with the current and the previous epoch's
// key (frames reordered across a rekey) and the replay window.
type receiver struct {
	cur, prev  epochKey
	hasPrev    bool
	rekeyAfter uint64
	window     replayWindow
	rekeys     uint64
}

// open authenticates and decrypts a data frame (its counter and body from
// decodeFrame; header is the frame's first dataHeaderLen bytes) and appends
// the plaintext to dst. Nothing changes unless the frame authenticates.
func (r *receiver) open(dst []byte, header []byte, f frame) ([]byte, error) {
	switch r.window.check(f.counter) {
	case windowReplay:
		return nil, errReplay
	case windowTooOld:
		return nil, errTooOld
	}
	e := f.counter / r.rekeyAfter
	var key epochKey
	var chain []epochKey
	switch {
	case e == r.cur.epoch:
		key = r.cur
	case e+1 == r.cur.epoch && r.hasPrev:
		key = r.prev
	case e < r.cur.epoch:
		return nil, errTooOld
	default:
		if e-r.cur.epoch > maxEpochSkip {
			return nil, errAhead
		}
		k := r.cur
		for k.epoch < e {
			k = k.next()
			chain = append(chain, k)
		}
		key = k
	}
	out, err := key.c.Decrypt(dst, f.counter, header, f.body)
	if err != nil {
		return nil, errTampered
	}
	r.window.accept(f.counter)
	if len(chain) > 0 {
		if len(chain) >= 2 {
			r.prev = chain[len(chain)-2]
		} else {
			r.prev = r.cur
		}
		r.hasPrev = true
		r.cur = key
		r.rekeys += uint64(len(chain))
	}
	return out, nil
}
