//go:build !linux

package portals

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
