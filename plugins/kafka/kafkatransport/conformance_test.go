package kafkatransport_test

import (
	"testing"
	"time"

	"github.com/ferryhq/ferry/plugins/kafka/internal/kafkatest"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/ferryhq/ferry/sdk/transporttest"
)

// skipDialRefused explains the one conformance subtest that does not apply.
var skipDialRefused = map[string]string{
	"DialRefused": "Kafka is store-and-forward: a topic whose listener closed still takes records, which the listener's consumer group reads when it comes back (a dial to a topic that does not exist fails: TestDialUnknownTopic)",
}

func TestConformance(t *testing.T) {
	_, addr := kafkatest.StartBroker(t)
	transporttest.Run(t, transporttest.Config{
		New: func(t *testing.T) transport.Transport {
			return newTransport(t, testSettings(addr))
		},
		ListenAddressFunc: func(t *testing.T) string { return kafkatest.UniqueTopic(t) },
		Skip:              skipDialRefused,
		// Every wait goes through a broker; as for the plugin run.
		Timeout: 30 * time.Second,
	})
}
