package relays

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/sdk/routing"
)

// Set holds the registrations one node made, by name, so the node's control
// API can serve `relay list` and `relay delete` on the registering side. The
// zero value is ready to use.
type Set struct {
	// SecretFile, when set, is where the registrant secret is kept (see
	// LoadOrCreateSecret), so this node keeps its relay names across
	// restarts. Without it the secret lives as long as the Set.
	SecretFile string

	mu     sync.Mutex
	regs   map[string]*Registration
	secret []byte
}

// Secret returns the secret registrations through s use when their Options
// carry none, loading or creating SecretFile on first use.
func (s *Set) Secret() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secret != nil {
		return s.secret, nil
	}
	if s.SecretFile == "" {
		s.secret = NewSecret()
		return s.secret, nil
	}
	sec, err := LoadOrCreateSecret(s.SecretFile)
	if err != nil {
		return nil, err
	}
	s.secret = sec
	return sec, nil
}

// ErrExists is returned when registering a name the set already holds.
var ErrExists = errors.New("a relay by that name is already registered from this node")

// Register registers name (see Register) and keeps the registration.
func (s *Set) Register(ctx context.Context, n *node.Node, at routing.Route, name string, opts Options) (*Registration, error) {
	if opts.Secret == nil {
		sec, err := s.Secret()
		if err != nil {
			return nil, fmt.Errorf("register relay %q: %w", name, err)
		}
		opts.Secret = sec
	}
	s.mu.Lock()
	if _, ok := s.regs[name]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("register relay %q: %w; delete it first", name, ErrExists)
	}
	if s.regs == nil {
		s.regs = map[string]*Registration{}
	}
	s.regs[name] = nil // reserved while registering
	s.mu.Unlock()
	r, err := Register(ctx, n, at, name, opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.regs, name)
		return nil, err
	}
	s.regs[name] = r
	return r, nil
}

// Get returns the registration for name.
func (s *Set) Get(name string) (*Registration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.regs[name]
	return r, r != nil
}

// List describes every registration, sorted by name.
func (s *Set) List() []RegistrationInfo {
	s.mu.Lock()
	regs := make([]*Registration, 0, len(s.regs))
	for _, r := range s.regs {
		if r != nil {
			regs = append(regs, r)
		}
	}
	s.mu.Unlock()
	out := make([]RegistrationInfo, 0, len(regs))
	for _, r := range regs {
		out = append(out, r.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Delete closes the registration for name (which deletes it at the relay,
// see Registration.Close) and forgets it, even when the relay could not be
// told; the returned error then says so.
func (s *Set) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	r := s.regs[name]
	if r != nil {
		delete(s.regs, name)
	}
	s.mu.Unlock()
	if r == nil {
		return fmt.Errorf("delete relay %q: %w", name, ErrUnknownRelay)
	}
	return r.Close(ctx)
}

// Close closes every registration.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	regs := s.regs
	s.regs = nil
	s.mu.Unlock()
	var errs []error
	for _, r := range regs {
		if r != nil {
			errs = append(errs, r.Close(ctx))
		}
	}
	return errors.Join(errs...)
}
