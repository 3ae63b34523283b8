package h1

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// Conn is one client connection of the codec.
type Conn struct {
	s        *Server
	nc       net.Conn
	cr       *connReader
	out      outBuf
	state    atomic.Int32
	remote   string
	clientIP string
	trusted  bool
	opts     ConnOptions // what ServeConn was told of the connection (serveconn.go)

	deadlineSet bool // a body read set a deadline of its own: re-arm the idle one
	linger      bool // closing with request bytes unread: half-close and drain first

	upstream    atomic.Pointer[UpConn] // the instance connection of the request in flight, for Close and watchWaits
	waiting     atomic.Int32           // waitNone, waitHead (for a response head), waitBody (relaying a response body), waitCancelling, waitCancelled (the client left), waitTimedOut
	whole       bool                   // the request in the wait was sent whole (no early answer): its instance connection may outlive the client (Abandon); published by the store of waitHead
	waitSince   atomic.Int64           // when the wait for the head began (UnixNano), for ResponseHeaderTimeout
	ending      atomic.Bool            // the stream in flight is to end at its next chunk boundary (drainend.go)
	sendStalled atomic.Bool            // watchWaits cut the connection: the client took no byte of its answer for ClientSendTimeout

	atChunkStart bool // the relay is reading a chunk-size line (drainend.go)
	endWaited    bool // the relay waited once for the end of a chunk (drainend.go)

	lastWait time.Duration // how long the last request was waited for: the parking grace follows it
	park     bool          // the idle wait may end in parking (parkable, and the parker did not refuse)
	fresh    bool          // no byte of a request has come yet: the wait is bounded by ReadHeaderTimeout (waitLimit)

	// The idle wait (serveConn, idle, serveWaiting).
	idleStart, idleUntil time.Time     // when the wait began; its read deadline (zero: another deadline is set)
	rearm                time.Duration // how near the deadline may get before the wait re-arms it
	waitFn               func(fd uintptr) bool
	skipRead             bool      // the last read emptied the socket: the wait's next step is the poller's
	arrived, stop        bool      // the wait took a request in and left it to serveConn; the connection is to close
	pending              *Exchange // that request, parsed (nil: parse what is buffered)
	pendingErr           error
	parkSlot             uint32 // its slot in the parker while parked (park_linux.go)
	parkable             bool   // accepted by Serve, with a RawConn, and the Server parks idle connections
}

// States of Conn.waiting.
const (
	waitNone int32 = iota
	waitHead
	waitBody       // relaying the answer's body: a client that leaves ends it
	waitCancelling // the client left; watchWaits is abandoning or closing the instance connection
	waitCancelled
	waitTimedOut // the instance took longer than ResponseHeaderTimeout
)

func (s *Server) newConn(nc net.Conn) *Conn {
	c := &Conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), fresh: true}
	c.cr = newConnReader(nc, c.takeBuf, c.giveBuf)
	c.out.nc, c.out.cr = nc, c.cr
	c.clientIP = c.remote
	if host, _, err := net.SplitHostPort(c.remote); err == nil {
		c.clientIP = host
	}
	c.trusted = s.Trusted != nil && s.Trusted(c.remote)
	return c
}

// SendStalled reports whether the connection was cut because the client
// took no byte of its answer for the Server's ClientSendTimeout: the
// client's timeout.
func (c *Conn) SendStalled() bool { return c.sendStalled.Load() }

// AnswerCut reports whether the answer relayed last could not be written
// whole to the client: a write to it failed, watchWaits saw it leave, or
// it stopped reading (SendStalled).
func (c *Conn) AnswerCut() bool { return c.out.err != nil }

// Remote is the client's address.
func (c *Conn) Remote() string { return c.remote }

func (c *Conn) takeBuf() []byte  { return c.s.Buffers.client.get()[:] }
func (c *Conn) giveBuf(b []byte) { c.s.Buffers.client.put((*clientBuf)(b)) }

func (c *Conn) releaseOut() {
	if c.out.b != nil {
		c.s.Buffers.client.put((*clientBuf)(c.out.b[:clientBufSize]))
		c.out.b = nil
	}
}

func (c *Conn) ensureOut() {
	if c.out.b == nil {
		c.out.b = c.s.Buffers.client.get()[:0]
	}
}

// lingerClose half-closes and reads what the client still sends for a
// moment before the close, as net/http does: closing a socket with unread
// bytes sends a reset, which can destroy the answer before the client
// reads it.
func (c *Conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 4096)
	for total := 0; total < 256<<10; {
		n, err := c.nc.Read(buf)
		total += n
		if err != nil {
			return
		}
	}
}

// serveConn runs one client connection's requests in order.
func (s *Server) serveConn(c *Conn) {
	handedOff, parked := false, false
	defer func() {
		if v := recover(); v != nil {
			s.panicked(c, v)
		}
		if parked {
			return // the parker owns it now
		}
		if !handedOff {
			if c.linger {
				c.lingerClose()
			}
			c.nc.Close()
			c.cr.discard(c.cr.buffered())
			c.cr.release()
			c.releaseOut()
		}
		s.forget(c)
	}()
	c.rearm = min(s.IdleTimeout/8, time.Second)
	c.park = c.parkable
	c.idleUntil = time.Time{} // a resumed connection's deadline is the parking's
	for {
		var x *Exchange
		var err error
		n := 0
		waited := false
		if c.cr.buffered() == 0 {
			if !s.idle(c) {
				return
			}
			err := c.waitRequest()
			if c.park && errors.Is(err, os.ErrDeadlineExceeded) {
				end := c.idleStart.Add(s.waitLimit(c))
				if parked = s.park.park(c, c.idleStart, end); parked {
					return
				}
				// Not parked (the system refused): wait here after all.
				c.park = false
				c.idleUntil = end
				_ = c.nc.SetReadDeadline(c.idleUntil)
				if c.state.Load() == stateIdle && !s.shutdown.Load() {
					err = c.waitRequest()
				}
			}
			if err != nil || c.stop {
				return
			}
			c.fresh = false
			if c.arrived { // the wait took the request in and served what it could
				c.arrived = false
				x, err = c.pending, c.pendingErr
				c.pending, c.pendingErr = nil, nil
			} else {
				if !c.state.CompareAndSwap(stateIdle, stateActive) {
					return
				}
				waited = true
			}
		}
		if x == nil && err == nil {
			start := time.Now()
			if waited {
				c.lastWait = start.Sub(c.idleStart)
			}
			n = FindHeadEnd(c.cr.bytes())
			if n == 0 {
				// The head came in pieces: from now on it has ReadHeaderTimeout.
				_ = c.nc.SetReadDeadline(start.Add(s.ReadHeaderTimeout))
				c.idleUntil = time.Time{}
			}
			for n == 0 {
				if err := c.cr.fill(); err != nil {
					if err == errBufferFull {
						n = -1
						break
					}
					return // header timeout, or the client went away
				}
				n = FindHeadEnd(c.cr.bytes())
			}
			if n > 0 {
				x, err = s.parseHead(c, n, start)
			}
		}
		switch {
		case n < 0, err == errFallback:
			handedOff = s.handOff(c)
			return
		case err != nil: // faulty framing (RFC 9112 6.1, 3.2): refuse and close
			if s.Refused != nil {
				s.Refused()
			}
			c.badRequest(err.Error())
			c.linger = true
			return
		}
		if !s.serveRequest(c, x) {
			return
		}
	}
}

// waitLimit is how long c may wait for a request: IdleTimeout between
// requests, but ReadHeaderTimeout (when shorter) for a connection on
// which nothing has come yet, as net/http and nginx's
// client_header_timeout count it. A client that connects and sends
// nothing held its descriptor for the idle timeout (120 s in serve), where
// BLUEGREEN_READ_HEADER_TIMEOUT promises less.
func (s *Server) waitLimit(c *Conn) time.Duration {
	if c.fresh && s.ReadHeaderTimeout < s.IdleTimeout {
		return s.ReadHeaderTimeout
	}
	return s.IdleTimeout
}

// idle readies c for its wait for the next request: no buffer held, the
// state idle, and the wait's read deadline. The deadline is re-armed only
// when the one set is too near, never for each request: re-arming costs a
// timer update. Without parking it is waitLimit away, re-armed once less
// than waitLimit-rearm is left (an eighth of the idle timeout, up to a
// second), so the idle timeout may end that much early. A connection that
// can park (park_linux.go) waits a grace in its goroutine: four times its
// last wait for a request, from parkMin to ParkAfter, so one whose
// requests come at a steady pace does not park and one that went quiet
// parks soon; its deadline is one to two graces away, and the parker
// enforces waitLimit. False when the server is shutting down.
func (s *Server) idle(c *Conn) bool {
	c.cr.release()
	c.state.Store(stateIdle)
	if s.shutdown.Load() {
		return false
	}
	c.idleStart = time.Now()
	limit := s.waitLimit(c)
	lo, hi := limit-c.rearm, limit
	if c.park {
		lo = min(max(4*c.lastWait, parkMin), s.ParkAfter)
		hi = min(2*lo, limit)
		lo = min(lo, hi)
	}
	if c.idleUntil.IsZero() || c.idleUntil.Sub(c.idleStart) < lo {
		c.idleUntil = c.idleStart.Add(hi)
		_ = c.nc.SetReadDeadline(c.idleUntil)
	}
	return true
}

// parseHead parses the request head of the n bytes at the front of the
// read buffer. errFallback: the request is net/http's; another error: its
// framing is faulty.
func (s *Server) parseHead(c *Conn, n int, start time.Time) (*Exchange, error) {
	x := s.exchanges.get()
	x.Start = start
	err := x.Req.ParseRequest(c.cr.bytes()[:n])
	if err == nil && s.HandOff != nil && s.HandOff(&x.Req) {
		err = errFallback
	}
	if err != nil {
		s.exchanges.put(x)
		return nil, err
	}
	return x, nil
}

// serveRequest serves a parsed request and reports whether the connection
// may carry another.
func (s *Server) serveRequest(c *Conn, x *Exchange) bool {
	keep := s.Handler.ServeH1(c, x)
	c.upstream.Store(nil)
	c.waiting.Store(waitNone)
	if c.deadlineSet {
		c.idleUntil, c.deadlineSet = time.Time{}, false
	}
	if !x.consumed {
		c.cr.discard(x.Req.end)
	}
	if x.early {
		keep, c.linger = false, true
	}
	s.exchanges.put(x)
	c.releaseOut()
	return keep
}

// waitRequest waits for the next request's first bytes. On a connection
// with a RawConn the wait serves requests without a body itself (see
// serveWaiting); it returns with c.arrived set when it took a request in
// and left it (or a later one) to the caller, c.stop when the connection
// is to close.
func (c *Conn) waitRequest() error {
	if c.cr.rc == nil {
		return c.cr.waitData()
	}
	if c.waitFn == nil {
		c.waitFn = c.serveWaiting
	}
	c.cr.rn, c.cr.rerr = 0, nil
	if err := c.cr.rc.Read(c.waitFn); err != nil {
		return err
	}
	if c.cr.rerr != nil {
		return c.cr.rerr
	}
	if !c.arrived && !c.stop && c.cr.rn <= 0 {
		return io.EOF
	}
	return nil
}

func (c *Conn) badRequest(why string) {
	c.ensureOut()
	c.out.writeString("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: " + why)
	c.out.flush()
}

// KeepAfterError reports whether the client connection can carry another
// request after an error answer to x: not when a body is left unread (or
// half read) on it; an unread body also makes the close linger.
func (c *Conn) KeepAfterError(x *Exchange, bodyStarted bool) bool {
	req := &x.Req
	c.linger = req.contentLength > 0 && !bodyStarted
	return req.contentLength <= 0 && !req.closeConn && c.s.keepAlive()
}

// WriteError answers x with a short plain-text error; extra holds more
// header lines, each ending in CRLF. It reports whether the answer was
// written.
func (c *Conn) WriteError(x *Exchange, code int, extra, body string, keep bool) bool {
	c.ensureOut()
	o := &c.out
	o.writeString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n" + extra +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nDate: ")
	o.write(c.s.date.get(x.Start))
	if !keep {
		o.writeString("\r\nConnection: close")
	}
	o.writeString("\r\n\r\n")
	if x.Req.method != http.MethodHead {
		o.writeString(body)
	}
	o.flush()
	return o.err == nil
}
