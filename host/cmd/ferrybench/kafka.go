package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// The kafka section measures the Kafka transport against franz-go
// producing and consuming directly, both through one in-process kfake
// broker started for the run.
var kafkaSection = section{
	name: "kafka",
	desc: "Kafka transport (in-process and plugin) vs franz-go producing and consuming directly, 1 KiB records over kfake",
	run:  runKafka,
}

type kafkaSizes struct {
	msgs    int // records in the throughput run
	lat     int // sequential one-way and round-trip samples
	payload int
}

type kafkaResult struct {
	rate     float64 // records/s, one way
	oneWay   time.Duration
	roundP50 time.Duration
	roundP99 time.Duration
}

func runKafka(ctx context.Context, cfg config) (*table, error) {
	sz := kafkaSizes{msgs: 100_000, lat: 3_000, payload: 1 << 10}
	if cfg.quick {
		sz = kafkaSizes{msgs: 3_000, lat: 200, payload: 1 << 10}
	}
	brokers, stopKfake, err := startKfake()
	if err != nil {
		return nil, err
	}
	defer stopKfake()

	raw, err := measureKafkaRaw(ctx, brokers, sz)
	if err != nil {
		return nil, fmt.Errorf("franz-go baseline: %w", err)
	}
	settings := map[string]string{kafkatransport.SettingBrokers: brokers}
	inproc, err := measureKafkaTransport(ctx, sz, "inproc", inProcess(ctx, kafkatransport.New, settings))
	if err != nil {
		return nil, fmt.Errorf("in-process: %w", err)
	}
	bin, cleanup, err := buildPluginTemp(ctx, "kafka")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	sub, err := measureKafkaTransport(ctx, sz, "plugin", pluginProcess(ctx, bin, settings))
	if err != nil {
		return nil, fmt.Errorf("subprocess plugin: %w", err)
	}

	t := newTable("measurement", "franz-go direct", "in-process", "÷ direct", "plugin", "÷ direct", "target")
	mb := func(r kafkaResult) float64 { return r.rate * float64(sz.payload) }
	t.add("1 KiB one-way, MB/s", fmtMBps(mb(raw)), fmtMBps(mb(inproc)), fmtRatio(mb(inproc), mb(raw)),
		fmtMBps(mb(sub)), fmtRatio(mb(sub), mb(raw)), "plugin ≥ 0.50x direct")
	t.add("1 KiB one-way, msg/s", fmtRate(raw.rate), fmtRate(inproc.rate), "", fmtRate(sub.rate), "", "")
	// Latency ratios are direct ÷ ours, so that ≥ 0.5 reads the same way.
	t.add("produce→consume p50", fmtDur(raw.oneWay), fmtDur(inproc.oneWay), fmtRatio(float64(raw.oneWay), float64(inproc.oneWay)),
		fmtDur(sub.oneWay), fmtRatio(float64(raw.oneWay), float64(sub.oneWay)), "plugin ≥ 0.50x direct")
	t.add("round trip p50", fmtDur(raw.roundP50), fmtDur(inproc.roundP50), fmtRatio(float64(raw.roundP50), float64(inproc.roundP50)),
		fmtDur(sub.roundP50), fmtRatio(float64(raw.roundP50), float64(sub.roundP50)), "plugin < 1ms")
	t.add("round trip p99", fmtDur(raw.roundP99), fmtDur(inproc.roundP99), fmtRatio(float64(raw.roundP99), float64(inproc.roundP99)),
		fmtDur(sub.roundP99), fmtRatio(float64(raw.roundP99), float64(sub.roundP99)), "")
	t.note("one kfake broker in this process; franz-go direct: one producer client (linger 0, idempotent) and one consumer client per direction, no consumer group")
	t.note("ferry: a dialled link to a listener's topic, consumer group with commits after each handed batch; plugin: each end its own kafka plugin process over gRPC")
	t.note("latency ratios are direct ÷ ferry (higher is better, like the throughput ratios); %d × %d B one way, %d sequential samples each for latency",
		sz.msgs, sz.payload, sz.lat)
	return t, nil
}

var kafkaTopicSeq atomic.Int64

func kafkaTopic(what string) string {
	return fmt.Sprintf("ferrybench-%s-%d-%d", what, os.Getpid(), kafkaTopicSeq.Add(1))
}

// measureKafkaRaw is the baseline: franz-go producing to a topic and
// consuming it, with the settings a transport would use (linger 0).
func measureKafkaRaw(ctx context.Context, brokers string, sz kafkaSizes) (kafkaResult, error) {
	var res kafkaResult
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ProducerLinger(0), kgo.AllowAutoTopicCreation())
	if err != nil {
		return res, err
	}
	defer prod.Close()
	there, back := kafkaTopic("raw-there"), kafkaTopic("raw-back")
	consumer := func(topic string) (*kgo.Client, error) {
		return kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.AllowAutoTopicCreation(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	}
	// The topics exist before anything is timed.
	for _, topic := range []string{there, back} {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("warm")}).FirstErr(); err != nil {
			return res, err
		}
	}
	cThere, err := consumer(there)
	if err != nil {
		return res, err
	}
	defer cThere.Close()
	cBack, err := consumer(back)
	if err != nil {
		return res, err
	}
	defer cBack.Close()
	recv := func(c *kgo.Client, n int) error {
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		for got := 0; got < n; {
			fs := c.PollRecords(rctx, 0)
			if err := rctx.Err(); err != nil {
				return fmt.Errorf("%d of %d records: %w", got, n, err)
			}
			got += fs.NumRecords()
		}
		return nil
	}
	if err := recv(cThere, 1); err != nil {
		return res, err
	}
	if err := recv(cBack, 1); err != nil {
		return res, err
	}
	payload := make([]byte, sz.payload)
	key := []byte("link")

	// Throughput: produce everything asynchronously, consume it all.
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		var first atomic.Value
		for i := 0; i < sz.msgs; i++ {
			prod.Produce(ctx, &kgo.Record{Topic: there, Key: key, Value: payload}, func(_ *kgo.Record, err error) {
				if err != nil {
					first.CompareAndSwap(nil, err)
				}
			})
		}
		err := prod.Flush(ctx)
		if e, ok := first.Load().(error); ok {
			err = e
		}
		errc <- err
	}()
	if err := recv(cThere, sz.msgs); err != nil {
		return res, err
	}
	res.rate = float64(sz.msgs) / time.Since(start).Seconds()
	if err := <-errc; err != nil {
		return res, err
	}

	// One way and round trip, one record at a time.
	oneWay := make([]time.Duration, 0, sz.lat)
	round := make([]time.Duration, 0, sz.lat)
	for i := 0; i < sz.lat; i++ {
		start := time.Now()
		prod.Produce(ctx, &kgo.Record{Topic: there, Key: key, Value: payload}, nil)
		if err := recv(cThere, 1); err != nil {
			return res, err
		}
		oneWay = append(oneWay, time.Since(start))
		prod.Produce(ctx, &kgo.Record{Topic: back, Key: key, Value: payload}, nil)
		if err := recv(cBack, 1); err != nil {
			return res, err
		}
		round = append(round, time.Since(start))
	}
	res.oneWay, _ = percentiles(oneWay)
	res.roundP50, res.roundP99 = percentiles(round)
	return res, nil
}

// measureKafkaTransport runs the same measurements over a link of the
// Kafka transport: a dialling transport and a listening one from newT.
func measureKafkaTransport(ctx context.Context, sz kafkaSizes, what string, newT func() (transport.Transport, func(), error)) (kafkaResult, error) {
	var res kafkaResult
	ta, closeA, err := newT()
	if err != nil {
		return res, err
	}
	defer closeA()
	tb, closeB, err := newT()
	if err != nil {
		return res, err
	}
	defer closeB()
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ln, err := tb.Listen(lctx, kafkaTopic(what))
	if err != nil {
		return res, err
	}
	defer ln.Close()
	c, err := ta.Dial(lctx, ln.Addr())
	if err != nil {
		return res, err
	}
	defer c.Close()
	s, err := ln.Accept(lctx)
	if err != nil {
		return res, err
	}
	defer s.Close()
	recv := func(l transport.Link, n int) error {
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		for got := 0; got < n; {
			b, err := l.Recv(rctx)
			if err != nil {
				return fmt.Errorf("%d of %d packets: %w", got, n, err)
			}
			got += len(b)
		}
		return nil
	}
	payload := make([]byte, sz.payload)
	one := [][]byte{payload}
	// Warm up both directions.
	if err := c.Send(lctx, one); err != nil {
		return res, err
	}
	if err := recv(s, 1); err != nil {
		return res, err
	}
	if err := s.Send(lctx, one); err != nil {
		return res, err
	}
	if err := recv(c, 1); err != nil {
		return res, err
	}

	// Throughput: batches of 64 packets, as a busy node's link writer
	// would send them.
	const batch = 64
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		b := make([][]byte, batch)
		for i := range b {
			b[i] = payload
		}
		for sent := 0; sent < sz.msgs; sent += batch {
			if err := c.Send(ctx, b[:min(batch, sz.msgs-sent)]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := recv(s, sz.msgs); err != nil {
		return res, err
	}
	res.rate = float64(sz.msgs) / time.Since(start).Seconds()
	if err := <-errc; err != nil {
		return res, err
	}

	oneWay := make([]time.Duration, 0, sz.lat)
	round := make([]time.Duration, 0, sz.lat)
	for i := 0; i < sz.lat; i++ {
		start := time.Now()
		if err := c.Send(ctx, one); err != nil {
			return res, err
		}
		if err := recv(s, 1); err != nil {
			return res, err
		}
		oneWay = append(oneWay, time.Since(start))
		if err := s.Send(ctx, one); err != nil {
			return res, err
		}
		if err := recv(c, 1); err != nil {
			return res, err
		}
		round = append(round, time.Since(start))
	}
	res.oneWay, _ = percentiles(oneWay)
	res.roundP50, res.roundP99 = percentiles(round)
	return res, nil
}
