// Package localfault recognises the failures that are the proxy's own: a
// connection that could not be opened because the process or the system
// ran out of something (file descriptors, local ports, kernel memory).
// They say nothing about the instance the connection was for, nor about
// the client whose request needed it, so nobody is charged for them: not
// the instance's health, error counts or outlier record, and not the
// client.
package localfault

import (
	"errors"
	"syscall"
)

// Kinds of local fault.
const (
	FDs    = "fds"    // the descriptor limit of the process (EMFILE) or the system (ENFILE)
	Ports  = "ports"  // no local port left to connect from (EADDRNOTAVAIL)
	Memory = "memory" // kernel buffers or memory (ENOBUFS, ENOMEM)
)

// Kinds lists every kind, for metrics that start at zero.
var Kinds = [...]string{FDs, Ports, Memory}

// Of reports whether err is a local fault, and which kind.
func Of(err error) (kind string, ok bool) {
	if err == nil {
		return "", false
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return "", false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE:
		return FDs, true
	case syscall.EADDRNOTAVAIL:
		return Ports, true
	case syscall.ENOBUFS, syscall.ENOMEM:
		return Memory, true
	}
	return "", false
}
