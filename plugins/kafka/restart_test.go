package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/kafka/internal/kafkatest"
	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// committedAtEnd reports whether group has committed the end of partition
// 0 of topic: everything in it was handed over.
func committedAtEnd(ctx context.Context, cl *kgo.Client, group, topic string) (committed, end int64, err error) {
	lo := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Partition, lp.Timestamp = 0, -1
	lt.Partitions = append(lt.Partitions, lp)
	lo.Topics = append(lo.Topics, lt)
	lr, err := lo.RequestWith(ctx, cl)
	if err != nil || len(lr.Topics) != 1 || len(lr.Topics[0].Partitions) != 1 {
		return 0, 0, fmt.Errorf("list offsets: %v", err)
	}
	end = lr.Topics[0].Partitions[0].Offset
	of := kmsg.NewPtrOffsetFetchRequest()
	of.Group = group
	ot := kmsg.NewOffsetFetchRequestTopic()
	ot.Topic, ot.Partitions = topic, []int32{0}
	of.Topics = append(of.Topics, ot)
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = group
	gt := kmsg.NewOffsetFetchRequestGroupTopic()
	gt.Topic, gt.Partitions = topic, []int32{0}
	g.Topics = append(g.Topics, gt)
	of.Groups = append(of.Groups, g)
	or, err := of.RequestWith(ctx, cl)
	if err != nil {
		return 0, 0, fmt.Errorf("offset fetch: %v", err)
	}
	committed = -1
	for _, g := range or.Groups {
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				committed = p.Offset
			}
		}
	}
	for _, t := range or.Topics {
		for _, p := range t.Partitions {
			committed = p.Offset
		}
	}
	return committed, end, nil
}

// TestListenerKilledResumesExactlyOnce: the listening node's plugin is
// killed with SIGKILL once it handled what it got, messages are sent to
// its topic while it is down and while it restarts, and the restarted
// plugin hands every one of them over once, and none of those it handled
// before.
func TestListenerKilledResumesExactlyOnce(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	topic := kafkatest.UniqueTopic(t)
	p := plugintest.Build(t, ".")
	p.Settings = map[string]string{
		kafkatransport.SettingBrokers:           addr,
		kafkatransport.SettingHeartbeatInterval: "500ms",
		kafkatransport.SettingIdleTimeout:       "60s",
		kafkatransport.SettingSessionTimeout:    "6s",
	}
	dialer := kafkatransport.New()
	if err := dialer.Configure(context.Background(), p.Settings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dialer.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	var mu sync.Mutex
	seen := map[int]int{}
	// read handles a link as a node does: Recv until it fails.
	read := func(l transport.Link) chan error {
		done := make(chan error, 1)
		go func() {
			for {
				b, err := l.Recv(ctx)
				if err != nil {
					done <- err
					return
				}
				mu.Lock()
				for _, pk := range b {
					n, _ := strconv.Atoi(string(pk))
					seen[n]++
				}
				mu.Unlock()
			}
		}()
		return done
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	wait := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	srv := p.New(t)
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialer.Dial(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	firstDone := read(s)
	send := func(from, to int, gap time.Duration) {
		for i := from; i < to; i++ {
			if err := c.Send(ctx, [][]byte{[]byte(strconv.Itoa(i))}); err != nil {
				t.Errorf("Send %d: %v", i, err)
				return
			}
			time.Sleep(gap)
		}
	}
	const before, total = 100, 300
	send(0, before, 0)
	wait("the first messages handled", func() bool { return count() == before })
	admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	wait("the listener's group committed everything it handed over", func() bool {
		committed, end, err := committedAtEnd(ctx, admin, "ferry-"+topic, topic)
		return err == nil && committed == end
	})

	p.Kill(t, srv)
	if err := <-firstDone; err == nil {
		t.Fatal("Recv on the killed plugin's link returned no error")
	}
	// Messages keep coming while the node is down and while it restarts.
	sent := make(chan struct{})
	go func() { defer close(sent); send(before, total, 2*time.Millisecond) }()
	time.Sleep(100 * time.Millisecond) // some are sent while nothing consumes; correctness does not depend on it
	srv2 := p.New(t)
	ln2, err := srv2.Listen(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ln2.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept after the restart: %v", err)
	}
	read(s2)
	<-sent
	wait("every message handled", func() bool { return count() == total })
	// Anything handed twice would arrive right behind.
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < total; i++ {
		if seen[i] != 1 {
			t.Errorf("message %d handled %d times", i, seen[i])
		}
	}
	if len(seen) != total {
		t.Errorf("handled %d distinct messages, want %d", len(seen), total)
	}
}
