package kafkatransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryhq/ferry/sdk/transport"
)

// ErrIdle is wrapped by the error Recv returns when no record (not even a
// heartbeat) came from the peer within idle_timeout: the peer is gone, or
// the brokers are unreachable.
var ErrIdle = errors.New("kafka transport: nothing from the peer within the idle timeout")

// ErrRefused is wrapped by the error Recv returns when the listener did not
// take the link (it has max_links links already).
var ErrRefused = errors.New("kafka transport: the listener refused the link")

// closeGrace bounds how long Close waits for a Send in progress and for
// the closing record.
const closeGrace = 5 * time.Second

// Most packets and bytes one Recv returns.
const (
	maxRecvBatch      = 1024
	maxRecvBatchBytes = 4 << 20
)

type item struct {
	kind  byte
	value []byte
	p     *pending
}

type link struct {
	t      *Transport
	c      *consumer
	cfg    config
	id     uint64
	dir    byte   // direction stamped on the records this link produces
	local  string // the topic this link's records arrive on
	remote string // the topic this link produces to
	max    int
	owner  *listener // for accepted links

	key     []byte
	headers map[byte][]kgo.RecordHeader // per kind, shared by every record

	// Receiving: the consumer appends, Recv takes.
	qmu      sync.Mutex
	items    []item
	qbytes   int
	handed   []*pending // returned by the last Recv; done at the next
	notify   chan struct{}
	space    chan struct{}
	lastSeen atomic.Int64
	rmu      sync.Mutex // one Recv at a time
	out      [][]byte
	eof      bool

	// Sending: one Send at a time so batches keep their order.
	wsem       chan struct{}
	lastSent   atomic.Int64
	hbInFlight atomic.Bool
	ctx        context.Context // ends when the link ends: aborts buffered records
	cancel     context.CancelFunc

	errMu      sync.Mutex
	err        error // sticky failure
	broken     chan struct{}
	peerClosed atomic.Bool
	closed     atomic.Bool
	closeOnce  sync.Once
	endOnce    sync.Once
	done       chan struct{}

	recordsIn, bytesIn, recordsOut, bytesOut atomic.Uint64
	produceErrors, heartbeatsOut             atomic.Uint64
}

func newLink(t *Transport, c *consumer, cfg config, id uint64, dir byte, local, remote string, max int) *link {
	l := &link{t: t, c: c, cfg: cfg, id: id, dir: dir, local: local, remote: remote, max: max,
		key: linkKey(id), headers: map[byte][]kgo.RecordHeader{},
		notify: make(chan struct{}, 1), space: make(chan struct{}, 1), wsem: make(chan struct{}, 1),
		broken: make(chan struct{}), done: make(chan struct{})}
	for _, k := range []byte{kindOpen, kindData, kindDataEnd, kindHeartbeat, kindClose} {
		l.headers[k] = []kgo.RecordHeader{
			{Key: HeaderReplyTo, Value: []byte(local)},
			{Key: HeaderLink, Value: linkHeader(k, dir, id)},
		}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	l.lastSeen.Store(now)
	l.lastSent.Store(now)
	return l
}

func (l *link) LocalAddr() string  { return l.local }
func (l *link) RemoteAddr() string { return l.remote }

// deliver queues a record for Recv; it waits while the link's buffer is
// full (consumption of the topic waits with it: the records stay in
// Kafka). It returns false only when ctx (the consumer's) ended.
func (l *link) deliver(ctx context.Context, kind byte, value []byte, p *pending) bool {
	l.lastSeen.Store(time.Now().UnixNano())
	if kind == kindOpen || kind == kindHeartbeat {
		l.c.finish(p)
		return true
	}
	if kind == kindClose {
		l.peerClosed.Store(true)
	}
	l.qmu.Lock()
	for (kind == kindData || kind == kindDataEnd) && len(l.items) > 0 && l.qbytes+len(value) > l.cfg.linkBufferBytes {
		l.qmu.Unlock()
		select {
		case <-l.space:
		case <-l.done:
			l.c.finish(p)
			return true
		case <-ctx.Done():
			return false
		}
		l.qmu.Lock()
	}
	select {
	case <-l.done:
		l.qmu.Unlock()
		l.c.finish(p)
		return true
	default:
	}
	l.items = append(l.items, item{kind: kind, value: value, p: p})
	l.qbytes += len(value)
	l.qmu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return true
}

// Recv returns the next packets. Calling it again tells the consumer the
// previous batch was handed over, so its offsets may be committed.
func (l *link) Recv(ctx context.Context) ([][]byte, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	l.qmu.Lock()
	handed := l.handed
	l.handed = nil
	l.qmu.Unlock()
	l.c.finish(handed...)
	if l.closed.Load() {
		return nil, transport.ErrClosed
	}
	if l.eof {
		return nil, io.EOF
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.qmu.Lock()
		if len(l.items) > 0 {
			first := l.items[0]
			switch first.kind {
			case kindClose, kindRefuse:
				l.items[0] = item{}
				l.items = l.items[1:]
				l.qmu.Unlock()
				l.c.finish(first.p)
				if first.kind == kindClose {
					l.eof = true
					return nil, io.EOF
				}
				err := fmt.Errorf("%w: %s has %d links (max_links)", ErrRefused, l.remote, l.cfg.maxLinks)
				l.fail(err)
				return nil, err
			}
			out := l.out[:0]
			n, size := 0, 0
			// A batch never spans two Sends: a receiver sees the
			// sender's batches (or parts of them), as over a stream.
			for n < len(l.items) && n < maxRecvBatch && (n == 0 || size+len(l.items[n].value) <= maxRecvBatchBytes) {
				it := l.items[n]
				if it.kind != kindData && it.kind != kindDataEnd {
					break
				}
				out = append(out, it.value)
				if it.p != nil {
					l.handed = append(l.handed, it.p)
				}
				size += len(it.value)
				l.items[n] = item{}
				n++
				if it.kind == kindDataEnd {
					break
				}
			}
			l.items = l.items[n:]
			if len(l.items) == 0 {
				l.items = nil // let the backing array go
			}
			l.qbytes -= size
			l.qmu.Unlock()
			select {
			case l.space <- struct{}{}:
			default:
			}
			l.out = out
			l.recordsIn.Add(uint64(n))
			l.bytesIn.Add(uint64(size))
			return out, nil
		}
		l.qmu.Unlock()
		if err := l.failure(); err != nil {
			return nil, err
		}
		idle := l.cfg.idleTimeout - time.Duration(time.Now().UnixNano()-l.lastSeen.Load())
		if idle <= 0 {
			err := fmt.Errorf("%w (%s): topic %s", ErrIdle, l.cfg.idleTimeout, l.remote)
			l.fail(err)
			return nil, err
		}
		if timer == nil {
			timer = time.NewTimer(idle)
		} else {
			timer.Reset(idle)
		}
		select {
		case <-l.notify:
		case <-timer.C:
		case <-l.broken:
		case <-l.done:
			return nil, transport.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Send produces one record per packet, in order, and returns once the
// brokers acknowledged all of them.
func (l *link) Send(ctx context.Context, packets [][]byte) error {
	if l.closed.Load() {
		return transport.ErrClosed
	}
	if err := l.failure(); err != nil {
		return err
	}
	total := 0
	for _, p := range packets {
		if len(p) > l.max {
			return fmt.Errorf("kafka transport: packet of %d bytes to topic %s (max %d): %w", len(p), l.remote, l.max, transport.ErrTooLarge)
		}
		total += len(p)
	}
	if len(packets) == 0 {
		return nil
	}
	if l.peerClosed.Load() {
		return fmt.Errorf("kafka transport: the peer closed the link to topic %s", l.remote)
	}
	select {
	case l.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return transport.ErrClosed
	}
	defer func() { <-l.wsem }()
	cl, _, err := l.t.producer()
	if err != nil {
		return err
	}
	// The records outlive this call if ctx ends first: they get a copy.
	arena := make([]byte, 0, total)
	recs := make([]kgo.Record, len(packets))
	var (
		remaining = int32(len(packets))
		allDone   = make(chan struct{})
		errOnce   sync.Once
		firstErr  error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			l.produceErrors.Add(1)
			errOnce.Do(func() { firstErr = err })
		}
		if atomic.AddInt32(&remaining, -1) == 0 {
			close(allDone)
		}
	}
	for i, p := range packets {
		start := len(arena)
		arena = append(arena, p...)
		hdr := l.headers[kindData]
		if i == len(packets)-1 {
			hdr = l.headers[kindDataEnd]
		}
		recs[i] = kgo.Record{Topic: l.remote, Key: l.key, Value: arena[start:len(arena):len(arena)], Headers: hdr}
		cl.Produce(l.ctx, &recs[i], promise)
	}
	// franz-go evaluates its delivery timeout only around requests; while
	// no broker can be reached at all, this timer is what bounds Send.
	timer := time.NewTimer(l.cfg.produceTimeout)
	defer timer.Stop()
	select {
	case <-allDone:
	case <-timer.C:
		l.produceErrors.Add(1)
		err := fmt.Errorf("kafka transport: no acknowledgement from the brokers for records to topic %s within produce_timeout %s (brokers down or unreachable?)", l.remote, l.cfg.produceTimeout)
		l.fail(err)
		return err
	case <-ctx.Done():
		return fmt.Errorf("kafka transport: waiting for the brokers to acknowledge records to topic %s: %w", l.remote, ctx.Err())
	}
	l.lastSent.Store(time.Now().UnixNano())
	if firstErr != nil {
		err := fmt.Errorf("kafka transport: producing to topic %s: %w", l.remote, firstErr)
		l.fail(err)
		return err
	}
	l.recordsOut.Add(uint64(len(packets)))
	l.bytesOut.Add(uint64(total))
	return nil
}

// produceControl produces a record without a packet and waits for it.
func (l *link) produceControl(ctx context.Context, kind byte) error {
	cl, _, err := l.t.producer()
	if err != nil {
		return err
	}
	r := &kgo.Record{Topic: l.remote, Key: l.key, Headers: l.headers[kind]}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		l.produceErrors.Add(1)
		return fmt.Errorf("producing to topic %s: %w", l.remote, err)
	}
	l.lastSent.Store(time.Now().UnixNano())
	return nil
}

// heartbeat produces a heartbeat record without waiting for it; one at a
// time, so a broker outage does not pile them up.
func (l *link) heartbeat() {
	if l.closed.Load() || l.failure() != nil || !l.hbInFlight.CompareAndSwap(false, true) {
		return
	}
	cl, _, err := l.t.producer()
	if err != nil {
		l.hbInFlight.Store(false)
		return
	}
	l.lastSent.Store(time.Now().UnixNano())
	r := &kgo.Record{Topic: l.remote, Key: l.key, Headers: l.headers[kindHeartbeat]}
	cl.Produce(l.ctx, r, func(_ *kgo.Record, err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			l.produceErrors.Add(1)
		} else if err == nil {
			l.heartbeatsOut.Add(1)
		}
		l.hbInFlight.Store(false)
	})
}

func (l *link) fail(err error) {
	l.errMu.Lock()
	if l.err == nil {
		l.err = err
		close(l.broken)
	}
	l.errMu.Unlock()
	// A broken link's records still buffered (heartbeats, a Send that gave
	// up) must not reach the peer later, nor hold up the partition.
	l.cancel()
}

func (l *link) failure() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// Close produces a closing record (after a Send in progress), so the peer's
// Recv returns io.EOF after every packet sent before, then ends the link.
func (l *link) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		if l.failure() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), min(closeGrace, l.cfg.produceTimeout))
			select {
			case l.wsem <- struct{}{}:
				_ = l.produceControl(ctx, kindClose)
				<-l.wsem
			case <-ctx.Done():
			}
			cancel()
		}
		l.abort(transport.ErrClosed)
	})
	return nil
}

// abort ends the link without a closing record.
func (l *link) abort(err error) {
	l.endOnce.Do(func() {
		l.closed.Store(true)
		l.fail(err)
		close(l.done)
		l.cancel()
		l.t.forgetLink(l)
		if l.owner != nil {
			l.owner.forget(l)
		}
		l.qmu.Lock()
		items, handed := l.items, l.handed
		l.items, l.handed, l.qbytes = nil, nil, 0
		l.qmu.Unlock()
		l.t.mu.Lock()
		shutdown := l.t.closed
		l.t.mu.Unlock()
		// A batch Recv returned was handed over. Records still queued are
		// dropped with the link, like unread bytes of a closed socket;
		// but when the whole transport closes (the node stops) they stay
		// uncommitted, so the restarted node gets them.
		l.c.finish(handed...)
		if !shutdown {
			for _, it := range items {
				l.c.finish(it.p)
			}
		}
		l.c.release()
	})
}

// Counters reports the link's records and bytes each way and its errors.
func (l *link) Counters() map[string]uint64 {
	return map[string]uint64{
		"records_in":     l.recordsIn.Load(),
		"bytes_in":       l.bytesIn.Load(),
		"records_out":    l.recordsOut.Load(),
		"bytes_out":      l.bytesOut.Load(),
		"produce_errors": l.produceErrors.Load(),
		"heartbeats_out": l.heartbeatsOut.Load(),
	}
}

var (
	_ transport.Link     = (*link)(nil)
	_ transport.Counters = (*link)(nil)
)
