package h1

import (
	"errors"
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

	upstream atomic.Pointer[UpConn] // the instance connection of the request in flight, for Close and watchWaits
	waiting  atomic.Int32           // waitNone, waitHead (for a response head), waitCancelled (the client left)
	ending   atomic.Bool            // the stream in flight is to end at its next chunk boundary (drainend.go)

	atChunkStart bool // the relay is reading a chunk-size line (drainend.go)
	endWaited    bool // the relay waited once for the end of a chunk (drainend.go)

	lastWait time.Duration // how long the last request was waited for: the parking grace follows it
	parkSlot uint32        // its slot in the parker while parked (park_linux.go)
	parkable bool          // accepted by Serve, with a RawConn, and the Server parks idle connections
}

// States of Conn.waiting.
const (
	waitNone int32 = iota
	waitHead
	waitCancelled
)

func (s *Server) newConn(nc net.Conn) *Conn {
	c := &Conn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.cr = newConnReader(nc, c.takeBuf, c.giveBuf)
	c.out.nc, c.out.cr = nc, c.cr
	c.clientIP = c.remote
	if host, _, err := net.SplitHostPort(c.remote); err == nil {
		c.clientIP = host
	}
	c.trusted = s.Trusted != nil && s.Trusted(c.remote)
	return c
}

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
	// The idle wait's read deadline is re-armed only when the one set is
	// too near, never for each request: re-arming costs a timer update.
	// Without parking it is IdleTimeout away, re-armed once less than
	// IdleTimeout-rearm is left (an eighth of the idle timeout, up to a
	// second), so the idle timeout may end that much early. A connection
	// that can park (park_linux.go) waits a grace in its goroutine: four
	// times its last wait for a request, from parkMin to ParkAfter, so
	// one whose requests come at a steady pace does not park and one that
	// went quiet parks soon; its deadline is one to two graces away, and
	// the parker enforces IdleTimeout.
	var idleUntil time.Time // the idle wait's deadline; zero: another deadline is set
	rearm := min(s.IdleTimeout/8, time.Second)
	park := c.parkable
	for {
		waited := false
		var idleStart time.Time
		if c.cr.buffered() == 0 {
			c.cr.release()
			c.state.Store(stateIdle)
			if s.shutdown.Load() {
				return
			}
			idleStart = time.Now()
			lo, hi := s.IdleTimeout-rearm, s.IdleTimeout
			if park {
				lo = min(max(4*c.lastWait, parkMin), s.ParkAfter)
				hi = 2 * lo
			}
			if idleUntil.IsZero() || idleUntil.Sub(idleStart) < lo {
				idleUntil = idleStart.Add(hi)
				_ = c.nc.SetReadDeadline(idleUntil)
			}
			err := c.cr.waitData()
			if park && errors.Is(err, os.ErrDeadlineExceeded) {
				if parked = s.park.park(c, idleStart); parked {
					return
				}
				// Not parked (the system refused): wait here after all.
				park = false
				idleUntil = idleStart.Add(s.IdleTimeout)
				_ = c.nc.SetReadDeadline(idleUntil)
				if c.state.Load() == stateIdle && !s.shutdown.Load() {
					err = c.cr.waitData()
				}
			}
			if !c.state.CompareAndSwap(stateIdle, stateActive) || err != nil {
				return
			}
			waited = true
		}
		start := time.Now()
		if waited {
			c.lastWait = start.Sub(idleStart)
		}
		n := FindHeadEnd(c.cr.bytes())
		if n == 0 {
			// The head came in pieces: from now on it has ReadHeaderTimeout.
			_ = c.nc.SetReadDeadline(start.Add(s.ReadHeaderTimeout))
			idleUntil = time.Time{}
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
		if n < 0 {
			handedOff = s.handOff(c)
			return
		}
		x := s.exchanges.get()
		x.Start = start
		err := x.Req.ParseRequest(c.cr.bytes()[:n])
		if err == nil && s.HandOff != nil && s.HandOff(&x.Req) {
			err = errFallback
		}
		switch err {
		case nil:
		case errFallback:
			s.exchanges.put(x)
			handedOff = s.handOff(c)
			return
		default: // faulty framing (RFC 9112 6.1, 3.2): refuse and close
			s.exchanges.put(x)
			if s.Refused != nil {
				s.Refused()
			}
			c.badRequest(err.Error())
			c.linger = true
			return
		}
		keep := s.Handler.ServeH1(c, x)
		c.upstream.Store(nil)
		c.waiting.Store(waitNone)
		if c.deadlineSet {
			idleUntil, c.deadlineSet = time.Time{}, false
		}
		if !x.consumed {
			c.cr.discard(x.Req.end)
		}
		if x.early {
			keep, c.linger = false, true
		}
		s.exchanges.put(x)
		c.releaseOut()
		if !keep {
			return
		}
	}
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
