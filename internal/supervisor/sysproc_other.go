//go:build !linux

package supervisor

import "syscall"

// sysProcAttr has no parent-death signal outside Linux: children are killed by Stop or Kill only.
func sysProcAttr(ownGroup bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: ownGroup}
}
