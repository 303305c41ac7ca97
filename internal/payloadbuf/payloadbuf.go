// Package payloadbuf recycles message payload buffers between the parts of
// a node that hand a payload from one to the other: a transport binding
// decodes an arriving message's payload into a buffer from here, and the
// portal session that receives it puts the buffer back once its bytes are
// written to the local stream (the same as for payloads that never left
// the node). At hundreds of MB/s a fresh buffer per decoded 64 KiB message
// made decoding the largest allocation site of a node on a portal path.
//
// Ownership is what makes this safe, not the pool: Put may only be called
// by the one holder of a payload that nobody else references (a portal
// session after writing a data message out). Anyone else simply drops a
// buffer from here and the garbage collector takes it, as before.
//
// Capacities are a power of two from 4 KiB to 1 MiB plus Headroom, so a
// message header of up to Headroom bytes in front of a power-of-two sized
// chunk of data still fits a class. Only buffers whose capacity is exactly
// a class are taken back.
package payloadbuf

import (
	"math/bits"
	"sync"
)

const (
	// Headroom is the slack above each power-of-two class for a header in
	// front of the data (a portal data frame's is 25 bytes).
	Headroom = 64
	minShift = 12 // 4 KiB
	maxShift = 20 // 1 MiB
	// MinPooled is the smallest length Get takes from a pool; smaller
	// payloads are cheaper to allocate than to recycle.
	MinPooled = 2 << 10
)

var pools [maxShift - minShift + 1]sync.Pool

// class returns the index of the smallest class with room for n bytes, or -1
// when n is above the largest class.
func class(n int) int {
	d := n - Headroom
	if d <= 1<<minShift {
		return 0
	}
	shift := bits.Len(uint(d - 1))
	if shift > maxShift {
		return -1
	}
	return shift - minShift
}

func classCap(c int) int { return Headroom + 1<<(c+minShift) }

// Get returns a buffer of length n, from a pool when its class fits.
func Get(n int) []byte {
	if b := Reuse(n); b != nil {
		return b
	}
	if c := class(n); c >= 0 {
		return make([]byte, n, classCap(c))
	}
	return make([]byte, n)
}

// Reuse returns a recycled buffer of length n when n's class has one, or
// nil.
func Reuse(n int) []byte {
	if c := class(n); c >= 0 {
		if v := pools[c].Get(); v != nil {
			return (*v.(*[]byte))[:n]
		}
	}
	return nil
}

// Spills reports whether n is above its class's power of two (a header in
// front of a power-of-two chunk): allocating exactly n bytes then costs
// about as much as the class's capacity, while a length of at most the
// power of two is cheaper to allocate exactly when it may never come back
// (a large allocation is rounded up to whole pages, and the headroom would
// take one more).
func Spills(n int) bool {
	c := class(n)
	return c >= 0 && n > 1<<(c+minShift)
}

// Fits reports whether a buffer of length n would come from a pool without
// wasting more than a quarter of its capacity; a payload that may be kept
// for long (by any worker) should not pin twice its size.
func Fits(n int) bool {
	c := class(n)
	return n >= MinPooled && c >= 0 && classCap(c)-n <= classCap(c)/4
}

// Put recycles b. Only its sole holder may call it: nothing may read or
// write b afterwards.
func Put(b []byte) {
	c := class(cap(b))
	if c < 0 || cap(b) != classCap(c) {
		return
	}
	b = b[:0]
	pools[c].Put(&b)
}
