//go:build linux

package supervisor

import "syscall"

// sysProcAttr makes the kernel kill a child when the process that started it dies, whatever the
// way (panic, timeout, SIGKILL), so no child outlives its test or demo. ownGroup also puts it in
// a process group of its own, out of reach of the terminal's Ctrl-C.
//
// Pdeathsig is tied to the OS thread that forked the child; Go keeps its threads for the life of
// the process unless a goroutine exits while locked to one, which this package never does.
func sysProcAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: ownGroup}
}
