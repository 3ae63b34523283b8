//go:build unix

package main

import "syscall"

// nofileLimit is the process's open-files limit (Go raises the soft limit to
// the hard one at start on Linux); 0 when unknown.
func nofileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < 0 { // Cur is an int64 on some systems (freebsd)
		return 0
	}
	return uint64(rl.Cur)
}
