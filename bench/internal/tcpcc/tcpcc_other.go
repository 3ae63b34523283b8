//go:build !linux

// Package tcpcc sets a TCP connection's congestion control algorithm, for
// the benchmark programs' -cc flag.
package tcpcc

import (
	"errors"
	"net"
)

// Set fails: TCP_CONGESTION is Linux's.
func Set(c *net.TCPConn, name string) error {
	return errors.New("tcpcc: TCP_CONGESTION is only on Linux")
}
