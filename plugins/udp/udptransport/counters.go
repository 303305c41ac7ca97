package udptransport

import "sync/atomic"

// Counter indexes. Names are what Counters reports.
const (
	cDatagramsIn = iota
	cDatagramsOut
	cBytesIn
	cBytesOut
	cMessagesIn
	cMessagesOut
	cDroppedFragments
	cReassemblyTimeouts
	cBadDatagrams
	cDuplicates
	cDroppedQueueFull
	cCookieChallenges
	cPeersAccepted
	cPeersRefused
	cPeersExpired
	cUnknownPeer
	numCounters
)

var counterNames = [numCounters]string{
	cDatagramsIn:        "datagrams_in",
	cDatagramsOut:       "datagrams_out",
	cBytesIn:            "bytes_in",
	cBytesOut:           "bytes_out",
	cMessagesIn:         "messages_in",
	cMessagesOut:        "messages_out",
	cDroppedFragments:   "dropped_fragments",
	cReassemblyTimeouts: "reassembly_timeouts",
	cBadDatagrams:       "bad_datagrams",
	cDuplicates:         "duplicates",
	cDroppedQueueFull:   "dropped_queue_full",
	cCookieChallenges:   "cookie_challenges",
	cPeersAccepted:      "peers_accepted",
	cPeersRefused:       "peers_refused",
	cPeersExpired:       "peers_expired",
	cUnknownPeer:        "unknown_peer_datagrams",
}

// counters of one link or listener. A link's counters also add to its
// listener's, so a listener reports everything on its socket.
type counters struct {
	v      [numCounters]atomic.Uint64
	parent *counters
}

func (c *counters) add(i int, n uint64) {
	for ; c != nil; c = c.parent {
		c.v[i].Add(n)
	}
}

func (c *counters) snapshot(names ...int) map[string]uint64 {
	m := make(map[string]uint64, len(names))
	for _, i := range names {
		m[counterNames[i]] = c.v[i].Load()
	}
	return m
}

var linkCounters = []int{cDatagramsIn, cDatagramsOut, cBytesIn, cBytesOut, cMessagesIn, cMessagesOut,
	cDroppedFragments, cReassemblyTimeouts, cBadDatagrams, cDuplicates, cDroppedQueueFull}

var listenerCounters = append(append([]int(nil), linkCounters...),
	cCookieChallenges, cPeersAccepted, cPeersRefused, cPeersExpired, cUnknownPeer)
