package securechannel

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/flynn/noise"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Channel is the initiator's handle on a secure channel.
type Channel struct {
	ch      *channel
	n       *node.Node
	stopped chan struct{} // closed once the channel's worker stopped
}

// Create starts an initiator channel worker on n and performs the handshake
// with the listener at the end of to (for example
// /worker/<connection>/service/api). It returns once both sides have
// authenticated each other, or with an error that says why not: the peer's
// identifier is not in cfg.Authorized (ErrNotAuthorized), the peer refused
// this side (ErrRefused), the handshake failed or timed out (ErrHandshake).
func Create(ctx context.Context, n *node.Node, to routing.Route, cfg Config) (*Channel, error) {
	if err := cfg.validate(n); err != nil {
		return nil, err
	}
	return create(ctx, n, to, cfg, "")
}

// create is Create with a validated cfg and the channel's local address
// (a new one when empty).
func create(ctx context.Context, n *node.Node, to routing.Route, cfg Config, local string) (*Channel, error) {
	if len(to) == 0 {
		return nil, errors.New("secure channel: empty route to the listener")
	}
	ch := newChannel(n, cfg, Initiator, local)
	stopped := make(chan struct{})
	ch.onClose = func(*channel) { close(stopped) }
	ch.flow = "secure-channel/" + ch.local.Value
	ch.routeDesc = to.String()
	kp, err := suite.GenerateKeypair(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("secure channel to %s: generate static key: %w", to, err)
	}
	ch.static = kp
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: suite, Pattern: noise.HandshakeXX, Initiator: true, Prologue: prologue, StaticKeypair: kp})
	if err != nil {
		return nil, fmt.Errorf("secure channel to %s: %w", to, err)
	}
	hello, _, _, err := hs.WriteMessage(appendFrameHeader(nil, typeHello), nil)
	if err != nil {
		return nil, fmt.Errorf("secure channel to %s: write message 1: %w", to, err)
	}
	ch.hs = hs
	ch.timer = time.AfterFunc(cfg.HandshakeTimeout, func() { ch.expire(n) })
	if _, err := n.StartWorker(ch.local.Value, ch, node.WithAddresses(ch.wire.Value), node.WithKind("secure-channel"), node.WithOutboundFlow(ch.flow)); err != nil {
		ch.timer.Stop()
		return nil, fmt.Errorf("secure channel to %s: start channel worker: %w", to, err)
	}
	c := &Channel{ch: ch, n: n, stopped: stopped}
	ch.count(cFramesSent)
	if err := ch.ctx.SendMessage(ctx, &routing.Message{Onward: to, Return: ch.self, Payload: hello}); err != nil {
		c.stop()
		return nil, fmt.Errorf("secure channel to %s: %w", to, err)
	}
	go ch.retransmit(hello, to)
	select {
	case err = <-ch.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("secure channel to %s: %w", to, err)
	}
	return c, nil
}

func (c *Channel) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.n.StopWorker(ctx, c.ch.local.Value)
}

// Address is the channel's address: send to Address/rest/of/route to have a
// message travel encrypted and continue along rest/of/route on the far node.
func (c *Channel) Address() routing.Address { return c.ch.local }

// PeerIdentifier is the identifier the far end proved.
func (c *Channel) PeerIdentifier() string { return c.ch.peer() }

// Flow is the flow messages decrypted by this channel carry. Local workers
// that sent through the channel receive replies; allow others with
// node.AllowConsumer(c.Flow(), addr) to let the peer reach them.
func (c *Channel) Flow() string { return c.ch.flow }

// Stats returns the channel's counters.
func (c *Channel) Stats() Stats { return c.ch.stats.snapshot() }

// Info describes the channel.
func (c *Channel) Info() Info { return c.ch.info() }

// Done is closed once the channel's worker stopped: closed here, by the
// peer, or because the peer stopped answering.
func (c *Channel) Done() <-chan struct{} { return c.stopped }

// Close stops the channel's worker; the peer is told, so its worker stops too.
func (c *Channel) Close(ctx context.Context) error {
	if err := c.n.StopWorker(ctx, c.ch.local.Value); err != nil && !errors.Is(err, node.ErrNoRoute) {
		return fmt.Errorf("close secure channel %s: %w", c.ch.local, err)
	}
	return nil
}
