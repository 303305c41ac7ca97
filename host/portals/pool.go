package portals

import (
	"math/bits"
	"sync"
)

// Buffers for data messages are recycled: at hundreds of MB/s, allocating a
// fresh 64 KiB buffer per message makes the garbage collector the
// bottleneck (measured: about 700 vs 1050 MB/s through an in-process portal
// with GOGC=100 vs 400).
//
// Ownership makes this safe: a reader fills a buffer and sends it as a data
// message's payload; on one node the receiving session gets that very slice
// (hops forward it untouched, nobody else keeps it), over a transport it
// gets its own decoded copy. Once the receiving session has written the
// bytes to its stream, the payload is dead and goes back to a pool. Only
// buffers whose capacity is exactly a pool class are taken back, so a
// decoded payload of another size is simply left to the garbage collector.
//
// The pools are package-level, like the standard library's, because an
// inlet's reader and an outlet's writer on the same node must share them.
const (
	minPoolShift = 12 // 4 KiB, minReadBuffer
	maxPoolShift = 20 // 1 MiB, MaxChunkSize
)

var bufPools [maxPoolShift - minPoolShift + 1]sync.Pool

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
	if c := poolClass(size); c >= 0 {
		if v := bufPools[c].Get(); v != nil {
			return (*v.(*[]byte))[:dataHeadroom+size]
		}
	}
	return make([]byte, dataHeadroom+size)
}

// putBuf recycles a data message's payload once nobody needs it.
func putBuf(b []byte) {
	if c := poolClass(cap(b) - dataHeadroom); c >= 0 {
		b = b[:0]
		bufPools[c].Put(&b)
	}
}
