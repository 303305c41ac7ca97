package relays

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Defaults for Options.
const (
	DefaultCheckInterval = 5 * time.Second
	DefaultTimeout       = 5 * time.Second
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 10 * time.Second
)

// Registration states reported by Registration.Info.
const (
	// StateConnecting: not registered yet; the first attempts are under way.
	StateConnecting = "connecting"
	// StateUp: the relay acknowledged the registration and the last check
	// succeeded.
	StateUp = "up"
	// StateDown: the last registration attempt or check failed; LastError
	// says why and the registrant is retrying with backoff.
	StateDown = "down"
	// StateClosed: Close was called or the node stopped.
	StateClosed = "closed"
)

// Options configures a registration. The zero value uses the defaults.
type Options struct {
	// CheckInterval is how often the registrant pings the relay service to
	// check the path and that the registration is still its own; default
	// DefaultCheckInterval.
	CheckInterval time.Duration
	// Timeout bounds each registration, ping or delete round trip; default
	// DefaultTimeout.
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the wait between failed registration
	// attempts; the wait doubles after each failure (with ±20% jitter) and
	// resets after a success. Defaults DefaultBackoffMin, DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Route, when set, is called before every registration attempt to get
	// the current route to the relay service (for example after dialling a
	// new connection, /worker/<conn>/service/relay). Without it the route
	// given to Register is used as it is; a route starting with a transport
	// address such as /tcp/127.0.0.1:7000/service/relay is re-resolved (and
	// re-dialled) by the node on every send.
	Route func(ctx context.Context) (routing.Route, error)
	// Allow, when not empty, lists the local addresses messages arriving
	// through the relay may be passed on to (the first hop after the
	// registrant), e.g. "echo" or "/service/echo". Empty allows every local
	// worker, which is what a relay is for in the common case. Messages from
	// the network are never passed on to a transport address (route them
	// through a hop for that); replies from local workers are always passed
	// on.
	Allow []string
	// NoWait makes Register return at once instead of waiting for the first
	// acknowledgement; the registrant keeps trying in the background.
	NoWait bool
	// Secret proves this registrant owns the name at the relay service (see
	// owner.go): a registration of the same name with another secret is
	// refused. Keep it across restarts (LoadOrCreateSecret) to keep the
	// name; at least 16 bytes. Default: a random secret for this
	// Registration (a Set supplies its own).
	Secret []byte
	// Logger; default the node's logger named "relay".
	Logger hclog.Logger

	sleep func(ctx context.Context, d time.Duration) error // tests: observe backoff
}

// errRefused marks an answer from the relay service that said no.
var errRefused = errors.New("refused the registration")

// RegistrationInfo describes a registration for `relay list` on the
// registering node.
type RegistrationInfo struct {
	Name       string `json:"name"`
	Relay      string `json:"relay"`               // route to the relay service, as last used
	Forwarder  string `json:"forwarder,omitempty"` // the forwarder's address on the relay node, as acknowledged
	Registrant string `json:"registrant"`          // this node's registrant worker
	State      string `json:"state"`
	LastError  string `json:"last_error,omitempty"`
	// LastSuccess is the last acknowledged registration or successful check.
	LastSuccess     time.Time `json:"last_success"`
	Registered      time.Time `json:"registered"` // last acknowledged registration
	Attempts        uint64    `json:"attempts"`   // registration attempts, successful or not
	Registrations   uint64    `json:"registrations"`
	Reregistrations uint64    `json:"reregistrations"` // registrations after the first
	Forwarded       uint64    `json:"forwarded"`       // messages passed on by the registrant
	Refused         uint64    `json:"refused"`         // messages not passed on (Allow, errors)
	LastRefusal     string    `json:"last_refusal,omitempty"`
	// SecureChannel is the address of the secure channel the registration
	// goes through and RelayIdentifier the identity the relay node proved
	// in it; both empty for a registration without one. The registering
	// node's daemon fills them in.
	SecureChannel   string `json:"secure_channel,omitempty"`
	RelayIdentifier string `json:"relay_identifier,omitempty"`
}

// Registration is the registering side of a relay: a registrant worker on
// this node plus the goroutine that keeps the registration alive.
type Registration struct {
	n    *node.Node
	name string
	opts Options
	log  hclog.Logger
	addr routing.Address
	wctx *node.Context
	stop context.CancelFunc
	done chan struct{}

	allow map[string]struct{}
	proof string // ownerProof(opts.Secret, name)

	closeOnce sync.Once
	closeErr  error

	reqMu   sync.Mutex
	pending map[uint64]chan control
	nonce   uint64

	mu   sync.Mutex
	info RegistrationInfo
	at   routing.Route
}

// Register starts a registrant on n and registers name at the relay service
// reached by at (e.g. /worker/<conn>/service/relay or
// /tcp/127.0.0.1:7000/service/relay). Unless opts.NoWait is set it waits,
// until ctx ends, for the first acknowledgement and fails (leaving nothing
// behind) if none came. The registration then lives until Close or until the
// node stops.
func Register(ctx context.Context, n *node.Node, at routing.Route, name string, opts Options) (*Registration, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if opts.Route == nil {
		if len(at) == 0 {
			return nil, fmt.Errorf("register relay %q: the route to the relay service is empty; give one like /tcp/HOST:PORT/service/relay", name)
		}
		if err := at.Validate(); err != nil {
			return nil, fmt.Errorf("register relay %q: route to the relay service: %w", name, err)
		}
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = DefaultBackoffMin
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = DefaultBackoffMax
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = opts.BackoffMin
	}
	if opts.CheckInterval > maxInterval {
		opts.CheckInterval = maxInterval
	}
	if opts.sleep == nil {
		opts.sleep = sleepCtx
	}
	if opts.Secret == nil {
		opts.Secret = NewSecret()
	}
	if len(opts.Secret) < minSecretLen {
		return nil, fmt.Errorf("register relay %q: the secret is %d bytes, want at least %d", name, len(opts.Secret), minSecretLen)
	}
	log := opts.Logger
	if log == nil {
		log = n.Logger().Named("relay")
	}
	r := &Registration{
		n: n, name: name, opts: opts, log: log.With("relay", name),
		at:      at.Clone(),
		proof:   string(ownerProof(opts.Secret, name)),
		pending: map[uint64]chan control{},
		done:    make(chan struct{}),
	}
	if len(opts.Allow) > 0 {
		r.allow = map[string]struct{}{}
		for _, a := range opts.Allow {
			v := a
			if strings.HasPrefix(a, "/") {
				addr, err := routing.ParseAddress(a)
				if err != nil || !addr.IsLocal() {
					return nil, fmt.Errorf("register relay %q: allowed destination %q: want a local address such as /service/echo", name, a)
				}
				v = addr.Value
			}
			if v == "" {
				return nil, fmt.Errorf("register relay %q: an allowed destination is empty", name)
			}
			r.allow[v] = struct{}{}
		}
	}
	addr, err := n.StartWorker("", (*registrant)(r), node.WithKind("relay-registrant"))
	if err != nil {
		return nil, fmt.Errorf("register relay %q: %w", name, err)
	}
	r.addr = addr
	r.info = RegistrationInfo{Name: name, Relay: at.String(), Registrant: addr.String(), State: StateConnecting}

	life, stop := context.WithCancel(n.Context())
	r.stop = stop
	first := make(chan error, 1)
	go r.run(life, first)
	if opts.NoWait {
		return r, nil
	}
	select {
	case err := <-first:
		if err == nil {
			return r, nil
		}
		_ = r.shutdown()
		return nil, fmt.Errorf("register relay %q: %w", name, err)
	case <-r.done: // the node stopped
	case <-ctx.Done():
	}
	info := r.Info()
	_ = r.shutdown()
	why := info.LastError
	switch {
	case why != "":
	case ctx.Err() != nil:
		why = ctx.Err().Error()
	default:
		why = node.ErrNodeStopped.Error()
	}
	return nil, fmt.Errorf("register relay %q at %s: no acknowledgement after %d attempts: %s", name, info.Relay, info.Attempts, why)
}

// Address returns the registrant worker's address on this node.
func (r *Registration) Address() routing.Address { return r.addr }

// Name returns the registered name.
func (r *Registration) Name() string { return r.name }

// Info returns the registration's current state.
func (r *Registration) Info() RegistrationInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

// Close stops keeping the registration alive, asks the relay service to
// delete it (best effort, until ctx ends or Options.Timeout) and stops the
// registrant. The returned error says when the relay could not be told; its
// forwarder then stays there (reported stale) until deleted on the relay node.
func (r *Registration) Close(ctx context.Context) error {
	r.closeOnce.Do(func() { r.closeErr = r.close(ctx) })
	return r.closeErr
}

func (r *Registration) close(ctx context.Context) error {
	r.stop()
	<-r.done
	r.mu.Lock()
	at := r.at
	already := r.info.State == StateClosed
	r.mu.Unlock()
	if already {
		return nil
	}
	var err error
	if len(at) > 0 && r.Info().Registrations > 0 && r.n.Context().Err() == nil {
		ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		var resp control
		resp, err = r.request(ctx, at, control{Kind: kindDelete, Name: r.name, Proof: r.proof})
		cancel()
		switch {
		case err != nil:
		case resp.Kind == kindError:
			err = errors.New(resp.Error)
		case resp.Status == statusMoved:
			r.log.Info("relay now belongs to another registration; left it in place")
		}
		if err != nil {
			err = fmt.Errorf("close relay %q: could not delete it at %s (it stays there until deleted on the relay node): %w", r.name, at, err)
		}
	}
	if serr := r.shutdown(); serr != nil && err == nil {
		err = serr
	}
	return err
}

// shutdown stops the loop and the worker without telling the relay.
func (r *Registration) shutdown() error {
	r.stop()
	<-r.done
	r.setState(func(i *RegistrationInfo) { i.State = StateClosed })
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	if err := r.n.StopWorker(ctx, r.addr.Value); err != nil && !errors.Is(err, node.ErrNoRoute) {
		return fmt.Errorf("close relay %q: %w", r.name, err)
	}
	return nil
}

func (r *Registration) setState(f func(*RegistrationInfo)) {
	r.mu.Lock()
	f(&r.info)
	r.mu.Unlock()
}

// run keeps the registration alive until life ends.
func (r *Registration) run(life context.Context, first chan<- error) {
	defer close(r.done)
	defer func() {
		if r.n.Context().Err() != nil {
			r.setState(func(i *RegistrationInfo) { i.State = StateClosed })
		}
	}()
	backoff := r.opts.BackoffMin
	registered := false
	for {
		if !registered {
			err := r.register(life)
			if life.Err() != nil {
				return
			}
			if err != nil {
				r.setState(func(i *RegistrationInfo) {
					i.State = StateDown
					if i.Registrations == 0 {
						i.State = StateConnecting
					}
					i.LastError = err.Error()
				})
				if errors.Is(err, errRefused) {
					// Waiting will not change the relay's mind; let
					// Register fail now. Later refusals are retried.
					select {
					case first <- err:
					default:
					}
				}
				r.log.Debug("relay registration failed; retrying", "error", err, "in", backoff)
				if r.opts.sleep(life, jitter(backoff)) != nil {
					return
				}
				backoff = min(2*backoff, r.opts.BackoffMax)
				continue
			}
			registered = true
			backoff = r.opts.BackoffMin
			select {
			case first <- nil:
			default:
			}
		}
		if r.opts.sleep(life, r.opts.CheckInterval) != nil {
			return
		}
		if err := r.ping(life); err != nil {
			if life.Err() != nil {
				return
			}
			registered = false
			r.setState(func(i *RegistrationInfo) { i.State = StateDown; i.LastError = err.Error() })
			r.log.Info("relay check failed; registering again", "error", err)
		}
	}
}

func (r *Registration) register(life context.Context) error {
	r.setState(func(i *RegistrationInfo) { i.Attempts++ })
	ctx, cancel := context.WithTimeout(life, r.opts.Timeout)
	defer cancel()
	at := r.currentRoute()
	if r.opts.Route != nil {
		var err error
		if at, err = r.opts.Route(ctx); err != nil {
			return fmt.Errorf("find the route to the relay service: %w", err)
		}
		if len(at) == 0 {
			return errors.New("find the route to the relay service: the route is empty")
		}
		if err := at.Validate(); err != nil {
			return fmt.Errorf("route to the relay service: %w", err)
		}
		r.mu.Lock()
		r.at = at.Clone()
		r.info.Relay = at.String()
		r.mu.Unlock()
	}
	resp, err := r.request(ctx, at, control{Kind: kindRegister, Name: r.name, Node: r.n.Name(), Interval: r.opts.CheckInterval, Proof: r.proof})
	if err != nil {
		return err
	}
	switch {
	case resp.Kind == kindError:
		return fmt.Errorf("relay service at %s %w: %s", at, errRefused, resp.Error)
	case resp.Kind != kindRegistered:
		return fmt.Errorf("relay service at %s answered %s to a registration", at, resp.Kind)
	}
	now := time.Now()
	r.setState(func(i *RegistrationInfo) {
		if i.Registrations > 0 {
			i.Reregistrations++
		}
		i.Registrations++
		i.State = StateUp
		i.LastError = ""
		i.Forwarder = resp.Forwarder
		i.Registered = now
		i.LastSuccess = now
	})
	if r.Info().Registrations == 1 {
		r.log.Debug("relay registered", "at", at.String(), "forwarder", resp.Forwarder)
	} else {
		r.log.Info("relay registered again", "at", at.String(), "forwarder", resp.Forwarder)
	}
	return nil
}

func (r *Registration) ping(life context.Context) error {
	ctx, cancel := context.WithTimeout(life, r.opts.Timeout)
	defer cancel()
	at := r.currentRoute()
	resp, err := r.request(ctx, at, control{Kind: kindPing, Name: r.name, Proof: r.proof})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	switch {
	case resp.Kind == kindError:
		return fmt.Errorf("check: relay service at %s: %s", at, resp.Error)
	case resp.Kind != kindPong:
		return fmt.Errorf("check: relay service at %s answered %s to a ping", at, resp.Kind)
	case resp.Status == statusUnknown:
		return fmt.Errorf("check: the relay service at %s no longer knows %q (did the relay node restart?)", at, r.name)
	case resp.Status == statusMoved:
		return fmt.Errorf("check: %q at %s now routes elsewhere (a reconnection or another registration replaced it)", r.name, at)
	case resp.Status != statusOK:
		return fmt.Errorf("check: relay service at %s answered status %q", at, resp.Status)
	}
	r.setState(func(i *RegistrationInfo) { i.State = StateUp; i.LastError = ""; i.LastSuccess = time.Now() })
	return nil
}

func (r *Registration) currentRoute() routing.Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at
}

// request sends req from the registrant worker (so the relay's reply and,
// for a registration, the route back lead to it) and waits for the answer
// with the same nonce.
func (r *Registration) request(ctx context.Context, at routing.Route, req control) (control, error) {
	r.reqMu.Lock()
	r.nonce++
	req.Nonce = r.nonce
	ch := make(chan control, 1)
	r.pending[req.Nonce] = ch
	r.reqMu.Unlock()
	defer func() {
		r.reqMu.Lock()
		delete(r.pending, req.Nonce)
		r.reqMu.Unlock()
	}()
	b, err := req.encode()
	if err != nil {
		return control{}, err
	}
	if r.wctx == nil {
		return control{}, errors.New("the registrant worker is not running")
	}
	if err := r.wctx.Send(ctx, at, b); err != nil {
		return control{}, fmt.Errorf("send %s to %s: %w", req.Kind, at, err)
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
		return control{}, fmt.Errorf("no answer to %s from %s within %s: %w", req.Kind, at, r.opts.Timeout, ctx.Err())
	}
}

// deliver hands a response to the request waiting for it.
func (r *Registration) deliver(resp control) bool {
	r.reqMu.Lock()
	ch := r.pending[resp.Nonce]
	delete(r.pending, resp.Nonce)
	r.reqMu.Unlock()
	if ch == nil {
		return false
	}
	ch <- resp
	return true
}

// registrant is the Registration seen as its node.Worker.
type registrant Registration

func (w *registrant) Initialize(c *node.Context) error {
	w.wctx = c
	return nil
}

func (w *registrant) HandleMessage(c *node.Context, m *routing.Message) error {
	r := (*Registration)(w)
	if len(m.Onward) == 1 {
		// Addressed to the registrant itself: an answer from the relay service.
		if resp, err := decodeControl(m.Payload); err == nil && resp.Kind.isResponse() && r.deliver(resp) {
			return nil
		}
		r.log.Debug("dropped a message addressed to the registrant that answers no request", "return", m.Return.String())
		return nil
	}
	if m.Local.Flow != "" {
		// From the network: pass on to local workers only (a transport
		// address would make this node dial out for a remote sender), and
		// only to allowed ones when Allow is set.
		next := m.Onward[1]
		if !next.IsLocal() {
			err := fmt.Errorf("relay %q: %s is not a local address; messages through a relay go to local workers (route through a hop to go further): %w", r.name, next, node.ErrDialRefused)
			_ = r.refuse(err) // counted before the sender can hear of it
			c.ReportUndeliverable(m, err)
			return err
		}
		if _, ok := r.allow[next.Value]; r.allow != nil && !ok {
			err := fmt.Errorf("relay %q: %s is not in the allowed destinations; message dropped: %w", r.name, next, node.ErrAccessDenied)
			_ = r.refuse(err) // counted before the sender can hear of it
			c.ReportUndeliverable(m, err)
			return err
		}
	}
	if err := c.Forward(c, m); err != nil {
		return r.refuse(fmt.Errorf("relay %q: pass on to %s: %w", r.name, m.Onward[1:], err))
	}
	r.setState(func(i *RegistrationInfo) { i.Forwarded++ })
	return nil
}

// refuse counts a message not passed on and returns why (the node logs it at
// debug level).
func (r *Registration) refuse(err error) error {
	r.setState(func(i *RegistrationInfo) { i.Refused++; i.LastRefusal = err.Error() })
	return err
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
