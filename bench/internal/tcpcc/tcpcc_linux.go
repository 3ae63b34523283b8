// Package tcpcc sets a TCP connection's congestion control algorithm, for
// the benchmark programs' -cc flag.
package tcpcc

import (
	"net"
	"syscall"
)

// Set makes c run the congestion control algorithm name (TCP_CONGESTION).
func Set(c *net.TCPConn, name string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, name)
	})
	if err != nil {
		return err
	}
	return serr
}
