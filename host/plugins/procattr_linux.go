package plugins

import "syscall"

// sysProcAttr makes the kernel kill the plugin when the host dies, even by
// SIGKILL. (The signal fires when the thread that started the plugin ends;
// Serve's parent check covers the rare case of that thread ending first.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
