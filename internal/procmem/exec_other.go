//go:build !linux

package procmem

// ReleaseExecutable does nothing outside Linux, where the mappings are not
// read from /proc; it returns 0.
func ReleaseExecutable() (int64, error) { return 0, nil }
