package plugins

import "syscall"

// sysProcAttr makes the kernel kill the plugin when the host dies, even by
// SIGKILL. (The signal fires when the thread that started the plugin ends;
// Serve's parent check covers the rare case of that thread ending first.)
func sysProcAttr() *syscall.SysProcAttr {
	// Its own process group: a Ctrl-C in the terminal (or a signal to the
	// host's group) is the host's to handle; the plugin stops when the host
	// stops it, instead of dying first and being reported as a crash.
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
