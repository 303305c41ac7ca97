package portals

import "syscall"

// sysProcAttr makes the kernel kill the plugin when the host dies, even by
// SIGKILL; portal.Serve's parent check covers other systems.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
