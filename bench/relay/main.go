// Command relay is a floor for the harness: a TCP relay that does nothing
// but move bytes, to show what one more loopback hop costs on the machine
// whatever the proxy, and what the way a Go program waits for its sockets
// costs on top of it.
//
//	relay -listen 127.0.0.1:18180 -to 127.0.0.1:18101 [-mode splice|copy|epoll]
//
// Each accepted connection is paired with a new connection to -to and the
// bytes are copied both ways until both directions have ended. It parses
// nothing, so it costs less than any HTTP proxy can; a keep-alive client's
// requests go one to one over its own instance connection, the system
// calls a pooling proxy makes per request without its bookkeeping.
//
//   - splice (bench/bodies.sh's floor): io.Copy between the two
//     *net.TCPConn, which Go does with splice(2) through a pipe on Linux,
//     so no byte is copied to user space.
//   - copy: a goroutine per direction reading into a buffer and writing it
//     out, as a goroutine-per-connection proxy does.
//   - epoll (Linux): one event loop per core on an epoll set of its own,
//     with no goroutine per connection, as nginx does (relay_linux.go).
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
	mode := flag.String("mode", "splice", "how bytes are moved: splice, copy or epoll")
	flag.Parse()
	var serve func(c *net.TCPConn, up *net.TCPConn)
	switch *mode {
	case "splice":
		serve = func(c, up *net.TCPConn) { pipe(c, up, io.Copy) }
	case "copy":
		serve = func(c, up *net.TCPConn) { pipe(c, up, copyBuf) }
	case "epoll":
		loops, err := startLoops()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		serve = loops.add
	default:
		fmt.Fprintf(os.Stderr, "relay: -mode %q: want splice, copy or epoll\n", *mode)
		os.Exit(2)
	}
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
		go accepted(c.(*net.TCPConn), *to, *cc, serve)
	}
}

// accepted dials addr for c and hands both to serve; with cc, both
// connections use that congestion control.
func accepted(c *net.TCPConn, addr, cc string, serve func(c, up *net.TCPConn)) {
	u, err := net.Dial("tcp", addr)
	if err != nil {
		c.Close()
		return
	}
	up := u.(*net.TCPConn)
	if cc != "" {
		for _, x := range []*net.TCPConn{c, up} {
			if err := tcpcc.Set(x, cc); err != nil {
				fmt.Fprintln(os.Stderr, "relay:", err)
				c.Close()
				up.Close()
				return
			}
		}
	}
	serve(c, up)
}

// pipe copies both ways with cp until both directions have ended.
func pipe(c, up *net.TCPConn, cp func(io.Writer, io.Reader) (int64, error)) {
	defer c.Close()
	defer up.Close()
	done := make(chan struct{})
	go func() {
		_, _ = cp(up, c)
		_ = up.CloseWrite()
		close(done)
	}()
	_, _ = cp(c, up)
	_ = c.CloseWrite()
	<-done
}

// copyBuf copies through a buffer of its own: the writer and the reader
// are wrapped so io.Copy cannot use ReadFrom or WriteTo (splice).
func copyBuf(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 16<<10)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}
