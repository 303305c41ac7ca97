package securechannel

import (
	"bytes"
	"testing"

	"github.com/flynn/noise"
	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/identity"
)

// FuzzDecodeFrame feeds arbitrary bytes to every decoder a peer's bytes
// reach before or after decryption: none may panic, and whatever decodes
// stays within the limits.
func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte{wireVersion, typeHello, 1, 2, 3})
	f.Add(append([]byte{wireVersion, typeData, 0, 0, 0, 0, 0, 0, 0, 1}, make([]byte, 32)...))
	f.Add([]byte{wireVersion, typeRefuse, 'n', 'o', 0})
	inner := append([]byte{wireVersion, typeData, 0, 0, 0, 0, 0, 0, 0, 2}, make([]byte, 20)...)
	f.Add(append(append([]byte{wireVersion, typeBatch, 0, 0, 0, byte(len(inner))}, inner...), 0, 0, 0, 99))
	f.Add(appendFragmentHeader(nil, 7, 1, 3))
	f.Add(append(appendFragmentHeader(nil, 7, 1, 3), 'x'))
	f.Add(handshakePayload{identityKey: make([]byte, 32), signature: make([]byte, 64), rekeyAfter: 9}.append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if fr, err := decodeFrame(b); err == nil {
			if fr.typ == typeData && len(fr.body) < tagLen {
				t.Fatalf("data frame with %d body bytes accepted", len(fr.body))
			}
			if fr.typ == typeRefuse {
				_ = refuseReason(fr.body)
			}
			if fr.typ == typeBatch {
				for body := fr.body; len(body) > 0; {
					g, inner, rest, err := nextInBatch(body)
					if err != nil {
						break
					}
					if len(rest) >= len(body) || len(inner) < dataHeaderLen+tagLen {
						t.Fatal("a batch did not shrink, or yielded a short frame")
					}
					if g.typ != typeData || len(g.body) < tagLen {
						t.Fatalf("a batch yielded frame type %d with %d body bytes", g.typ, len(g.body))
					}
					body = rest
				}
			}
		}
		if fg, err := decodeFragment(b); err == nil {
			if fg.index >= fg.count {
				t.Fatalf("fragment %d of %d accepted", fg.index, fg.count)
			}
			r := reassembler{max: 1 << 20}
			_, _ = r.add(fg)
			if r.bytes > 2<<20 {
				t.Fatal("reassembler over its bound")
			}
		}
		if p, err := decodeHandshakePayload(b); err == nil {
			_ = identity.Verify(p.identityKey, bindingMessage(b), p.signature)
		}
		var w replayWindow
		if len(b) >= 8 {
			for i := 0; i+8 <= len(b); i += 8 {
				n := uint64(b[i])<<56 | uint64(b[i+1])<<48 | uint64(b[i+2])<<40 | uint64(b[i+3])<<32 | uint64(b[i+4])<<24 | uint64(b[i+5])<<16 | uint64(b[i+6])<<8 | uint64(b[i+7])
				if w.check(n) == windowOK {
					w.accept(n)
					if w.check(n) != windowReplay {
						t.Fatalf("counter %d accepted twice", n)
					}
				}
			}
		}
	})
}

func testChannel(t testing.TB, role Role, cfg Config) *channel {
	cfg.Logger = hclog.NewNullLogger()
	if cfg.Identity == nil {
		cfg.Identity = newIdentity(t, string(role))
	}
	cfg.RekeyAfter = DefaultRekeyAfter
	cfg.MaxMessageSize = 1 << 20
	return newChannel(nil, cfg, role, "")
}

func initiatorAfterHello(t testing.TB) (*channel, []byte) {
	ch := testChannel(t, Initiator, Config{})
	kp, err := suite.GenerateKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	ch.static = kp
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: suite, Pattern: noise.HandshakeXX, Initiator: true, Prologue: prologue, StaticKeypair: kp})
	if err != nil {
		t.Fatal(err)
	}
	hello, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch.hs = hs
	return ch, hello
}

// FuzzHandshake feeds arbitrary bytes to each handshake step in turn: the
// responder reading message 1, the initiator reading message 2 and the
// responder reading message 3. None may panic or accept garbage.
func FuzzHandshake(f *testing.F) {
	// A real run of the handshake provides the seeds.
	ini, hello := initiatorAfterHello(f)
	resp := testChannel(f, Responder, Config{})
	reply, err := resp.consumeHello(hello)
	if err != nil {
		f.Fatal(err)
	}
	_, finish, err := ini.consumeReply(reply[frameHeaderLen:])
	if err != nil {
		f.Fatal(err)
	}
	if _, err := resp.consumeFinish(finish[frameHeaderLen:]); err != nil {
		f.Fatal(err)
	}
	f.Add(hello, reply[frameHeaderLen:], finish[frameHeaderLen:])
	f.Add([]byte{}, []byte{1}, bytes.Repeat([]byte{0}, 200))
	f.Fuzz(func(t *testing.T, m1, m2, m3 []byte) {
		r := testChannel(t, Responder, Config{})
		if reply, err := r.consumeHello(m1); err == nil && len(reply) <= frameHeaderLen {
			t.Fatal("message 2 is empty")
		}
		i, realHello := initiatorAfterHello(t)
		if _, _, err := i.consumeReply(m2); err == nil {
			t.Fatal("the initiator accepted a message 2 nobody made")
		}
		r2 := testChannel(t, Responder, Config{})
		if _, err := r2.consumeHello(realHello); err != nil {
			t.Fatal(err)
		}
		if id, err := r2.consumeFinish(m3); err == nil {
			t.Fatalf("the responder accepted a message 3 nobody made (identity %s)", id)
		}
	})
}
