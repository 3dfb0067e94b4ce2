//go:build !linux

package harness

import "syscall"

// sysProcAttr has no parent-death signal or process group outside Linux: children are stopped
// by Stop only.
func sysProcAttr(bool) *syscall.SysProcAttr { return nil }
