//go:build unix

package main

import (
	"os"
	"syscall"
)

// ignoredSignals end a Go program by default but stop nothing here:
// nginx's log reopening (SIGUSR1, which a copied logrotate rule sends)
// and binary upgrade (SIGUSR2).
var ignoredSignals = []os.Signal{syscall.SIGUSR1, syscall.SIGUSR2}

// signalName is the conventional name of one of ignoredSignals.
func signalName(sig os.Signal) string {
	if sig == syscall.SIGUSR1 {
		return "SIGUSR1"
	}
	return "SIGUSR2"
}
