//go:build linux

package controlplane

import "syscall"

// sysProcAttr makes the kernel kill a child when the test process dies, whatever the way (panic,
// timeout, SIGKILL), so no etcd or kube-apiserver outlives its test.
//
// Pdeathsig is tied to the OS thread that forked the child; Go keeps its threads for the life of
// the process unless a goroutine exits while locked to one, which this package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
