//go:build race && linux

package pluginwire

import "sync/atomic"

// ringRaceSync tells the race detector what the rings synchronize: the
// two ends of an in-process ring pair map the memfd at two addresses, so
// the detector cannot see that a count published at one is loaded at the
// other (as internal/poll's ioSync does for descriptors). Race builds only.
var ringRaceSync atomic.Uint64

// raceRelease comes before a count is published, raceAcquire after one is
// loaded.
func raceRelease() { ringRaceSync.Add(1) }
func raceAcquire() { ringRaceSync.Load() }
