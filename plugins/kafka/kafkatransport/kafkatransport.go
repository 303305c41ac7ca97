// Package kafkatransport is Ferry's Kafka transport (franz-go): a node's
// inbound topic is its address, /kafka/TOPIC.
//
// The same value serves in-process (an embedding program passes New() to the
// node) and as the kafka plugin (plugins/kafka calls transport.Serve(New())).
//
// Listen(topic) consumes topic in a consumer group (ferry-TOPIC unless
// consumer_group is set, with static membership so a restarted node takes
// its place at once). Dial(topic) produces to topic. Every record carries
// two headers: ferry-reply-to, the sender's inbound topic (inbound_topic, or
// a private ferry-inbox-<random> topic), and ferry-link (a version, a kind,
// a direction and the link id). The record key is the link id, so a link's
// records share one partition and keep their order; the value is the packet.
// Accept returns one Link per sender link (reply topic and link id), whose
// Sends go to the sender's reply topic, so replies reach the sender.
//
// Dial produces an opening record (Accept returns on it), a link with
// nothing to send produces a heartbeat record every heartbeat_interval, and
// Close produces a closing record (the peer's Recv then returns io.EOF). A
// link from whose peer nothing arrived for idle_timeout fails.
//
// Reliability: Send returns once the brokers acknowledged every record
// (idempotent producer, linger 0, all in-sync replicas), and fails after
// produce_timeout without an acknowledgement, e.g. while the brokers are
// down; the link is then broken and the node dials again. A consumed record
// is committed (the group's offset moves past it) only after Recv handed it
// over and the next Recv was called, so a node restarted after a crash
// resumes after the last record it handled, and records sent to it while it
// was down are handed to it then. The window in which a crash can hand a
// record twice is the moment between handing a batch over and the commit
// reaching the broker.
//
// Records without the ferry headers, with malformed ones, with a value over
// max_message_size or for a link nobody has are dropped and counted (see
// the listener's Counters), never delivered; they never break anything.
package kafkatransport

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferryhq/ferry/internal/acceptq"
	"github.com/ferryhq/ferry/sdk/transport"
)

// Version is the release version this package reports in Info.
const Version = "0.1.0"

// Transport is the Kafka transport. Use New.
type Transport struct {
	log hclog.Logger

	mu         sync.Mutex
	cfg        config
	closed     bool
	prod       *kgo.Client
	consumers  map[string]*consumer
	dialled    map[uint64]*link
	links      map[*link]struct{}
	listeners  map[*listener]struct{}
	inbox      string // the reply topic Dial stamps; set at the first Dial
	inboxOwned bool   // created by this transport: deleted at Close
	hbStop     chan struct{}
}

// New returns a Kafka transport with default settings; Configure changes them.
func New() transport.Transport { return newTransport() }

func newTransport() *Transport {
	return &Transport{
		log: hclog.New(&hclog.LoggerOptions{Name: "kafka", Level: hclog.LevelFromString(os.Getenv("FERRY_KAFKA_LOG")),
			Output: os.Stderr}),
		cfg:       defaultConfig(),
		consumers: map[string]*consumer{},
		dialled:   map[uint64]*link{},
		links:     map[*link]struct{}{},
		listeners: map[*listener]struct{}{},
	}
}

// Info describes the transport; it does not depend on settings.
func (t *Transport) Info() transport.Info {
	return transport.Info{
		Name:           "kafka",
		Version:        Version,
		AddressType:    "kafka",
		MaxMessageSize: DefaultMaxMessageSize,
		Settings:       settingsSchema(),
	}
}

// Configure checks settings against the schema and applies them with
// ConfigureSettings.
func (t *Transport) Configure(ctx context.Context, settings map[string]string) error {
	return transport.Apply(ctx, t, settings)
}

// ConfigureSettings applies settings parsed against the schema after
// validating them; nothing is applied when one is wrong.
func (t *Transport) ConfigureSettings(_ context.Context, s transport.Settings) error {
	cfg, err := parseConfig(s)
	if err != nil {
		return err
	}
	if cfg.tlsSkipVerify {
		t.log.Warn("tls_insecure_skip_verify is set: broker certificates are NOT verified; anyone on the path can read and change the traffic")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	if t.prod != nil {
		return fmt.Errorf("kafka transport: Configure after Listen or Dial")
	}
	t.cfg = cfg
	return nil
}

// producer returns the shared producing client, made on first use.
func (t *Transport) producer() (*kgo.Client, config, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, config{}, transport.ErrClosed
	}
	if t.prod != nil {
		return t.prod, t.cfg, nil
	}
	cfg := t.cfg
	opts := append(cfg.clientOpts(),
		// franz-go lingers 10ms by default: a latency floor on every hop.
		kgo.ProducerLinger(0),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedRecords(cfg.maxBufferedRecs),
		kgo.MaxBufferedBytes(cfg.maxBufferedBytes),
		kgo.ProducerBatchMaxBytes(int32(cfg.maxMessageSize+(16<<10))),
		kgo.RecordDeliveryTimeout(cfg.produceTimeout),
		// A link whose records were not acknowledged within
		// produce_timeout is broken and gives up its buffered records
		// (they must not reach the peer after the sender gave up); the
		// records that were acknowledged keep their exactly-once
		// sequence.
		kgo.AllowIdempotentProduceCancellation(),
		kgo.ProduceRequestTimeout(cfg.produceTimeout),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, config{}, fmt.Errorf("kafka transport: client: %w", err)
	}
	t.prod = cl
	t.hbStop = make(chan struct{})
	go t.heartbeats(cfg.heartbeatInterval, t.hbStop)
	return cl, cfg, nil
}

// Listen consumes topic (creating it when create_topics is on) and returns a
// listener whose Accept yields one link per sender link.
func (t *Transport) Listen(ctx context.Context, topic string) (transport.Listener, error) {
	if err := validTopic(topic); err != nil {
		return nil, fmt.Errorf("kafka transport: listen: %w", err)
	}
	cl, cfg, err := t.producer()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	if err := ensureTopic(ctx, cl, topic, cfg); err != nil {
		return nil, fmt.Errorf("kafka transport: listen %s: %w", topic, err)
	}
	l := &listener{t: t, topic: topic, cfg: cfg, links: map[acceptKey]*link{}, closedKeys: map[acceptKey]struct{}{}}
	l.backlog = acceptq.New[*link](&l.mu)
	if _, err := t.acquireConsumer(topic, true, l); err != nil {
		return nil, fmt.Errorf("kafka transport: listen %s: %w", topic, err)
	}
	t.mu.Lock()
	t.listeners[l] = struct{}{}
	t.mu.Unlock()
	return l, nil
}

// Dial opens a link that produces to topic. It fails when the topic does not
// exist or the opening record is not acknowledged within dial_timeout.
func (t *Transport) Dial(ctx context.Context, topic string) (transport.Link, error) {
	if err := validTopic(topic); err != nil {
		return nil, fmt.Errorf("kafka transport: dial: %w", err)
	}
	cl, cfg, err := t.producer()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	exists, err := topicExists(ctx, cl, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka transport: dial %s: %w", topic, err)
	}
	if !exists {
		return nil, fmt.Errorf("kafka transport: dial %s: the topic does not exist (no listener was ever created there)", topic)
	}
	inbox, c, err := t.acquireInbox(ctx, cl, cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka transport: dial %s: reply topic: %w", topic, err)
	}
	limit := cfg.maxMessageSize
	if bm := topicMaxMessageBytes(ctx, cl, topic); bm > 0 {
		// The broker counts the record with its batch, key and headers.
		if lim := bm - 512 - len(inbox); lim < limit {
			limit = max(lim, 1)
		}
	}
	id := newLinkID()
	lk := newLink(t, c, cfg, id, fromDialer, inbox, topic, limit)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.release()
		return nil, transport.ErrClosed
	}
	t.dialled[id] = lk
	t.links[lk] = struct{}{}
	t.mu.Unlock()
	if err := lk.produceControl(ctx, kindOpen); err != nil {
		lk.abort(err)
		return nil, fmt.Errorf("kafka transport: dial %s: %w", topic, err)
	}
	return lk, nil
}

// acquireInbox returns the reply topic and its consumer, creating the
// private inbox topic on the first Dial when inbound_topic is not set.
func (t *Transport) acquireInbox(ctx context.Context, cl *kgo.Client, cfg config) (string, *consumer, error) {
	t.mu.Lock()
	inbox := t.inbox
	t.mu.Unlock()
	if inbox == "" {
		owned := false
		if cfg.inboundTopic != "" {
			inbox = cfg.inboundTopic
		} else {
			inbox = "ferry-inbox-" + strconv.FormatUint(newLinkID(), 16)
			owned = true
		}
		if err := ensureTopic(ctx, cl, inbox, cfg); err != nil {
			return "", nil, err
		}
		t.mu.Lock()
		if t.inbox == "" {
			t.inbox, t.inboxOwned = inbox, owned
		} else if owned {
			// Another Dial won the race; drop our topic.
			go deleteTopic(cl, inbox)
		}
		inbox = t.inbox
		t.mu.Unlock()
	}
	t.mu.Lock()
	owned := t.inboxOwned
	t.mu.Unlock()
	// A private inbox needs no group: nothing in it matters after a restart.
	c, err := t.acquireConsumer(inbox, !owned, nil)
	if err != nil {
		return "", nil, err
	}
	return inbox, c, nil
}

// acquireConsumer returns the consumer of topic with one more reference,
// starting it when needed; with l, it also attaches the listener (and sets
// l.c) before the consumer dispatches anything to it.
func (t *Transport) acquireConsumer(topic string, group bool, l *listener) (*consumer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	c := t.consumers[topic]
	fresh := c == nil
	if fresh {
		var err error
		c, err = startConsumer(t, topic, group, t.cfg, l)
		if err != nil {
			return nil, err
		}
		t.consumers[topic] = c
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l != nil && !fresh {
		if c.listener != nil && !c.listener.isClosed() {
			if c.refs == 0 {
				go c.stop()
				delete(t.consumers, topic)
			}
			return nil, fmt.Errorf("this transport already listens on topic %s", topic)
		}
		// route reads l.c after dispatch read c.listener under c.mu.
		l.c = c
		c.listener = l
	}
	c.refs++
	return c, nil
}

// releaseConsumer drops a reference; the last one stops the consumer
// (committing what was handed over).
func (t *Transport) releaseConsumer(c *consumer) {
	t.mu.Lock()
	c.mu.Lock()
	c.refs--
	last := c.refs <= 0
	c.mu.Unlock()
	if last && t.consumers[c.topic] == c {
		delete(t.consumers, c.topic)
	}
	t.mu.Unlock()
	if last {
		c.stop()
	}
}

func (t *Transport) forgetLink(l *link) {
	t.mu.Lock()
	delete(t.links, l)
	if l.dir == fromDialer && t.dialled[l.id] == l {
		delete(t.dialled, l.id)
	}
	t.mu.Unlock()
}

func (t *Transport) dialledLink(id uint64) *link {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dialled[id]
}

// heartbeats sends a heartbeat record on every link that sent nothing for
// a heartbeat interval, so the peer can tell a quiet link from a dead one.
func (t *Transport) heartbeats(every time.Duration, stop chan struct{}) {
	tick := time.NewTicker(every / 2)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		ls := slices.Collect(maps.Keys(t.links))
		t.mu.Unlock()
		now := time.Now().UnixNano()
		for _, l := range ls {
			if time.Duration(now-l.lastSent.Load()) >= every {
				l.heartbeat()
			}
		}
	}
}

// Close closes every listener and link (links with a closing record),
// commits what was handed over, and deletes the private inbox topic.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	ls := slices.Collect(maps.Keys(t.listeners))
	ks := slices.Collect(maps.Keys(t.links))
	t.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	var wg sync.WaitGroup
	for _, k := range ks {
		wg.Go(func() { _ = k.Close() })
	}
	wg.Wait()
	t.mu.Lock()
	cs := slices.Collect(maps.Values(t.consumers))
	t.consumers = map[string]*consumer{}
	prod, inbox, owned, hb := t.prod, t.inbox, t.inboxOwned, t.hbStop
	t.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
	if hb != nil {
		close(hb)
	}
	if prod != nil {
		if owned && inbox != "" {
			deleteTopic(prod, inbox)
		}
		prod.Close()
	}
	return nil
}

func newLinkID() uint64 {
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("kafka transport: crypto/rand: %v", err))
	}
	return binary.BigEndian.Uint64(b[:])
}

// ensureTopic creates topic unless it exists; with create_topics off it
// only checks that it exists.
func ensureTopic(ctx context.Context, cl *kgo.Client, topic string, cfg config) error {
	if !cfg.createTopics {
		ok, err := topicExists(ctx, cl, topic)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("topic %s does not exist and %s is false", topic, SettingCreateTopics)
		}
		return nil
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = int32(cfg.topicPartitions)
	rt.ReplicationFactor = -1
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = int32(cfg.dialTimeout / time.Millisecond)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("create topic %s: broker answered for %d topics", topic, len(resp.Topics))
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

func topicExists(ctx context.Context, cl *kgo.Client, topic string) (bool, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return false, fmt.Errorf("metadata: %w", err)
	}
	for _, mt := range resp.Topics {
		if mt.Topic == nil || *mt.Topic != topic {
			continue
		}
		err := kerr.ErrorForCode(mt.ErrorCode)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			return false, nil
		default:
			return false, fmt.Errorf("metadata for %s: %w", topic, err)
		}
	}
	return false, nil
}

// topicMaxMessageBytes is the record batch limit for topic at the broker
// (the topic's max.message.bytes; kfake reports the broker-wide
// message.max.bytes beside it without applying it to the topic, so the
// smaller counts), or 0 when it cannot be read.
func topicMaxMessageBytes(ctx context.Context, cl *kgo.Client, topic string) int {
	req := kmsg.NewPtrDescribeConfigsRequest()
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType = kmsg.ConfigResourceTypeTopic
	res.ResourceName = topic
	res.ConfigNames = []string{"max.message.bytes", "message.max.bytes"}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Resources) != 1 || resp.Resources[0].ErrorCode != 0 {
		return 0
	}
	limit := 0
	for _, c := range resp.Resources[0].Configs {
		if (c.Name == "max.message.bytes" || c.Name == "message.max.bytes") && c.Value != nil {
			if n, err := strconv.Atoi(*c.Value); err == nil && n > 0 && (limit == 0 || n < limit) {
				limit = n
			}
		}
	}
	return limit
}

func deleteTopic(cl *kgo.Client, topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := kmsg.NewPtrDeleteTopicsRequest()
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.TopicNames = []string{topic}
	req.TimeoutMillis = 5000
	_, _ = req.RequestWith(ctx, cl)
}

// acceptKey identifies a sender's link at a listener.
type acceptKey struct {
	replyTo string
	link    uint64
}

// maxRefusing bounds the refusal records a listener produces at once.
const maxRefusing = 4

// maxClosedKeys bounds the memory of links closed or refused at a listener
// (whose late records are dropped rather than opening a new link).
const maxClosedKeys = 4096

type listener struct {
	t     *Transport
	c     *consumer
	topic string
	cfg   config

	mu         sync.Mutex
	links      map[acceptKey]*link
	closedKeys map[acceptKey]struct{}
	backlog    *acceptq.Queue[*link] // opened, not yet returned by Accept
	closed     bool
	once       sync.Once

	closedFlag        atomic.Bool
	refusing          atomic.Int32
	accepted, refused atomic.Uint64
}

func (l *listener) Addr() string { return l.topic }

// isClosed is lock-free: acquireConsumer asks while holding the
// transport's and the consumer's locks, which route takes inside l.mu.
func (l *listener) isClosed() bool { return l.closedFlag.Load() }

// Accept returns the next sender link. Several goroutines may call it.
func (l *listener) Accept(ctx context.Context) (transport.Link, error) {
	lk, err := l.backlog.Accept(ctx)
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return lk, nil
}

// route hands a record from a sender to its link, opening the link (and
// queueing it for Accept) on the first record of a new sender link.
func (l *listener) route(m recordMeta) *link {
	key := acceptKey{m.replyTo, m.link}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lk := l.links[key]; lk != nil {
		return lk
	}
	if l.closed || m.kind == kindClose || m.kind == kindRefuse {
		return nil
	}
	if _, ok := l.closedKeys[key]; ok {
		return nil
	}
	if len(l.links) >= l.cfg.maxLinks {
		l.refused.Add(1)
		// Its later records (heartbeats until the refusal reaches it)
		// are dropped as a closed link's: one link, one refusal, counted
		// once.
		l.rememberClosed(key)
		// A few refusals in flight at most: a flood of new link ids
		// must not become a flood of goroutines.
		if l.refusing.Add(1) <= maxRefusing {
			go func() { defer l.refusing.Add(-1); l.refuse(m) }()
		} else {
			l.refusing.Add(-1)
		}
		return nil
	}
	lk := newLink(l.t, l.c, l.cfg, m.link, fromAcceptor, l.topic, m.replyTo, l.cfg.maxMessageSize)
	lk.owner = l
	l.c.addRef()
	l.t.mu.Lock()
	if l.t.closed {
		l.t.mu.Unlock()
		l.c.release()
		return nil
	}
	l.t.links[lk] = struct{}{}
	l.t.mu.Unlock()
	l.links[key] = lk
	l.backlog.Push(lk)
	return lk
}

// refuse tells a sender its link was not accepted (max_links), so its
// Recv fails instead of waiting for an idle timeout.
func (l *listener) refuse(m recordMeta) {
	cl, _, err := l.t.producer()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.dialTimeout)
	defer cancel()
	r := &kgo.Record{Topic: m.replyTo, Key: linkKey(m.link), Headers: []kgo.RecordHeader{
		{Key: HeaderReplyTo, Value: []byte(l.topic)},
		{Key: HeaderLink, Value: linkHeader(kindRefuse, fromAcceptor, m.link)},
	}}
	_ = cl.ProduceSync(ctx, r).FirstErr()
}

func (l *listener) forget(lk *link) {
	key := acceptKey{lk.remote, lk.id}
	l.mu.Lock()
	if l.links[key] == lk {
		delete(l.links, key)
		l.rememberClosed(key)
	}
	l.mu.Unlock()
}

// rememberClosed notes a link that is over at this listener (closed or
// refused), so its late records open nothing. Called holding l.mu.
func (l *listener) rememberClosed(key acceptKey) {
	if len(l.closedKeys) >= maxClosedKeys {
		for k := range l.closedKeys {
			delete(l.closedKeys, k)
			break
		}
	}
	l.closedKeys[key] = struct{}{}
}

// Close stops accepting; links already accepted stay open (and keep the
// topic's consumer running until they close).
func (l *listener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.closedFlag.Store(true)
		pending := l.backlog.Close()
		l.mu.Unlock()
		for _, lk := range pending {
			_ = lk.Close()
		}
		// The consumer keeps routing to the links already accepted;
		// route opens no new ones now.
		l.t.mu.Lock()
		delete(l.t.listeners, l)
		l.t.mu.Unlock()
		l.c.release()
	})
	return nil
}

// Counters reports what the topic's consumer saw, dropped records by cause.
func (l *listener) Counters() map[string]uint64 {
	m := l.c.counters()
	m["links_accepted"] = l.accepted.Load()
	m["links_refused"] = l.refused.Load()
	return m
}

var (
	_ transport.Transport          = (*Transport)(nil)
	_ transport.SettingsConfigurer = (*Transport)(nil)
	_ transport.Listener           = (*listener)(nil)
	_ transport.Counters           = (*listener)(nil)
)
