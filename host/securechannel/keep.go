package securechannel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Defaults of KeepConfig.
const (
	DefaultReopenMin = 100 * time.Millisecond
	DefaultReopenMax = 5 * time.Second
)

// KeepConfig configures a kept channel (Keep).
type KeepConfig struct {
	Config
	// Address is the channel's local address (a worker address value such
	// as "0123abcd..."); routes through the channel name it, so it stays
	// the same across re-opens. Default: a new worker address. Give the one
	// a previous Kept had to restore a channel under its old address.
	Address string
	// Route returns the route to the listener. It is called before every
	// open, so a peer that comes back somewhere else (another port) is
	// found again. Required.
	Route func(ctx context.Context) (routing.Route, error)
	// ReopenMin and ReopenMax bound the wait between failed opens; it
	// doubles after each failure (±20% jitter) and resets after a
	// success. Defaults DefaultReopenMin, DefaultReopenMax.
	ReopenMin, ReopenMax time.Duration
	// NoWait makes Keep return at once instead of waiting for the first
	// handshake; the channel opens in the background (a peer that is not
	// up yet, a node restoring its channels at start).
	NoWait bool
}

// Kept is a secure channel that re-opens itself: when its channel closes
// (the peer's node restarted and a probe went unanswered, the peer closed
// it, it went idle) a new handshake is made, with backoff, under the same
// local address, so routes through Address keep working for new messages.
// Messages sent while no channel is open fail at the sender (no worker at
// Address); what was in flight in the old channel is lost, as on any
// route that breaks.
type Kept struct {
	n    *node.Node
	cfg  KeepConfig
	addr routing.Address
	stop context.CancelFunc
	done chan struct{}

	mu      sync.Mutex
	cur     *Channel
	route   string
	lastErr string
	opens   uint64
}

// Keep starts a kept channel on n toward the listener cfg.Route leads to.
// Unless cfg.NoWait is set it waits, until ctx ends, for the first
// handshake, and fails (leaving nothing behind) with Create's errors if it
// does not succeed; later failures are retried until Close.
func Keep(ctx context.Context, n *node.Node, cfg KeepConfig) (*Kept, error) {
	if cfg.Route == nil {
		return nil, errors.New("secure channel: KeepConfig.Route is required")
	}
	if err := cfg.Config.validate(n); err != nil {
		return nil, err
	}
	if cfg.ReopenMin <= 0 {
		cfg.ReopenMin = DefaultReopenMin
	}
	if cfg.ReopenMax <= 0 {
		cfg.ReopenMax = DefaultReopenMax
	}
	cfg.ReopenMax = max(cfg.ReopenMax, cfg.ReopenMin)
	if cfg.Address == "" {
		cfg.Address = node.NewWorkerID()
	}
	life, stop := context.WithCancel(n.Context())
	k := &Kept{n: n, cfg: cfg, addr: routing.Local(cfg.Address), stop: stop, done: make(chan struct{})}
	if !cfg.NoWait {
		ch, err := k.open(ctx)
		if err != nil {
			stop()
			close(k.done)
			return nil, err
		}
		k.set(ch)
	}
	go k.run(life)
	return k, nil
}

// Address is the channel's local address, the same across re-opens: send
// to Address/rest/of/route as with Channel.Address.
func (k *Kept) Address() routing.Address { return k.addr }

// Flow is the flow messages decrypted by the channel carry (the same
// across re-opens); see Channel.Flow.
func (k *Kept) Flow() string { return "secure-channel/" + k.addr.Value }

// Current returns the open channel, if there is one.
func (k *Kept) Current() (*Channel, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur == nil || k.cur.ch.state.Load() != stateOpen {
		return nil, false
	}
	return k.cur, true
}

// Info describes the channel: the current one's state and counters, how
// many times it was opened and why the last open failed.
func (k *Kept) Info() Info {
	k.mu.Lock()
	defer k.mu.Unlock()
	inf := Info{Address: routing.Route{k.addr}.String(), Role: Initiator, Route: k.route}
	if k.cur != nil {
		inf = k.cur.Info()
	}
	inf.Kept = true
	inf.Opens = k.opens
	inf.LastError = k.lastErr
	return inf
}

// Close stops re-opening and closes the channel; the peer is told.
func (k *Kept) Close(ctx context.Context) error {
	k.stop()
	select {
	case <-k.done:
	case <-ctx.Done():
		return fmt.Errorf("close secure channel %s: %w", k.addr, ctx.Err())
	}
	k.mu.Lock()
	ch := k.cur
	k.mu.Unlock()
	if ch != nil {
		return ch.Close(ctx)
	}
	return nil
}

func (k *Kept) open(ctx context.Context) (*Channel, error) {
	to, err := k.cfg.Route(ctx)
	if err == nil && len(to) == 0 {
		err = errors.New("the route to the listener is empty")
	}
	if err != nil {
		err = fmt.Errorf("secure channel %s: find the route to the listener: %w", k.addr, err)
		k.mu.Lock()
		k.lastErr = err.Error()
		k.mu.Unlock()
		return nil, err
	}
	k.mu.Lock()
	k.route = to.String()
	k.mu.Unlock()
	ch, err := create(ctx, k.n, to, k.cfg.Config, k.addr.Value)
	if err != nil {
		k.mu.Lock()
		k.lastErr = err.Error()
		k.mu.Unlock()
	}
	return ch, err
}

func (k *Kept) set(ch *Channel) {
	k.mu.Lock()
	k.cur = ch
	k.opens++
	k.lastErr = ""
	k.mu.Unlock()
}

// run waits for the current channel to stop and opens the next one, until
// life ends.
func (k *Kept) run(life context.Context) {
	defer close(k.done)
	backoff := k.cfg.ReopenMin
	for {
		k.mu.Lock()
		cur := k.cur
		k.mu.Unlock()
		if cur != nil {
			select {
			case <-cur.Done():
				k.cfg.Logger.Info("secure channel closed; opening it again", "channel", k.addr.String(), "peer", cur.PeerIdentifier())
			case <-life.Done():
				return
			}
		}
		ctx, cancel := context.WithTimeout(life, k.cfg.HandshakeTimeout)
		ch, err := k.open(ctx)
		cancel()
		if life.Err() != nil {
			if ch != nil {
				_ = ch.Close(context.Background())
			}
			return
		}
		if err != nil {
			k.cfg.Logger.Debug("secure channel did not open; trying again", "channel", k.addr.String(), "error", err, "in", backoff)
			t := time.NewTimer(jitter(backoff))
			select {
			case <-t.C:
			case <-life.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, k.cfg.ReopenMax)
			continue
		}
		backoff = k.cfg.ReopenMin
		k.set(ch)
		k.cfg.Logger.Debug("secure channel open", "channel", k.addr.String(), "peer", ch.PeerIdentifier())
	}
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}
