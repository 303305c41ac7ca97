package relays

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Control messages travel between a registrant and a relay service. They are
// small, so the format favours being easy to check over being compact:
//
//	version byte (controlVersion)
//	kind byte
//	fields: tag byte, uvarint length, value bytes; repeated, each tag at most once
//
// Unknown tags are skipped so a later version can add fields without breaking
// an older peer; an unknown version or kind is refused.

const controlVersion byte = 1

// maxControlSize bounds a control message; anything larger is not ours.
const maxControlSize = 4096

type kind byte

const (
	kindRegister   kind = 1 // registrant -> service: create or replace forward_to_NAME
	kindRegistered kind = 2 // service -> registrant: ack with the forwarder's address
	kindPing       kind = 3 // registrant -> service: is my registration still current?
	kindPong       kind = 4 // service -> registrant: status of the registration
	kindDelete     kind = 5 // registrant -> service: remove my registration
	kindDeleted    kind = 6 // service -> registrant: ack of a delete
	kindError      kind = 7 // service -> registrant: the request was refused
)

func (k kind) String() string {
	switch k {
	case kindRegister:
		return "register"
	case kindRegistered:
		return "registered"
	case kindPing:
		return "ping"
	case kindPong:
		return "pong"
	case kindDelete:
		return "delete"
	case kindDeleted:
		return "deleted"
	case kindError:
		return "error"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

func (k kind) isResponse() bool {
	return k == kindRegistered || k == kindPong || k == kindDeleted || k == kindError
}

// Statuses a pong or a deleted ack carries.
const (
	statusOK      = "ok"
	statusUnknown = "unknown" // no forwarder by that name
	statusMoved   = "moved"   // the forwarder's route back is not the sender's
)

const (
	tagNonce     byte = 1
	tagName      byte = 2
	tagStatus    byte = 3
	tagForwarder byte = 4
	tagError     byte = 5
	tagNode      byte = 6
	tagInterval  byte = 7 // registrant's check interval, milliseconds
	tagProof     byte = 8 // proof of the registrant: see ownerProof
)

// control is one decoded control message. Zero-valued fields are not encoded.
type control struct {
	Kind      kind
	Nonce     uint64
	Name      string
	Status    string
	Forwarder string
	Error     string
	Node      string
	Interval  time.Duration
	Proof     string
}

var errControl = errors.New("not a relay control message")

func (c *control) encode() ([]byte, error) {
	b := make([]byte, 0, 64+len(c.Name)+len(c.Status)+len(c.Forwarder)+len(c.Error)+len(c.Node)+len(c.Proof))
	b = append(b, controlVersion, byte(c.Kind))
	var num [binary.MaxVarintLen64]byte
	if c.Nonce != 0 {
		b = appendField(b, tagNonce, num[:binary.PutUvarint(num[:], c.Nonce)])
	}
	for _, f := range []struct {
		tag byte
		v   string
	}{{tagName, c.Name}, {tagStatus, c.Status}, {tagForwarder, c.Forwarder}, {tagError, c.Error}, {tagNode, c.Node}, {tagProof, c.Proof}} {
		if f.v != "" {
			b = appendField(b, f.tag, []byte(f.v))
		}
	}
	if c.Interval > 0 {
		b = appendField(b, tagInterval, num[:binary.PutUvarint(num[:], uint64(c.Interval/time.Millisecond))])
	}
	if len(b) > maxControlSize {
		return nil, fmt.Errorf("relay %s message is %d bytes, the limit is %d", c.Kind, len(b), maxControlSize)
	}
	return b, nil
}

func appendField(b []byte, tag byte, v []byte) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func decodeControl(b []byte) (control, error) {
	var c control
	fail := func(format string, args ...any) (control, error) {
		return control{}, fmt.Errorf("%w: %s", errControl, fmt.Sprintf(format, args...))
	}
	if len(b) > maxControlSize {
		return fail("%d bytes, the limit is %d", len(b), maxControlSize)
	}
	if len(b) < 2 {
		return fail("%d bytes, too short", len(b))
	}
	if b[0] != controlVersion {
		return fail("version %d, this node speaks %d", b[0], controlVersion)
	}
	c.Kind = kind(b[1])
	if c.Kind < kindRegister || c.Kind > kindError {
		return fail("unknown kind %d", b[1])
	}
	var seen [256]bool
	for i := 2; i < len(b); {
		tag := b[i]
		i++
		n, k := binary.Uvarint(b[i:])
		if k <= 0 {
			return fail("bad length of field %d", tag)
		}
		i += k
		if n > uint64(len(b)-i) {
			return fail("field %d is %d bytes but only %d remain", tag, n, len(b)-i)
		}
		v := b[i : i+int(n)]
		i += int(n)
		if seen[tag] {
			return fail("field %d appears twice", tag)
		}
		seen[tag] = true
		switch tag {
		case tagNonce, tagInterval:
			x, k := binary.Uvarint(v)
			if k <= 0 || k != len(v) {
				return fail("field %d is not a varint", tag)
			}
			if tag == tagNonce {
				c.Nonce = x
			} else {
				if x > uint64(maxInterval/time.Millisecond) {
					return fail("interval %d ms is too long", x)
				}
				c.Interval = time.Duration(x) * time.Millisecond
			}
		case tagName:
			c.Name = string(v)
		case tagStatus:
			c.Status = string(v)
		case tagForwarder:
			c.Forwarder = string(v)
		case tagError:
			c.Error = string(v)
		case tagNode:
			c.Node = string(v)
		case tagProof:
			if len(v) > maxProofLen {
				return fail("proof is %d bytes, the limit is %d", len(v), maxProofLen)
			}
			c.Proof = string(v)
		}
	}
	return c, nil
}

// maxProofLen bounds the proof field.
const maxProofLen = 64

// maxInterval bounds intervals carried on the wire so arithmetic on them
// cannot overflow.
const maxInterval = 24 * time.Hour
