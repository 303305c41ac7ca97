package transports

import "github.com/ferryhq/ferry/sdk/transport"

// ListenerDetails returns what the transport listener behind listener id
// says about itself: its properties (a transport Listener may implement
// Properties() map[string]string, e.g. QUIC's certificate fingerprint) and
// counters (transport.Counters). ok is false for an unknown id. It calls the
// transport without holding a lock.
func (b *Binding) ListenerDetails(id string) (props map[string]string, counters map[string]uint64, ok bool) {
	b.mu.Lock()
	l := b.listeners[id]
	b.mu.Unlock()
	if l == nil {
		return nil, nil, false
	}
	l.mu.Lock()
	tl := l.tl
	l.mu.Unlock()
	if p, is := tl.(interface{ Properties() map[string]string }); is {
		props = p.Properties()
	}
	if c, is := tl.(transport.Counters); is {
		counters = c.Counters()
	}
	return props, counters, true
}
