package payloadbuf

import "testing"

func TestClasses(t *testing.T) {
	for _, tc := range []struct {
		n, cap int
		fits   bool
	}{
		{1, Headroom + 4096, false},
		{MinPooled, Headroom + 4096, false}, // half the class would be wasted
		{3500, Headroom + 4096, true},
		{25 + 4096, Headroom + 4096, true},
		{25 + 65536, Headroom + 65536, true},
		{Headroom + 65536, Headroom + 65536, true},
		{Headroom + 65537, Headroom + 131072, false},
		{25 + 1<<20, Headroom + 1<<20, true},
		{Headroom + 1<<20 + 1, Headroom + 1<<20 + 1, false}, // above the largest class
	} {
		b := Get(tc.n)
		if len(b) != tc.n || cap(b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", tc.n, len(b), cap(b), tc.cap)
		}
		if got := Fits(tc.n); got != tc.fits {
			t.Errorf("Fits(%d) = %v, want %v", tc.n, got, tc.fits)
		}
		Put(b)
	}
}

func TestPutIgnoresOtherCapacities(t *testing.T) {
	for _, c := range []int{0, 100, 4096, Headroom + 4095, Headroom + 3<<12, 4 << 20} {
		Put(make([]byte, 0, c)) // not a class: left to the garbage collector
	}
	// Whatever the pool hands out has a class capacity.
	for range 100 {
		if b := Get(Headroom + 4096); cap(b) != Headroom+4096 {
			t.Fatalf("Get returned capacity %d", cap(b))
		}
	}
}

func TestSpills(t *testing.T) {
	for n, want := range map[int]bool{
		1: false, 4096: false, 4097: true, 25 + 4096: true, 65536: false,
		25 + 65536: true, Headroom + 65536: true, 1 << 20: false, Headroom + 1<<20: true, Headroom + 1<<20 + 1: false,
	} {
		if got := Spills(n); got != want {
			t.Errorf("Spills(%d) = %v, want %v", n, got, want)
		}
	}
}
