//go:build !linux

package controlplane

import "syscall"

// sysProcAttr has no parent-death signal outside Linux: children are killed by Stop only.
func sysProcAttr() *syscall.SysProcAttr { return nil }
