package portals

import "syscall"

// sysProcAttr makes the kernel kill the plugin when the host dies, even by
// SIGKILL; portal.Serve's parent check covers other systems.
func sysProcAttr() *syscall.SysProcAttr {
	// Its own process group: a Ctrl-C in the terminal (or a signal to the
	// host's group) is the host's to handle; the plugin stops when the host
	// stops it, instead of dying first and being reported as a crash.
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
