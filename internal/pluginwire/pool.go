package pluginwire

import (
	"math/bits"
	"sync"
)

// FramePool recycles encoded-frame buffers by power-of-two size class.
// Unlike gRPC's default pool it does not zero buffers on Get: every frame
// overwrites the bytes it uses, and zeroing a 1 MiB buffer per frame was
// the largest single cost of a 64 KiB stream.
type FramePool struct {
	classes [33]sync.Pool
}

var Frames = &FramePool{}

func sizeClass(n int) int {
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n.
func (p *FramePool) Get(n int) *[]byte {
	c := sizeClass(n)
	if c >= len(p.classes) {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put recycles a buffer obtained from Get.
func (p *FramePool) Put(b *[]byte) {
	c := sizeClass(cap(*b))
	if c >= len(p.classes) || cap(*b) != 1<<c {
		return
	}
	p.classes[c].Put(b)
}
