//go:build unix

package h1

import (
	"net"
	"syscall"
	"time"
)

// serveWaiting is the RawConn.Read callback of a client connection's idle
// wait, and serves the requests without a body that arrive whole in one
// read right here, inside the wait: the poller's readiness, reset once
// when the wait began, then stays as the poller leaves it, so when a read
// has emptied the socket the next request's wait goes to the poller at
// once, without the read that would find nothing (any byte that comes
// after that read makes the poller ready again). Requests with a body
// (their reads would need this wait's read lock), heads in pieces, and
// what the codec does not serve are left to serveConn with c.arrived set.
func (c *Conn) serveWaiting(fd uintptr) bool {
	s, cr := c.s, c.cr
	for {
		if c.skipRead {
			c.skipRead = false
			return false
		}
		if !cr.readReady(fd) {
			return false // nothing yet: wait for the poller
		}
		if cr.rerr != nil || cr.rn <= 0 {
			return true
		}
		cr.r, cr.w = 0, cr.rn
		emptied := cr.rn < len(cr.buf)
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			cr.rerr = net.ErrClosed // closed as idle meanwhile
			return true
		}
		c.arrived, c.fresh = true, false
		start := time.Now()
		c.lastWait = start.Sub(c.idleStart)
		n := FindHeadEnd(cr.bytes())
		if n <= 0 {
			return true
		}
		x, err := s.parseHead(c, n, start)
		if err != nil || x.Req.contentLength > 0 {
			c.pending, c.pendingErr = x, err
			return true
		}
		if !s.serveRequest(c, x) {
			c.stop = true
			return true
		}
		if cr.buffered() > 0 {
			return true // pipelined: serveConn takes the next from the buffer
		}
		if !s.idle(c) {
			c.stop = true
			return true
		}
		c.arrived = false
		c.skipRead = emptied
	}
}

// cut ends c's connection from another goroutine: its peer sees the end
// (FIN) and every wait of c's goroutine on it ends at once; that goroutine
// closes the descriptor as it unwinds. Closing it here would wait for
// that goroutine, which holds the socket's read lock while it serves a
// request inside its wait (serveWaiting).
func (c *Conn) cut() {
	if c.cr.rc == nil {
		_ = c.nc.Close()
		return
	}
	_ = c.cr.rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	_ = c.nc.SetDeadline(time.Unix(1, 0))
}
