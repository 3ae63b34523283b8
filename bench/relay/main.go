// Command relay is the floor of bench/bodies.sh: a TCP relay that does
// nothing but move bytes, to show what one more loopback hop costs on the
// machine whatever the proxy.
//
//	relay -listen 127.0.0.1:18180 -to 127.0.0.1:18101
//
// For each accepted connection it dials -to and copies both ways with
// io.Copy between the two *net.TCPConn, which Go does with splice(2)
// through a pipe on Linux (TCPConn.ReadFrom), so no byte is copied to user
// space. It parses nothing: it costs less than any HTTP proxy can.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/cryoprotect/bluegreen/bench/internal/tcpcc"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18180", "the address to accept on")
	to := flag.String("to", "127.0.0.1:18101", "the address each connection is relayed to")
	cc := flag.String("cc", "", "TCP congestion control of both connections (TCP_CONGESTION; default: the system's)")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		go relay(c.(*net.TCPConn), *to, *cc)
	}
}

// relay copies between c and a new connection to addr until both
// directions have ended; with cc, both connections use that congestion
// control.
func relay(c *net.TCPConn, addr, cc string) {
	defer c.Close()
	u, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	up := u.(*net.TCPConn)
	defer up.Close()
	if cc != "" {
		for _, x := range []*net.TCPConn{c, up} {
			if err := tcpcc.Set(x, cc); err != nil {
				fmt.Fprintln(os.Stderr, "relay:", err)
				return
			}
		}
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c) // ReadFrom(*net.TCPConn): splice
		_ = up.CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	_ = c.CloseWrite()
	<-done
}
