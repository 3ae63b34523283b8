//go:build !unix

package main

import "os"

// ignoredSignals: none where SIGUSR1 and SIGUSR2 do not exist.
var ignoredSignals []os.Signal

func signalName(sig os.Signal) string { return sig.String() }
