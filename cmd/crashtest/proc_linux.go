package main

import "syscall"

// sysProcAttr makes a child die with crashtest, even when crashtest is
// killed itself.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
