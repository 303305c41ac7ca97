package main

import (
	"encoding/binary"
	"errors"

	"github.com/ferryhq/ferry/internal/pluginwire"
)

// evil duplicates the data channel (its socket, and its rings when the
// host passed them) before Serve wraps (and closes) the original, so
// "evil:" dials can write bytes the SDK would never write.
var evil *pluginwire.RawWriter

func keepDataChannel() {
	evil, _ = pluginwire.NewRawWriter()
}

// writeEvil writes what address names on the data channel: garbage, a
// DATA frame claiming 4 GiB, or a frame for an id that does not exist.
func writeEvil(address string) error {
	if evil == nil {
		return errors.New("no data channel to misbehave on")
	}
	frame := func(typ byte, id uint64, n uint32, payload []byte) []byte {
		b := make([]byte, 13, 13+len(payload))
		b[0] = typ
		binary.BigEndian.PutUint64(b[1:9], id)
		binary.BigEndian.PutUint32(b[9:13], n)
		return append(b, payload...)
	}
	var b []byte
	switch address {
	case "evil:ring-counts":
		return evil.CorruptRing()
	case "evil:garbage":
		b = []byte("\xff\xfegarbage, not a frame header at all\n")
	case "evil:4gib":
		b = frame(1, 1, 0xffffffff, nil)
	case "evil:unknown-id":
		b = frame(1, 1<<40, 3, []byte("abc"))
	}
	_, err := evil.Write(b)
	return err
}
