package portals

import (
	"math/bits"

	"github.com/ferryhq/ferry/internal/payloadbuf"
)

// Buffers for data messages are recycled: at hundreds of MB/s, allocating a
// fresh 64 KiB buffer per message makes the garbage collector the
// bottleneck (measured: about 700 vs 1050 MB/s through an in-process portal
// with GOGC=100 vs 400).
//
// Ownership makes this safe: a reader fills a buffer and sends it as a data
// message's payload; on one node the receiving session gets that very slice
// (hops forward it untouched, nobody else keeps it), over a transport it
// gets its own decoded copy, which the binding decodes into a buffer of the
// same pools (internal/payloadbuf). Once the receiving session has written
// the bytes to its stream, the payload is dead and goes back to a pool.
// Only buffers whose capacity is exactly a pool class are taken back, so a
// payload of another size is simply left to the garbage collector.
//
// The pools are package-level, like the standard library's, because an
// inlet's reader, an outlet's writer and a transport binding's reader on
// the same node must share them.
const (
	minPoolShift = 12 // 4 KiB, minReadBuffer
	maxPoolShift = 20 // 1 MiB, MaxChunkSize
)

// The pools' headroom must hold a data frame's header.
const _ = uint(payloadbuf.Headroom - dataHeadroom)

// poolClass returns the pool index for a data capacity, or -1.
func poolClass(dataCap int) int {
	if dataCap <= 0 || dataCap&(dataCap-1) != 0 {
		return -1
	}
	shift := bits.TrailingZeros(uint(dataCap))
	if shift < minPoolShift || shift > maxPoolShift {
		return -1
	}
	return shift - minPoolShift
}

// getBuf returns a buffer with room for dataHeadroom+size bytes.
func getBuf(size int) []byte {
	if poolClass(size) >= 0 {
		return payloadbuf.Get(dataHeadroom + size)
	}
	return make([]byte, dataHeadroom+size)
}

// putBuf recycles a data message's payload once nobody needs it.
func putBuf(b []byte) { payloadbuf.Put(b) }
