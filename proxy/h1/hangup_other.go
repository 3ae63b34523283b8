//go:build !linux

package h1

import "syscall"

// hungUp is not known without POLLRDHUP: a client under TLS that leaves
// while its request waits is noticed when the answer is relayed.
func hungUp(syscall.RawConn) bool { return false }
