//go:build !linux

package main

import (
	"errors"
	"net"
)

type loops struct{}

func startLoops() (*loops, error) { return nil, errors.New("-mode epoll needs Linux") }

func (*loops) add(c, up *net.TCPConn) {}
