package kafkatransport

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitTimeout bounds one offset commit.
const commitTimeout = 10 * time.Second

// pending is one consumed record of a group consumer, committed once done.
type pending struct {
	offset int64
	epoch  int32
	done   bool
}

// partTrack orders the records of one partition that were dispatched but
// not yet handed over: the commit point only moves past a record when it
// and everything before it in the partition are done, whichever links
// they went to.
type partTrack struct {
	queue     []*pending
	next      kgo.EpochOffset // the offset to commit: the first not done
	committed int64
}

// consumer reads one topic for a transport and dispatches its records to
// the listener (records from dialers) and to dialled links (replies).
type consumer struct {
	t     *Transport
	topic string
	group string // "" for the private inbox: no commits
	cfg   config
	cl    *kgo.Client

	mu       sync.Mutex
	refs     int
	listener *listener
	parts    map[int32]*partTrack

	ctx       context.Context
	cancel    context.CancelFunc
	pollDone  chan struct{}
	commitSig chan struct{}
	stopOnce  sync.Once

	recordsIn, bytesIn                              atomic.Uint64
	droppedNoHeader, droppedBad, droppedOversize    atomic.Uint64
	droppedUnknownLink, droppedNoListener, fetchErr atomic.Uint64
	commits, commitErrors                           atomic.Uint64
}

// startConsumer starts consuming topic. With l, the listener is attached
// before polling starts: a record from a dialer that finds no listener is
// dropped and committed, so attaching it afterwards lost, when the machine
// was loaded, the records a restarted node had waiting for it.
func startConsumer(t *Transport, topic string, group bool, cfg config, l *listener) (*consumer, error) {
	c := &consumer{t: t, topic: topic, cfg: cfg, parts: map[int32]*partTrack{},
		pollDone: make(chan struct{}), commitSig: make(chan struct{}, 1), listener: l}
	if l != nil {
		l.c = c
	}
	opts := append(cfg.clientOpts(),
		kgo.ConsumeTopics(topic),
		// A node's first start reads what was sent before it ever ran;
		// later starts resume at the group's committed offsets.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(int32(cfg.fetchMaxBytes)),
		kgo.FetchMaxPartitionBytes(int32(cfg.fetchMaxBytes)),
		kgo.FetchMaxWait(time.Second),
	)
	if group {
		c.group = cfg.groupFor(topic)
		opts = append(opts,
			kgo.ConsumerGroup(c.group),
			kgo.DisableAutoCommit(),
			// Static membership: a node restarted after a crash takes
			// its old place at once instead of waiting for the dead
			// member's session to time out.
			kgo.InstanceID(c.group+"."+topic),
			kgo.SessionTimeout(cfg.sessionTimeout),
			kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, _ map[string][]int32) {
				c.commit(ctx)
			}),
			kgo.OnPartitionsLost(func(context.Context, *kgo.Client, map[string][]int32) {
				c.mu.Lock()
				c.parts = map[int32]*partTrack{}
				c.mu.Unlock()
			}),
		)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.poll()
	if group {
		go c.committer()
	}
	return c, nil
}

func (c *consumer) addRef() {
	c.mu.Lock()
	c.refs++
	c.mu.Unlock()
}

func (c *consumer) release() { c.t.releaseConsumer(c) }

// stop ends consumption and commits what was handed over.
func (c *consumer) stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		<-c.pollDone
		if c.group != "" {
			ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
			c.commit(ctx)
			cancel()
		}
		c.cl.Close()
	})
}

func (c *consumer) poll() {
	defer close(c.pollDone)
	for {
		fetches := c.cl.PollRecords(c.ctx, 1024)
		if c.ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			c.fetchErr.Add(1)
			c.t.log.Debug("fetch error", "topic", topic, "partition", p, "error", err)
		})
		stopped := false
		fetches.EachRecord(func(r *kgo.Record) {
			if !stopped && !c.dispatch(r) {
				stopped = true
			}
		})
		if stopped {
			return
		}
	}
}

// dispatch routes one record; false when the consumer is stopping.
func (c *consumer) dispatch(r *kgo.Record) bool {
	p := c.track(r)
	c.recordsIn.Add(1)
	c.bytesIn.Add(uint64(len(r.Value)))
	m, err := parseRecord(r.Headers)
	if err != nil {
		if errors.Is(err, errNoHeader) {
			c.droppedNoHeader.Add(1)
		} else {
			c.droppedBad.Add(1)
		}
		c.t.log.Debug("dropped record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "error", err)
		c.finish(p)
		return true
	}
	if len(r.Value) > c.cfg.maxMessageSize {
		c.droppedOversize.Add(1)
		c.finish(p)
		return true
	}
	var lk *link
	switch m.dir {
	case fromAcceptor:
		lk = c.t.dialledLink(m.link)
		if lk != nil && (lk.local != c.topic || lk.remote != m.replyTo) {
			lk = nil
		}
		if lk == nil {
			c.droppedUnknownLink.Add(1)
		}
	case fromDialer:
		c.mu.Lock()
		l := c.listener
		c.mu.Unlock()
		if l == nil {
			c.droppedNoListener.Add(1)
		} else if lk = l.route(m); lk == nil {
			c.droppedUnknownLink.Add(1)
		}
	}
	if lk == nil {
		c.finish(p)
		return true
	}
	return lk.deliver(c.ctx, m.kind, r.Value, p)
}

// track registers a record of a group consumer as dispatched, not done.
func (c *consumer) track(r *kgo.Record) *pending {
	if c.group == "" {
		return nil
	}
	p := &pending{offset: r.Offset, epoch: r.LeaderEpoch}
	c.mu.Lock()
	pt := c.parts[r.Partition]
	if pt == nil || (len(pt.queue) > 0 && pt.queue[len(pt.queue)-1].offset >= r.Offset) {
		// New, or consumption restarted earlier (a rebalance): what was
		// tracked no longer says anything about the commit point.
		committed := int64(-1)
		if pt != nil {
			committed = pt.committed
		}
		pt = &partTrack{committed: committed}
		c.parts[r.Partition] = pt
	}
	if len(pt.queue) == 0 {
		pt.next = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
	}
	pt.queue = append(pt.queue, p)
	c.mu.Unlock()
	return p
}

// finish marks records as handed over (or dropped) and moves commit points.
func (c *consumer) finish(ps ...*pending) {
	if c.group == "" || len(ps) == 0 {
		return
	}
	moved := false
	c.mu.Lock()
	for _, p := range ps {
		if p != nil {
			p.done = true
		}
	}
	for _, pt := range c.parts {
		n := 0
		for n < len(pt.queue) && pt.queue[n].done {
			n++
		}
		if n == 0 {
			continue
		}
		last := pt.queue[n-1]
		pt.next = kgo.EpochOffset{Epoch: last.epoch, Offset: last.offset + 1}
		clear(pt.queue[:n])
		pt.queue = pt.queue[n:]
		moved = true
	}
	c.mu.Unlock()
	if moved {
		select {
		case c.commitSig <- struct{}{}:
		default:
		}
	}
}

// committer commits as soon as commit points move, one commit at a time
// (several moves while a commit is in flight become one commit).
func (c *consumer) committer() {
	for {
		select {
		case <-c.commitSig:
		case <-c.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, commitTimeout)
		c.commit(ctx)
		cancel()
	}
}

func (c *consumer) commit(ctx context.Context) {
	c.mu.Lock()
	offsets := map[int32]kgo.EpochOffset{}
	for p, pt := range c.parts {
		if pt.next.Offset > pt.committed {
			offsets[p] = pt.next
		}
	}
	c.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	var cerr error
	c.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{c.topic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				cerr = err
				clear(offsets)
				return
			}
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					if e := kerr.ErrorForCode(rp.ErrorCode); e != nil {
						cerr = e
						delete(offsets, rp.Partition)
					}
				}
			}
		})
	if cerr != nil {
		c.commitErrors.Add(1)
		c.t.log.Debug("commit failed", "topic", c.topic, "error", cerr)
		if len(offsets) == 0 || errors.Is(cerr, context.Canceled) {
			return
		}
	}
	c.commits.Add(1)
	c.mu.Lock()
	for p, eo := range offsets {
		if pt := c.parts[p]; pt != nil && eo.Offset > pt.committed {
			pt.committed = eo.Offset
		}
	}
	c.mu.Unlock()
}

func (c *consumer) counters() map[string]uint64 {
	return map[string]uint64{
		"records_in":           c.recordsIn.Load(),
		"bytes_in":             c.bytesIn.Load(),
		"dropped_no_header":    c.droppedNoHeader.Load(),
		"dropped_bad_header":   c.droppedBad.Load(),
		"dropped_oversize":     c.droppedOversize.Load(),
		"dropped_unknown_link": c.droppedUnknownLink.Load(),
		"dropped_no_listener":  c.droppedNoListener.Load(),
		"fetch_errors":         c.fetchErr.Load(),
		"offset_commits":       c.commits.Load(),
		"offset_commit_errors": c.commitErrors.Load(),
	}
}
