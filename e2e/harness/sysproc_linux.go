//go:build linux

package harness

import "syscall"

// sysProcAttr makes the kernel kill the child when the process that started it dies, however it
// dies, so no deltaeds outlives its test or demo. ownGroup also puts it in a process group of its
// own, out of reach of the terminal's Ctrl-C.
func sysProcAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: ownGroup}
}
