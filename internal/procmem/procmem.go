// Package procmem trims what a long-running Ferry process (a node, a plugin)
// keeps resident once it has started.
//
// A Go binary's package initialisers and a process's start-up path run
// code from all over the executable, and the kernel maps file pages in
// fault-around blocks (64 KiB on Linux), so after start-up most of the
// executable's code and read-only data is mapped and counted in the
// process's RSS (RssFile), although an idle process runs a small part of
// it. Measured on an idle node and its tcp plugin: 33.7 MB of 41.3 MB
// resident was their executables' pages; dropping those mappings once
// start-up is over left 18.6 MB, stable while idle.
package procmem

import "time"

// ReleaseAfter waits delay, unless done is closed first, and then calls
// ReleaseExecutable once. A process runs it in its own goroutine when it
// has started serving; done may be nil.
func ReleaseAfter(delay time.Duration, done <-chan struct{}) {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		_, _ = ReleaseExecutable()
	case <-done:
	}
}
