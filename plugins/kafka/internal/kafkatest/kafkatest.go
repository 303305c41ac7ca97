// Package kafkatest holds what the kafka transport's tests share: an
// in-process Kafka-protocol broker and topic names unique to a test.
package kafkatest

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// StartBroker runs an in-process Kafka-protocol broker (kfake, one broker
// plus opts) on a random loopback port for the test, and returns it with
// its address. It is closed when the test ends.
func StartBroker(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

var topicSeq atomic.Int64

// UniqueTopic returns a topic name no other call in this process returns,
// made from the test's name so a broker's topics say whose they are.
func UniqueTopic(t testing.TB) string {
	name := strings.NewReplacer("/", ".", " ", "_", "#", "_").Replace(t.Name())
	if len(name) > 180 {
		name = name[len(name)-180:]
	}
	return fmt.Sprintf("%s.%d", name, topicSeq.Add(1))
}
