//go:build !race && linux

package pluginwire

func raceRelease() {}
func raceAcquire() {}
