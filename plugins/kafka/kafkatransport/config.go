package kafkatransport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ferryhq/ferry/sdk/transport"
)

// Setting names accepted by Configure.
const (
	SettingBrokers           = "brokers"
	SettingInboundTopic      = "inbound_topic"
	SettingConsumerGroup     = "consumer_group"
	SettingClientID          = "client_id"
	SettingTLS               = "tls"
	SettingTLSCAFile         = "tls_ca_file"
	SettingTLSSkipVerify     = "tls_insecure_skip_verify"
	SettingSASLMechanism     = "sasl_mechanism"
	SettingSASLUser          = "sasl_user"
	SettingSASLPassword      = "sasl_password"
	SettingMaxMessageSize    = "max_message_size"
	SettingMaxLinks          = "max_links"
	SettingMaxBufferedRecs   = "max_buffered_records"
	SettingMaxBufferedBytes  = "max_buffered_bytes"
	SettingFetchMaxBytes     = "fetch_max_bytes"
	SettingLinkBufferBytes   = "link_buffer_bytes"
	SettingProduceTimeout    = "produce_timeout"
	SettingDialTimeout       = "dial_timeout"
	SettingHeartbeatInterval = "heartbeat_interval"
	SettingIdleTimeout       = "idle_timeout"
	SettingSessionTimeout    = "session_timeout"
	SettingTopicPartitions   = "topic_partitions"
	SettingCreateTopics      = "create_topics"
)

// DefaultMaxMessageSize is the largest packet by default: it leaves room
// for the record and batch overhead below Kafka's default broker limit
// (message.max.bytes = 1048588).
const DefaultMaxMessageSize = 1000000

// SASL mechanisms accepted by sasl_mechanism.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

type config struct {
	brokers           []string
	inboundTopic      string
	consumerGroup     string
	clientID          string
	tls               bool
	tlsCAFile         string
	tlsSkipVerify     bool
	saslMechanism     string
	saslUser          string
	saslPassword      string
	maxMessageSize    int
	maxLinks          int
	maxBufferedRecs   int
	maxBufferedBytes  int
	fetchMaxBytes     int
	linkBufferBytes   int
	produceTimeout    time.Duration
	dialTimeout       time.Duration
	heartbeatInterval time.Duration
	idleTimeout       time.Duration
	sessionTimeout    time.Duration
	topicPartitions   int
	createTopics      bool

	tlsConfig *tls.Config // built by validate
}

func defaultConfig() config {
	return config{
		brokers:           []string{"127.0.0.1:9092"},
		clientID:          "ferry",
		maxMessageSize:    DefaultMaxMessageSize,
		maxLinks:          1024,
		maxBufferedRecs:   10000,
		maxBufferedBytes:  64 << 20,
		fetchMaxBytes:     16 << 20,
		linkBufferBytes:   4 << 20,
		produceTimeout:    30 * time.Second,
		dialTimeout:       10 * time.Second,
		heartbeatInterval: 5 * time.Second,
		idleTimeout:       30 * time.Second,
		sessionTimeout:    10 * time.Second,
		topicPartitions:   1,
		createTopics:      true,
	}
}

func settingsSchema() []transport.Setting {
	d := defaultConfig()
	return []transport.Setting{
		{Name: SettingBrokers, Type: transport.String, Default: strings.Join(d.brokers, ","),
			Description: "seed brokers, host:port separated by commas (`ferry kafka dev` prints one)"},
		{Name: SettingInboundTopic, Type: transport.String,
			Description: "this node's own inbound topic, stamped on every record it sends so replies come back to it; empty: a private topic ferry-inbox-<random> is created at the first dial and deleted at close (replies to it do not survive a restart)"},
		{Name: SettingConsumerGroup, Type: transport.String,
			Description: "consumer group whose committed offsets let a restarted node resume; empty: ferry-<topic> for each consumed topic"},
		{Name: SettingClientID, Type: transport.String, Default: d.clientID,
			Description: "Kafka client id sent to the brokers"},
		{Name: SettingTLS, Type: transport.Bool, Default: "false",
			Description: "connect to the brokers with TLS"},
		{Name: SettingTLSCAFile, Type: transport.String,
			Description: "PEM file of CA certificates to trust for the brokers (with tls); empty: the system roots"},
		{Name: SettingTLSSkipVerify, Type: transport.Bool, Default: "false",
			Description: "DANGEROUS: accept any broker certificate (with tls); for throwaway test clusters only, logged as a warning"},
		{Name: SettingSASLMechanism, Type: transport.String,
			Description: "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL"},
		{Name: SettingSASLUser, Type: transport.String,
			Description: "SASL user name (required with sasl_mechanism)"},
		{Name: SettingSASLPassword, Type: transport.String,
			Description: "SASL password"},
		{Name: SettingMaxMessageSize, Type: transport.Int, Default: strconv.Itoa(d.maxMessageSize),
			Description: "largest packet in bytes, at most the default; a smaller topic limit at the broker (max.message.bytes) lowers it further; larger sends fail with ErrTooLarge before anything is produced"},
		{Name: SettingMaxLinks, Type: transport.Int, Default: strconv.Itoa(d.maxLinks),
			Description: "most sender links one listener keeps; a link over it is refused (the sender's link fails) and counted once in links_refused"},
		{Name: SettingMaxBufferedRecs, Type: transport.Int, Default: strconv.Itoa(d.maxBufferedRecs),
			Description: "most records the producer buffers before Send blocks"},
		{Name: SettingMaxBufferedBytes, Type: transport.Int, Default: strconv.Itoa(d.maxBufferedBytes),
			Description: "most bytes the producer buffers before Send blocks"},
		{Name: SettingFetchMaxBytes, Type: transport.Int, Default: strconv.Itoa(d.fetchMaxBytes),
			Description: "most bytes one fetch from the brokers returns (per consumed topic)"},
		{Name: SettingLinkBufferBytes, Type: transport.Int, Default: strconv.Itoa(d.linkBufferBytes),
			Description: "most received bytes queued per link before consumption of its topic waits for the link's reader"},
		{Name: SettingProduceTimeout, Type: transport.Duration, Default: d.produceTimeout.String(),
			Description: "Send fails (and the link breaks) when the brokers have not acknowledged a record for this long, e.g. while a broker is down"},
		{Name: SettingDialTimeout, Type: transport.Duration, Default: d.dialTimeout.String(),
			Description: "give up a dial or listen (metadata, topic creation, the opening record) after this long"},
		{Name: SettingHeartbeatInterval, Type: transport.Duration, Default: d.heartbeatInterval.String(),
			Description: "send a heartbeat record on a link that sent nothing for this long"},
		{Name: SettingIdleTimeout, Type: transport.Duration, Default: d.idleTimeout.String(),
			Description: "fail a link from whose peer no record (not even a heartbeat) arrived for this long; at least twice heartbeat_interval"},
		{Name: SettingSessionTimeout, Type: transport.Duration, Default: d.sessionTimeout.String(),
			Description: "consumer group session timeout (the broker may enforce a minimum, 6s by default)"},
		{Name: SettingTopicPartitions, Type: transport.Int, Default: strconv.Itoa(d.topicPartitions),
			Description: "partitions of a topic this transport creates (records of one link always share a partition, so order holds)"},
		{Name: SettingCreateTopics, Type: transport.Bool, Default: "true",
			Description: "create a listened-on topic (and the private inbox) when it does not exist; false: they must exist"},
	}
}

// parseConfig turns settings parsed against the schema into a config and
// validates the result.
func parseConfig(s transport.Settings) (config, error) {
	c := s.Check()
	brokers, err := parseBrokers(c.String(SettingBrokers))
	c.Invalid(SettingBrokers, err)
	if v := c.String(SettingInboundTopic); v != "" {
		c.Invalid(SettingInboundTopic, validTopic(v))
	}
	cfg := config{
		brokers:           brokers,
		inboundTopic:      c.String(SettingInboundTopic),
		consumerGroup:     c.String(SettingConsumerGroup),
		clientID:          c.String(SettingClientID),
		tls:               c.Bool(SettingTLS),
		tlsCAFile:         c.String(SettingTLSCAFile),
		tlsSkipVerify:     c.Bool(SettingTLSSkipVerify),
		saslMechanism:     strings.ToUpper(c.String(SettingSASLMechanism)),
		saslUser:          c.String(SettingSASLUser),
		saslPassword:      c.String(SettingSASLPassword),
		maxMessageSize:    c.Int(SettingMaxMessageSize, 1, DefaultMaxMessageSize),
		maxLinks:          c.Int(SettingMaxLinks, 1, 1<<20),
		maxBufferedRecs:   c.Int(SettingMaxBufferedRecs, 1, 1<<24),
		maxBufferedBytes:  c.Int(SettingMaxBufferedBytes, 1<<10, 1<<34),
		fetchMaxBytes:     c.Int(SettingFetchMaxBytes, 1<<10, 1<<30),
		linkBufferBytes:   c.Int(SettingLinkBufferBytes, 1<<10, 1<<30),
		produceTimeout:    c.PositiveDuration(SettingProduceTimeout),
		dialTimeout:       c.PositiveDuration(SettingDialTimeout),
		heartbeatInterval: c.PositiveDuration(SettingHeartbeatInterval),
		idleTimeout:       c.IdleTimeout(SettingIdleTimeout, SettingHeartbeatInterval),
		sessionTimeout:    c.PositiveDuration(SettingSessionTimeout),
		topicPartitions:   c.Int(SettingTopicPartitions, 1, 10000),
		createTopics:      c.Bool(SettingCreateTopics),
	}
	if err := c.Err(); err != nil {
		return config{}, fmt.Errorf("kafka transport: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return config{}, fmt.Errorf("kafka transport: %w", err)
	}
	return cfg, nil
}

// validate checks the combination of settings and loads the TLS material,
// so a mistake is reported by Configure, not at the first dial.
func (c *config) validate() error {
	if len(c.brokers) == 0 {
		return fmt.Errorf("%s: at least one seed broker is needed", SettingBrokers)
	}
	if c.fetchMaxBytes < c.maxMessageSize+(64<<10) {
		// A fetch must be able to return the largest record with its
		// overhead, or consumption would stall on it.
		c.fetchMaxBytes = c.maxMessageSize + (64 << 10)
	}
	if c.maxBufferedBytes < c.maxMessageSize+(64<<10) {
		c.maxBufferedBytes = c.maxMessageSize + (64 << 10)
	}
	if c.linkBufferBytes < c.maxMessageSize {
		c.linkBufferBytes = c.maxMessageSize
	}
	switch c.saslMechanism {
	case "":
		if c.saslUser != "" || c.saslPassword != "" {
			return fmt.Errorf("%s/%s given without %s", SettingSASLUser, SettingSASLPassword, SettingSASLMechanism)
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.saslUser == "" {
			return fmt.Errorf("%s %s needs %s", SettingSASLMechanism, c.saslMechanism, SettingSASLUser)
		}
	default:
		return fmt.Errorf("%s %q: want %s, %s or %s", SettingSASLMechanism, c.saslMechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	if !c.tls && (c.tlsCAFile != "" || c.tlsSkipVerify) {
		return fmt.Errorf("%s or %s given without %s=true", SettingTLSCAFile, SettingTLSSkipVerify, SettingTLS)
	}
	if c.tls {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.tlsSkipVerify} //nolint:gosec // opt-in, documented as dangerous and logged
		if c.tlsCAFile != "" {
			pem, err := os.ReadFile(c.tlsCAFile)
			if err != nil {
				return fmt.Errorf("%s: %w", SettingTLSCAFile, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s %s: no PEM certificate in it", SettingTLSCAFile, c.tlsCAFile)
			}
			tc.RootCAs = pool
		}
		c.tlsConfig = tc
	}
	return nil
}

// groupFor is the consumer group for a consumed topic.
func (c *config) groupFor(topic string) string {
	if c.consumerGroup != "" {
		return c.consumerGroup
	}
	return "ferry-" + topic
}

// clientOpts are the options every client of the transport shares.
func (c *config) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.brokers...),
		kgo.ClientID(c.clientID),
		kgo.DialTimeout(c.dialTimeout),
	}
	if c.tlsConfig != nil {
		opts = append(opts, kgo.DialTLSConfig(c.tlsConfig.Clone()))
	}
	switch c.saslMechanism {
	case SASLPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: c.saslUser, Pass: c.saslPassword}.AsMechanism()))
	case SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.saslUser, Pass: c.saslPassword}.AsSha256Mechanism()))
	case SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.saslUser, Pass: c.saslPassword}.AsSha512Mechanism()))
	}
	return opts
}

func parseBrokers(v string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(v, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, fmt.Errorf("broker %q: want host:port", b)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("want host:port[,host:port...]")
	}
	return out, nil
}

// validTopic checks a Kafka topic name: 1 to 249 characters of
// [a-zA-Z0-9._-], not "." or "..".
func validTopic(s string) error {
	if s == "" || len(s) > 249 {
		return fmt.Errorf("topic name %q: want 1 to 249 characters", s)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("topic name %q is not allowed", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q: only letters, digits, '.', '_' and '-' are allowed", s)
		}
	}
	return nil
}
