//go:build !linux

package plugins

import "syscall"

// sysProcAttr: without a parent-death signal, Serve's parent check ends a
// plugin whose host died.
func sysProcAttr() *syscall.SysProcAttr { return nil }
