//go:build !race

package quictest

// MaxMessageSize is the max_message_size Settings configures (0: the
// default); see race.go.
const MaxMessageSize = 0
