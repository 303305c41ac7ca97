// Package securechannel builds end-to-end encrypted, mutually authenticated
// channels between two nodes over any route: through any transport, any
// number of hops and relays. A channel is a pair of workers, one on each
// node; everything between them (links, relay forwarders, bridge nodes)
// carries ciphertext only.
//
// The handshake is Noise XX (25519, ChaCha20-Poly1305, BLAKE2s). Each side's
// Ed25519 identity (host/identity) signs its static Noise key, and the
// signature and identity key travel inside the encrypted handshake payloads,
// so each end learns the other's identifier and can refuse one it does not
// authorise.
//
// After the handshake every data frame carries an explicit 8-byte counter
// used as the AEAD nonce (the route may lose or reorder frames, so implicit
// nonces would desynchronise); a sliding window accepts each counter once,
// and keys change every RekeyAfter frames. Messages larger than one Noise
// frame are split and joined. A frame that is tampered with, truncated,
// replayed or too old is dropped and counted, never delivered.
//
// Using a channel: a listener (Listen) runs at a well-known address, by
// convention /service/api. Create starts an initiator worker at
// /worker/<id> that performs the handshake toward ROUTE/service/api. A
// message sent to /worker/<id>/rest/of/route is encrypted with its
// rest-of-route and return route inside, decrypted by the peer's channel
// worker and sent on along rest/of/route with the peer channel worker's
// address at the front of its return route, so replies come back through
// the channel. Decrypted messages carry the peer's identifier in
// routing.LocalInfo.Identity and the channel's flow in LocalInfo.Flow, so
// the node's access control (deny by default) and Policy apply.
package securechannel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/internal/payloadbuf"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Defaults of Config.
const (
	// DefaultRekeyAfter is how many frames one key encrypts before the next
	// key is derived.
	DefaultRekeyAfter = 1 << 16
	// DefaultHandshakeTimeout bounds a handshake, on both sides.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultKeepalive is Config.Keepalive's default.
	DefaultKeepalive = 30 * time.Second
	// DefaultRetransmit is the first handshake retransmission interval.
	DefaultRetransmit = 500 * time.Millisecond
	maxRetransmit     = 2 * time.Second
	// DefaultProbeTimeout is Config.ProbeTimeout's default.
	DefaultProbeTimeout = 3 * time.Second
)

// Errors callers can test with errors.Is.
var (
	// ErrNotAuthorized: the peer proved an identifier this side does not authorise.
	ErrNotAuthorized = errors.New("peer identity is not authorised")
	// ErrRefused: the peer refused this side during the handshake.
	ErrRefused = errors.New("peer refused the secure channel")
	// ErrHandshake: the handshake failed (bad message, bad signature, timeout).
	ErrHandshake = errors.New("secure channel handshake failed")
	// ErrClosed: the channel is closed.
	ErrClosed = errors.New("secure channel is closed")
)

// Config configures one side of a channel.
type Config struct {
	// Identity proves who this side is. Required.
	Identity *identity.Identity
	// Authorized lists the identifiers accepted as the peer; empty accepts
	// any peer that proves an identity (the identifier is still learnt and
	// carried on every message for access control to check).
	Authorized []string
	// RekeyAfter is how many frames this side sends under one key before it
	// derives the next; the peer learns it in the handshake. Default
	// DefaultRekeyAfter.
	RekeyAfter uint64
	// MaxMessageSize bounds one message through the channel (encoded, with
	// its routes); larger ones are refused at the sender and dropped at the
	// receiver. Default routing.DefaultMaxMessageSize.
	MaxMessageSize int
	// HandshakeTimeout bounds the handshake. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Retransmit is how long the initiator waits for the next handshake
	// message before it sends its last one again (a route over an
	// unreliable transport may lose it); it doubles up to 2 s. Default
	// DefaultRetransmit.
	Retransmit time.Duration
	// Keepalive: a channel that sent nothing for this long sends an empty
	// encrypted frame, and one that received nothing valid for three times
	// this long closes, so a peer that vanished (its node killed, its route
	// gone for good) does not leave a worker behind. Default
	// DefaultKeepalive; negative disables both.
	Keepalive time.Duration
	// ProbeTimeout: when an error message from the route arrives (the
	// peer's node, or one on the way, could not deliver a frame: the peer
	// restarted, a link broke), the channel sends the peer an encrypted
	// probe, and closes if nothing valid comes back within ProbeTimeout.
	// Error messages are not authenticated, so one never closes a channel
	// by itself: a forged one costs a probe, at most one per ProbeTimeout.
	// Default DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Logger receives the channel's logs. Default: the node's logger.
	Logger hclog.Logger
}

func (c *Config) validate(n *node.Node) error {
	if c.Identity == nil {
		return errors.New("secure channel: an identity is required")
	}
	for _, a := range c.Authorized {
		if err := identity.ValidIdentifier(a); err != nil {
			return fmt.Errorf("secure channel: authorised %w", err)
		}
	}
	if c.RekeyAfter == 0 {
		c.RekeyAfter = DefaultRekeyAfter
	}
	if c.RekeyAfter > maxRekeyAfter {
		return fmt.Errorf("secure channel: RekeyAfter %d exceeds %d", c.RekeyAfter, uint64(maxRekeyAfter))
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = routing.DefaultMaxMessageSize
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Retransmit <= 0 {
		c.Retransmit = DefaultRetransmit
	}
	if c.Keepalive == 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.Logger == nil {
		c.Logger = n.Logger().Named("securechannel")
	}
	return nil
}

func (c *Config) authorizes(id string) bool {
	return len(c.Authorized) == 0 || slices.Contains(c.Authorized, id)
}

// Role says which side of the handshake a channel worker took.
type Role string

// Roles.
const (
	Initiator Role = "initiator"
	Responder Role = "responder"
)

// channel states.
const (
	stateHandshake  int32 = iota // waiting for the peer's next handshake message
	stateAwaitReady              // initiator: sent message 3, waiting for the responder's ready
	stateOpen
	stateClosed
)

// channel is the worker at one end of a secure channel. It has two
// addresses: local (its primary, /worker/<id>, where local workers send
// plaintext) and wire (where the peer's frames arrive). Only wire is allowed
// on the network flow frames come in on, so nobody on the network can make
// it encrypt chosen plaintext.
type channel struct {
	cfg    Config
	role   Role
	log    hclog.Logger
	n      *node.Node
	ctx    *node.Context
	local  routing.Address
	wire   routing.Address
	self   routing.Route // {wire}: the return route of every frame
	flow   string
	stats  *counters
	parent *counters // the listener's totals; may be nil

	state     atomic.Int32
	hs        *noise.HandshakeState
	static    noise.DHKey
	peerRoute routing.Route
	peerMu    sync.Mutex
	peerID    string
	timer     *time.Timer

	sndMu    sync.Mutex // the handler and the keepalive goroutine both send
	snd      sender
	lastSent atomic.Int64 // unix nanoseconds
	lastRecv atomic.Int64
	probing  atomic.Bool
	rcv      receiver
	reasm    reassembler
	nextFrag uint32
	codec    routing.Codec
	scratch  []byte

	done        chan error // initiator: the outcome of the handshake (buffered)
	onHandshake func()     // called once when the handshake ends either way
	onClose     func(*channel)
	routeDesc   string // the route toward the peer as first known, for listings
	reply       []byte // responder: message 2 as sent, for a repeated hello
	finish      []byte // initiator: message 3 as sent, for retransmission
	finished    []byte // responder: the body of message 3 it accepted
}

// keepalive runs on its own goroutine while the channel is open: it sends
// an empty frame when the channel has been quiet for Keepalive and closes
// the channel when nothing valid arrived for three times that.
func (ch *channel) keepalive() {
	every := ch.cfg.Keepalive
	if every < 0 {
		return
	}
	now := time.Now().UnixNano()
	ch.lastRecv.CompareAndSwap(0, now)
	ch.lastSent.CompareAndSwap(0, now)
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ch.ctx.Done():
			return
		}
		if ch.state.Load() != stateOpen {
			return
		}
		now := time.Now()
		if now.Sub(time.Unix(0, ch.lastRecv.Load())) > 3*every {
			ch.log.Info("secure channel closed: nothing from the peer", "peer", ch.peer(), "for", 3*every)
			ch.expireIdle()
			return
		}
		if now.Sub(time.Unix(0, ch.lastSent.Load())) >= every {
			if err := ch.sendData(ch.ctx, []byte{kindKeepalive}); err != nil {
				ch.log.Debug("keepalive not sent", "error", err)
			}
		}
	}
}

// probe asks an open channel's peer to prove it is still there and closes
// the channel when nothing valid arrives within ProbeTimeout; one probe at a
// time.
func (ch *channel) probe() {
	if ch.state.Load() != stateOpen || !ch.probing.CompareAndSwap(false, true) {
		return
	}
	sent := time.Now().UnixNano()
	ch.count(cProbes)
	// The worker's own context: the probe must not fail because the sender
	// that hit the broken route gave up.
	if err := ch.sendData(ch.ctx, []byte{kindProbe}); err != nil {
		ch.log.Debug("probe not sent", "error", err)
	}
	time.AfterFunc(ch.cfg.ProbeTimeout, func() {
		defer ch.probing.Store(false)
		if ch.state.Load() == stateOpen && ch.lastRecv.Load() < sent {
			ch.log.Info("secure channel closed: the peer did not answer a probe after the route reported an undelivered frame", "peer", ch.peer(), "within", ch.cfg.ProbeTimeout)
			ch.expireIdle()
		}
	})
}

// expireIdle stops the channel's worker from the keepalive goroutine.
func (ch *channel) expireIdle() {
	ctx, cancel := context.WithTimeout(ch.n.Context(), 5*time.Second)
	defer cancel()
	_ = ch.n.StopWorker(ctx, ch.local.Value)
}

// retransmit runs on its own goroutine while an initiator's handshake is
// in progress: whenever the next message is late it sends its last one
// again, so a lossy route costs time, not the channel. It stops once the
// channel is open or its worker stopped.
func (ch *channel) retransmit(hello []byte, to routing.Route) {
	d := ch.cfg.Retransmit
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ch.ctx.Done():
			return
		}
		var err error
		switch ch.state.Load() {
		case stateHandshake:
			ch.count(cFramesSent)
			err = ch.ctx.SendMessage(ch.ctx, &routing.Message{Onward: to, Return: ch.self, Payload: hello})
		case stateAwaitReady:
			err = ch.sendFrame(ch.ctx, ch.finish)
		case stateOpen:
			ch.keepalive()
			return
		default:
			return
		}
		if err != nil {
			ch.log.Debug("handshake retransmission failed", "error", err)
		}
		d = min(2*d, maxRetransmit)
		t.Reset(d)
	}
}

// newChannel prepares a channel worker at the local address local (a new
// worker address when empty).
func newChannel(n *node.Node, cfg Config, role Role, local string) *channel {
	if local == "" {
		local = node.NewWorkerID()
	}
	ch := &channel{
		cfg:   cfg,
		role:  role,
		n:     n,
		local: routing.Local(local),
		wire:  routing.Local(node.NewWorkerID()),
		stats: &counters{},
		codec: routing.Codec{MaxSize: cfg.MaxMessageSize},
		done:  make(chan error, 1),
	}
	ch.self = routing.Route{ch.wire}
	ch.log = cfg.Logger.With("channel", ch.local.String(), "role", string(role))
	ch.reasm = reassembler{max: cfg.MaxMessageSize}
	return ch
}

// identityPayload is what this side proves itself with: a fresh static
// Noise key for the channel, signed by the identity.
func (ch *channel) identityPayload() ([]byte, error) {
	kp, err := suite.GenerateKeypair(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate static key: %w", err)
	}
	ch.static = kp
	p := handshakePayload{
		identityKey: ch.cfg.Identity.PublicKey,
		signature:   ch.cfg.Identity.Sign(bindingMessage(kp.Public)),
		rekeyAfter:  ch.cfg.RekeyAfter,
	}
	return p.append(nil), nil
}

// verifyPeer checks the peer's identity payload against the static key the
// handshake authenticated and returns the peer's identifier and rekey interval.
func (ch *channel) verifyPeer(payload []byte) (string, uint64, error) {
	p, err := decodeHandshakePayload(payload)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	static := ch.hs.PeerStatic()
	if !identity.Verify(p.identityKey, bindingMessage(static), p.signature) {
		return "", 0, fmt.Errorf("%w: the peer's identity signature over its static key does not verify", ErrHandshake)
	}
	return identity.Identifier(p.identityKey), p.rekeyAfter, nil
}

func (ch *channel) setPeer(id string) {
	ch.peerMu.Lock()
	ch.peerID = id
	ch.peerMu.Unlock()
}

func (ch *channel) peer() string {
	ch.peerMu.Lock()
	defer ch.peerMu.Unlock()
	return ch.peerID
}

// Initialize keeps the worker's context for sends made outside a handler.
func (ch *channel) Initialize(c *node.Context) error {
	ch.ctx = c
	return nil
}

// HandleMessage encrypts what local workers send to the local address and
// decrypts the peer's frames arriving at the wire address.
func (ch *channel) HandleMessage(c *node.Context, m *routing.Message) error {
	if len(m.Onward) > 0 && m.Onward[0].Value == ch.local.Value {
		return ch.outgoing(c, m)
	}
	ch.incoming(c, m)
	return nil
}

// outgoing encrypts one local message for the peer.
func (ch *channel) outgoing(c *node.Context, m *routing.Message) error {
	if ch.state.Load() != stateOpen {
		ch.count(cNotOpen)
		return fmt.Errorf("send through %s: %w", ch.local, ErrClosed)
	}
	rest := m.Onward[1:]
	if len(rest) == 0 {
		ch.count(cUndeliverable)
		return fmt.Errorf("send through %s: the route ends at the channel; append the route to use on the far side (e.g. %s/service/echo)", ch.local, ch.local)
	}
	inner := routing.Message{Onward: rest, Return: m.Return, Payload: m.Payload}
	size := routing.EncodedSize(&inner)
	if size > ch.cfg.MaxMessageSize {
		ch.count(cUndeliverable)
		return fmt.Errorf("send through %s: message of %d bytes exceeds the channel's limit of %d", ch.local, size, ch.cfg.MaxMessageSize)
	}
	if 1+size <= MaxPlaintext {
		// One frame: encode straight into the frame and seal it in place.
		frame := frameBuf(dataHeaderLen + 1 + size + tagLen)[:dataHeaderLen]
		frame = append(frame, kindWhole)
		frame, err := ch.codec.Append(frame, &inner)
		if err != nil {
			return fmt.Errorf("send through %s: %w", ch.local, err)
		}
		if err := ch.sendSealed(c, frame); err != nil {
			return err
		}
		ch.count(cSent)
		recycleOwned(m)
		return nil
	}
	pt := append(ch.scratch[:0], kindWhole)
	pt, err := ch.codec.Append(pt, &inner)
	if err != nil {
		return fmt.Errorf("send through %s: %w", ch.local, err)
	}
	ch.scratch = pt
	if err := ch.sendFragments(c, pt[1:]); err != nil {
		return err
	}
	if cap(ch.scratch) > 2*MaxPlaintext {
		ch.scratch = nil // do not keep a large message's buffer
	}
	ch.count(cSent)
	recycleOwned(m)
	return nil
}

// recycleOwned gives back the payload of a message its sender handed over
// (routing.LocalInfo.PayloadOwned, a portal's data chunk) once its bytes
// are sealed into a frame. Only on success, like a transport link: a
// failed message may still be read for its error report.
func recycleOwned(m *routing.Message) {
	if m.Local.PayloadOwned {
		payloadbuf.Put(m.Payload)
		m.Payload = nil
	}
}

// frameBuf returns an empty buffer with room for n bytes for a frame that
// is handed over to the route (sendOwned): a transport link puts it back
// into the payload pools once it has encoded it.
func frameBuf(n int) []byte {
	if n >= payloadbuf.MinPooled {
		return payloadbuf.Get(n)[:0]
	}
	return make([]byte, 0, n)
}

// payloadAlloc is the allocator for a decrypted message's payload: a
// portal data chunk goes into the shared payload pools, which the portal
// session that receives it recycles (as a transport link decodes it);
// other lengths are allocated exactly unless a pooled buffer is free.
func payloadAlloc(n int) []byte {
	if payloadbuf.Fits(n) {
		if b := payloadbuf.Reuse(n); b != nil {
			return b
		}
		if payloadbuf.Spills(n) {
			return payloadbuf.Get(n)
		}
	}
	return make([]byte, n)
}

// sendFragments splits an encoded message too large for one Noise frame
// into fragments and seals them, one after another, into a single batch
// frame sent as one routing message: the route carries one message per
// message, and the only copy of the plaintext is the encryption itself
// (the fragment header is sealed from a small buffer with the part
// following it, not copied next to it).
func (ch *channel) sendFragments(ctx context.Context, enc []byte) error {
	count := (len(enc) + maxFragmentBody - 1) / maxFragmentBody
	if count > 0xffff {
		return fmt.Errorf("send through %s: message needs %d fragments", ch.local, count)
	}
	id := ch.nextFrag
	ch.nextFrag++
	per := batchLenSize + dataHeaderLen + fragHeaderLen + tagLen
	frame := frameBuf(frameHeaderLen + count*per + len(enc))
	frame = appendFrameHeader(frame, typeBatch)
	var head [fragHeaderLen]byte
	ch.sndMu.Lock()
	before := ch.snd.rekeys
	var err error
	for i := 0; i < count && err == nil; i++ {
		part := enc[i*maxFragmentBody : min(len(enc), (i+1)*maxFragmentBody)]
		at := len(frame)
		frame = append(frame, 0, 0, 0, 0) // the length, known once sealed
		frame, err = ch.snd.sealParts(frame, appendFragmentHeader(head[:0], id, uint16(i), uint16(count)), part)
		binary.BigEndian.PutUint32(frame[at:], uint32(len(frame)-at-batchLenSize))
	}
	after := ch.snd.rekeys
	ch.sndMu.Unlock()
	ch.lastSent.Store(time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("send through %s: %w", ch.local, err)
	}
	if d := after - before; d > 0 {
		ch.add(cRekeys, d)
	}
	ch.add(cFramesSent, uint64(count)-1) // sendFrame counts one
	return ch.sendOwned(ctx, frame)
}

// sendData seals plaintext into a data frame and sends it to the peer.
func (ch *channel) sendData(ctx context.Context, plaintext []byte) error {
	frame, err := ch.sealFrame(func(s *sender) ([]byte, error) {
		return s.seal(make([]byte, 0, dataHeaderLen+len(plaintext)+tagLen), plaintext)
	})
	if err != nil {
		return err
	}
	return ch.sendFrame(ctx, frame)
}

// sendSealed seals frame (dataHeaderLen bytes for the header, then the
// plaintext) in place and sends it to the peer.
func (ch *channel) sendSealed(ctx context.Context, frame []byte) error {
	frame, err := ch.sealFrame(func(s *sender) ([]byte, error) { return s.sealAt(frame, 0) })
	if err != nil {
		return err
	}
	return ch.sendOwned(ctx, frame)
}

// sealFrame runs seal under the send lock and counts the rekeys it did.
func (ch *channel) sealFrame(seal func(*sender) ([]byte, error)) ([]byte, error) {
	ch.sndMu.Lock()
	before := ch.snd.rekeys
	frame, err := seal(&ch.snd)
	after := ch.snd.rekeys
	ch.sndMu.Unlock()
	ch.lastSent.Store(time.Now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("send through %s: %w", ch.local, err)
	}
	if d := after - before; d > 0 {
		ch.add(cRekeys, d)
	}
	return frame, nil
}

func (ch *channel) sendFrame(ctx context.Context, frame []byte) error {
	return ch.send(ctx, frame, false)
}

// sendOwned sends a frame nothing else references (from frameBuf) and
// hands it over with the message (routing.LocalInfo.PayloadOwned).
func (ch *channel) sendOwned(ctx context.Context, frame []byte) error {
	return ch.send(ctx, frame, true)
}

func (ch *channel) send(ctx context.Context, frame []byte, owned bool) error {
	ch.count(cFramesSent)
	msg := &routing.Message{Onward: ch.peerRoute, Return: ch.self, Payload: frame, Local: routing.LocalInfo{PayloadOwned: owned}}
	if err := ch.ctx.SendMessage(ctx, msg); err != nil {
		// The route toward the peer broke (a link that cannot be dialled
		// again, a peer node gone): find out whether the peer is still
		// there, so a channel to a vanished peer does not linger.
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			ch.probe()
		}
		return fmt.Errorf("send through %s to %s: %w", ch.local, ch.peerRoute, err)
	}
	return nil
}

// incoming handles one frame from the wire. Nothing here returns an error:
// a bad frame is counted and dropped, and must not stop the channel.
func (ch *channel) incoming(c *node.Context, m *routing.Message) {
	if node.IsErrorPayload(m.Payload) {
		ch.count(cErrorReports)
		if re, ok := node.AsRemoteError(m); ok {
			ch.log.Debug("the route reported an undelivered frame; probing the peer", "error", re.Error())
		}
		ch.probe()
		return
	}
	ch.count(cFramesReceived)
	f, err := decodeFrame(m.Payload)
	if err != nil {
		ch.count(cMalformed)
		ch.log.Debug("dropped a frame that does not decode", "error", err, "bytes", len(m.Payload))
		return
	}
	st := ch.state.Load()
	switch f.typ {
	case typeReply:
		if ch.role != Initiator || st != stateHandshake {
			ch.count(cUnexpected)
			return
		}
		ch.readReply(c, m, f)
	case typeFinish:
		if ch.role == Responder && st == stateOpen && ch.finished != nil && bytes.Equal(f.body, ch.finished) {
			// The initiator did not get our ready (lost on the way) and
			// sent message 3 again: confirm again.
			if err := ch.sendData(c, []byte{kindReady}); err != nil {
				ch.log.Debug("could not confirm the channel to the initiator", "error", err)
			}
			return
		}
		if ch.role != Responder || st != stateHandshake {
			ch.count(cUnexpected)
			return
		}
		ch.readFinish(c, f)
	case typeRefuse:
		if st != stateHandshake && st != stateAwaitReady {
			ch.count(cUnexpected)
			return
		}
		ch.fail(fmt.Errorf("%w: %s", ErrRefused, refuseReason(f.body)))
	case typeData:
		if st != stateOpen && st != stateAwaitReady {
			ch.count(cNotOpen)
			return
		}
		ch.readData(c, m.Payload[:dataHeaderLen], f)
	case typeBatch:
		if st != stateOpen && st != stateAwaitReady {
			ch.count(cNotOpen)
			return
		}
		ch.readBatch(c, f.body)
	default:
		ch.count(cUnexpected)
	}
}

// readReply is the initiator reading handshake message 2 and answering with 3.
func (ch *channel) readReply(c *node.Context, m *routing.Message, f frame) {
	ch.peerRoute = m.Return.Clone()
	id, msg3, err := ch.consumeReply(f.body)
	if err != nil {
		if errors.Is(err, ErrNotAuthorized) {
			ch.count(cRefused)
			ch.refuse(c, fmt.Sprintf("the initiator does not authorise identifier %s", id))
		} else {
			ch.count(cTampered)
		}
		ch.fail(err)
		return
	}
	ch.finish = msg3
	ch.state.Store(stateAwaitReady)
	if err := ch.sendFrame(c, msg3); err != nil {
		ch.fail(fmt.Errorf("%w: %v", ErrHandshake, err))
	}
}

// consumeReply reads message 2, checks the responder's identity and writes
// message 3 (a complete frame). It sends nothing, so it can be fuzzed alone.
func (ch *channel) consumeReply(body []byte) (string, []byte, error) {
	payload, _, _, err := ch.hs.ReadMessage(nil, body)
	if err != nil {
		return "", nil, fmt.Errorf("%w: read the responder's message: %v", ErrHandshake, err)
	}
	id, rekey, err := ch.verifyPeer(payload)
	if err != nil {
		return "", nil, err
	}
	ch.setPeer(id)
	if !ch.cfg.authorizes(id) {
		return id, nil, fmt.Errorf("%w: the node at the end of the route proved identifier %s, and this channel authorises only %v", ErrNotAuthorized, id, ch.cfg.Authorized)
	}
	mine := handshakePayload{
		identityKey: ch.cfg.Identity.PublicKey,
		signature:   ch.cfg.Identity.Sign(bindingMessage(ch.static.Public)),
		rekeyAfter:  ch.cfg.RekeyAfter,
	}
	msg3, sendCS, recvCS, err := ch.hs.WriteMessage(appendFrameHeader(nil, typeFinish), mine.append(nil))
	if err != nil || sendCS == nil {
		return id, nil, fmt.Errorf("%w: write message 3: %v", ErrHandshake, err)
	}
	ch.snd = sender{key: newEpochKey(sendCS), rekeyAfter: ch.cfg.RekeyAfter}
	ch.rcv = receiver{cur: newEpochKey(recvCS), rekeyAfter: rekey}
	ch.hs = nil
	return id, msg3, nil
}

// consumeHello is the responder reading message 1 and writing message 2 (a
// complete frame). It sends nothing, so it can be fuzzed alone.
func (ch *channel) consumeHello(body []byte) ([]byte, error) {
	payload, err := ch.identityPayload()
	if err != nil {
		return nil, err
	}
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: suite, Pattern: noise.HandshakeXX, Prologue: prologue, StaticKeypair: ch.static})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	if _, _, _, err := hs.ReadMessage(nil, body); err != nil {
		return nil, fmt.Errorf("%w: read message 1: %v", ErrHandshake, err)
	}
	msg2, _, _, err := hs.WriteMessage(appendFrameHeader(nil, typeReply), payload)
	if err != nil {
		return nil, fmt.Errorf("%w: write message 2: %v", ErrHandshake, err)
	}
	ch.hs = hs
	return msg2, nil
}

// errRetry marks a message 3 that did not authenticate: the handshake state
// is unchanged, so a genuine one may still come.
var errRetry = errors.New("message 3 does not authenticate")

// consumeFinish is the responder reading message 3 and checking the
// initiator's identity. It sends nothing, so it can be fuzzed alone.
func (ch *channel) consumeFinish(body []byte) (string, error) {
	payload, recvCS, sendCS, err := ch.hs.ReadMessage(nil, body)
	if err != nil || recvCS == nil {
		return "", fmt.Errorf("%w: %v", errRetry, err)
	}
	id, rekey, err := ch.verifyPeer(payload)
	if err != nil {
		return "", err
	}
	ch.setPeer(id)
	if !ch.cfg.authorizes(id) {
		return id, fmt.Errorf("%w: initiator identifier %s", ErrNotAuthorized, id)
	}
	ch.snd = sender{key: newEpochKey(sendCS), rekeyAfter: ch.cfg.RekeyAfter}
	ch.rcv = receiver{cur: newEpochKey(recvCS), rekeyAfter: rekey}
	ch.hs = nil
	return id, nil
}

// readFinish is the responder reading handshake message 3.
func (ch *channel) readFinish(c *node.Context, f frame) {
	id, err := ch.consumeFinish(f.body)
	switch {
	case errors.Is(err, errRetry):
		ch.count(cTampered)
		ch.log.Debug("dropped a handshake message that does not authenticate", "error", err)
		return
	case errors.Is(err, ErrNotAuthorized):
		ch.count(cRefused)
		ch.refuse(c, fmt.Sprintf("this listener does not authorise identifier %s", id))
		ch.fail(err)
		return
	case err != nil:
		ch.count(cRefused)
		ch.refuse(c, "the identity proof does not verify")
		ch.fail(err)
		return
	}
	ch.finished = append([]byte(nil), f.body...)
	ch.state.Store(stateOpen)
	ch.handshakeDone(nil)
	go ch.keepalive()
	if err := ch.sendData(c, []byte{kindReady}); err != nil {
		ch.log.Debug("could not confirm the channel to the initiator", "error", err)
	}
	ch.log.Debug("secure channel open", "peer", id, "route", ch.peerRoute.String())
}

// readBatch reads the data frames of a batch in order; the first that does
// not decode ends it (those before it were read; each authenticated frame
// stands on its own).
func (ch *channel) readBatch(c *node.Context, body []byte) {
	for first := true; len(body) > 0; first = false {
		f, inner, rest, err := nextInBatch(body)
		if err != nil {
			ch.count(cMalformed)
			ch.log.Debug("dropped the rest of a batch that does not decode", "error", err)
			return
		}
		if !first {
			ch.count(cFramesReceived)
		}
		ch.readData(c, inner[:dataHeaderLen], f)
		body = rest
	}
}

func (ch *channel) readData(c *node.Context, header []byte, f frame) {
	before := ch.rcv.rekeys
	pt, err := ch.rcv.open(ch.scratch[:0], header, f)
	switch {
	case errors.Is(err, errReplay):
		ch.count(cReplayed)
		return
	case errors.Is(err, errTooOld), errors.Is(err, errAhead):
		ch.count(cTooOld)
		return
	case err != nil:
		ch.count(cTampered)
		ch.log.Debug("dropped a frame that does not authenticate", "counter", f.counter)
		return
	}
	ch.scratch = pt
	ch.lastRecv.Store(time.Now().UnixNano())
	if d := ch.rcv.rekeys - before; d > 0 {
		ch.add(cRekeys, d)
	}
	if len(pt) == 0 {
		ch.count(cMalformed)
		return
	}
	switch pt[0] {
	case kindWhole:
		ch.deliver(c, pt[1:])
	case kindFragment:
		fr, err := decodeFragment(pt)
		if err != nil {
			ch.count(cMalformed)
			return
		}
		whole, err := ch.reasm.add(fr)
		if err != nil {
			ch.count(cMalformed)
			ch.log.Debug("dropped a fragmented message", "error", err)
			return
		}
		if whole != nil {
			ch.deliver(c, whole)
			// deliver copied what it passes on out of whole, which
			// nothing else references.
			payloadbuf.Put(whole)
		}
	case kindReady:
		if ch.role == Initiator && ch.state.CompareAndSwap(stateAwaitReady, stateOpen) {
			ch.handshakeDone(nil)
			ch.log.Debug("secure channel open", "peer", ch.peer(), "route", ch.peerRoute.String())
		}
	case kindKeepalive:
	case kindProbe:
		if err := ch.sendData(c, []byte{kindKeepalive}); err != nil {
			ch.log.Debug("probe not answered", "error", err)
		}
	case kindClose:
		ch.state.Store(stateClosed)
		ch.log.Debug("the peer closed the secure channel")
		c.Stop()
	default:
		ch.count(cMalformed)
	}
	if cap(ch.scratch) > 2*MaxPlaintext {
		ch.scratch = nil
	}
}

// deliver sends a decrypted message on, locally, with this channel at the
// front of its return route and the peer's identity attached.
func (ch *channel) deliver(c *node.Context, enc []byte) {
	inner, err := ch.codec.DecodeAlloc(enc, payloadAlloc)
	if err != nil {
		ch.count(cMalformed)
		ch.log.Debug("dropped a decrypted message that does not decode", "error", err)
		return
	}
	if next, ok := inner.Onward.Next(); !ok || !next.IsLocal() {
		// Like network input: a peer may reach local workers only, it may
		// not make this node dial wherever it asks.
		ch.count(cUndeliverable)
		ch.log.Debug("dropped a decrypted message whose route does not start with a local worker", "onward", inner.Onward.String())
		return
	}
	ret, err := inner.Return.Prepend(ch.local)
	if err != nil {
		ch.count(cUndeliverable)
		return
	}
	// DecodeAlloc copied the payload out of enc (scratch space the next
	// frame reuses) into a buffer of its own, so the message can be handed
	// on as it is, and a portal session that receives it may recycle it.
	msg := &routing.Message{Onward: inner.Onward, Return: ret, Payload: inner.Payload,
		Local: routing.LocalInfo{Flow: ch.flow, Identity: ch.peer()}}
	if err := c.SendMessage(c, msg); err != nil {
		ch.count(cUndeliverable)
		ch.log.Debug("decrypted message not delivered", "onward", inner.Onward.String(), "error", err)
		return
	}
	ch.count(cDelivered)
}

// refuse tells the peer why the handshake ends; best effort.
func (ch *channel) refuse(ctx context.Context, reason string) {
	if len(ch.peerRoute) == 0 {
		return
	}
	frame := append(appendFrameHeader(nil, typeRefuse), reason...)
	_ = ch.sendFrame(ctx, frame)
}

// fail ends a handshake that cannot complete.
func (ch *channel) fail(err error) {
	if ch.state.Swap(stateClosed) == stateClosed {
		return
	}
	ch.log.Debug("secure channel handshake failed", "error", err)
	ch.handshakeDone(err)
	ch.ctx.Stop()
}

// expire stops a channel whose handshake did not finish in time. It runs on
// a timer's goroutine, so it stops the worker from outside.
func (ch *channel) expire(n *node.Node) {
	if st := ch.state.Load(); st != stateHandshake && st != stateAwaitReady {
		return
	}
	select {
	case ch.done <- fmt.Errorf("%w: no answer within %s", ErrHandshake, ch.cfg.HandshakeTimeout):
	default:
	}
	ctx, cancel := context.WithTimeout(n.Context(), 5*time.Second)
	defer cancel()
	_ = n.StopWorker(ctx, ch.local.Value)
}

func (ch *channel) handshakeDone(err error) {
	if ch.timer != nil {
		ch.timer.Stop()
	}
	select {
	case ch.done <- err:
	default:
	}
	if ch.onHandshake != nil {
		ch.onHandshake()
		ch.onHandshake = nil
	}
}

// Shutdown tells an open channel's peer that it is closing and forgets the
// network access its wire address had.
func (ch *channel) Shutdown(c *node.Context) error {
	was := ch.state.Swap(stateClosed)
	if ch.timer != nil {
		ch.timer.Stop()
	}
	select {
	case ch.done <- ErrClosed:
	default:
	}
	if was == stateOpen {
		ctx, cancel := context.WithTimeout(ch.n.Context(), time.Second)
		ch.sndMu.Lock()
		frame, err := ch.snd.seal(nil, []byte{kindClose})
		ch.sndMu.Unlock()
		if err == nil {
			_ = ch.n.Deliver(ctx, &routing.Message{Onward: ch.peerRoute, Return: ch.self, Payload: frame})
		}
		cancel()
	}
	ch.n.ForgetConsumer(ch.wire.Value)
	if ch.onHandshake != nil {
		ch.onHandshake()
	}
	if ch.onClose != nil {
		ch.onClose(ch)
	}
	return nil
}

func (ch *channel) count(i int) { ch.add(i, 1) }

func (ch *channel) add(i int, d uint64) {
	ch.stats.c[i].Add(d)
	if ch.parent != nil {
		ch.parent.c[i].Add(d)
	}
}

// Info describes a channel for listings.
type Info struct {
	Address        string `json:"address"`
	Role           Role   `json:"role"`
	PeerIdentifier string `json:"peer_identifier"`
	Route          string `json:"route"`
	Open           bool   `json:"open"`
	Stats          Stats  `json:"stats"`
	// Kept: the channel re-opens itself under the same address when it
	// closes (Keep); Opens counts its handshakes and LastError says why
	// the last open failed.
	Kept      bool   `json:"kept,omitempty"`
	Opens     uint64 `json:"opens,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

func (ch *channel) info() Info {
	return Info{
		Address:        routing.Route{ch.local}.String(),
		Role:           ch.role,
		PeerIdentifier: ch.peer(),
		Route:          ch.routeText(),
		Open:           ch.state.Load() == stateOpen,
		Stats:          ch.stats.snapshot(),
	}
}

func (ch *channel) routeText() string { return ch.routeDesc }
