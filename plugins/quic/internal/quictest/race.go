//go:build race

package quictest

// MaxMessageSize is the max_message_size Settings configures: 0 (the
// default) normally, less under the race detector, where quic-go's packet
// processing is about 20 times slower and the conformance suite's 16 MiB
// packets alone would take most of its time limit on a loaded machine.
const MaxMessageSize = 4 << 20
