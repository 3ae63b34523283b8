package h1

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// Upstream is the fast path's keep-alive pool to one instance: a LIFO stack
// of idle connections (the most recently used is the warmest and the least
// likely to have been closed by the instance), expired after the idle
// timeout.
type Upstream struct {
	addr        string // host:port
	prefix      string // the instance's base path without its trailing slash
	dialer      net.Dialer
	idleTimeout time.Duration
	maxIdle     int
	bufs        *Buffers
	now         func() time.Time

	idle  IdleStack[*UpConn]
	limit IdleLimit
	// strays counts the connections closed for holding bytes the
	// instance sent after an answer's end (TakeStrays).
	strays atomic.Int64
}

// UpConn is one connection to an instance.
type UpConn struct {
	nc     net.Conn
	cr     *connReader
	reused bool
	// limit learns when the instance closes idle connections; idleFor is
	// how long the connection sat in the pool before this exchange.
	limit   *IdleLimit
	idleFor time.Duration
	strays  *atomic.Int64 // its Upstream's
	// check: taken from the pool by GetUnchecked, not looked at yet; the
	// look is folded into the write of the request (see
	// connReader.sendFill) or done before it (Conn.Send).
	check bool
	// lazy: taken by GetUnchecked, whose caller reads the answer with
	// ReadResponseHead right after Send; Send then leaves a request without
	// a body, on a raw socket, in pend, written inside the wait for its
	// answer (readResponseHead).
	lazy bool
	pend []byte
	// abandoned: the unix nanoseconds until which an exchange whose client
	// left may still end cleanly (Abandon); 0: not abandoned.
	abandoned atomic.Int64
	// settled: the client of its exchange left, and the answer was read
	// to its end within the abandon's grace (Conn.ReadResponseHead).
	settled bool
	// stall: the most the instance may go without sending a byte of the
	// answer's body being read (BodyStall); 0: no limit. armFn is
	// armStall, bound once.
	stall time.Duration
	armFn func()
}

// ErrBodyStalled fails the read of an answer's body whose instance sent
// no byte of it for the exchange's limit (UpConn.BodyStall): the
// instance's timeout. It comes wrapped with the read's deadline error.
var ErrBodyStalled = errors.New("the instance sent no byte of its answer's body within the upstream timeout")

// BodyStall sets how long the instance may go without sending a byte of
// the answer's body being read: a read that waits longer fails with
// ErrBodyStalled (0: no limit). StartBody clears it; a relay of an event
// stream, whose quiet is its normal state, does not set it.
func (c *UpConn) BodyStall(d time.Duration) { c.stall = d }

// fillBody is cr.fill for an answer's body, within the stall limit. The
// read deadline is set only when the read finds nothing and waits (two
// deadline changes per read cost a relay of many reads 5-15 %), and
// around every read on a connection without raw access.
func (c *UpConn) fillBody() error {
	if c.stall <= 0 {
		return c.cr.fill()
	}
	if c.cr.rc == nil {
		c.armStall()
		return c.disarmStall(c.cr.fill())
	}
	if c.armFn == nil {
		c.armFn = c.armStall
	}
	c.cr.onWait, c.cr.waited = c.armFn, false
	err := c.cr.fill()
	c.cr.onWait = nil
	if c.cr.waited {
		err = c.disarmStall(err)
	}
	return err
}

// drainBody is sp.drain for an answer's body, within the stall limit: a
// drain moves up to 1 MiB, so its deadline is set around every one.
func (c *UpConn) drainBody(sp *splicer, max int) (int, error) {
	if c.stall <= 0 {
		return sp.drain(max)
	}
	c.armStall()
	n, err := sp.drain(max)
	return n, c.disarmStall(err)
}

// armStall sets the read deadline of a wait for body bytes; disarmStall
// clears it and names a timeout for what it is. An abandon's deadline,
// set meanwhile from another goroutine, is kept (keepAbandoned).
func (c *UpConn) armStall() {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.stall))
	c.keepAbandoned()
}

func (c *UpConn) disarmStall(err error) error {
	_ = c.nc.SetReadDeadline(time.Time{})
	c.keepAbandoned()
	if err != nil && isTimeout(err) && c.abandoned.Load() == 0 {
		return fmt.Errorf("%w: %w", ErrBodyStalled, err)
	}
	return err
}

// ErrStaleConn: a pooled instance connection taken by GetUnchecked was
// found closed, or holding bytes nobody asked for, before any byte of the
// request was written to it. Nothing was sent: the caller closes it and
// takes another connection, as Get would have done.
var ErrStaleConn = errors.New("h1: the pooled instance connection was closed or held unsolicited bytes")

// NewUpstream returns the pool of connections to the instance at hostport
// (port 80 when none is given) whose base path is path.
func NewUpstream(hostport, path string, dialTimeout, idleTimeout time.Duration, maxIdle int, bufs *Buffers, now func() time.Time) *Upstream {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "80")
	}
	return &Upstream{
		addr:        hostport,
		prefix:      strings.TrimSuffix(path, "/"),
		dialer:      net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		idleTimeout: idleTimeout,
		maxIdle:     maxIdle,
		bufs:        bufs,
		now:         now,
	}
}

// Limit is what the pool learned of the instance's keep-alive timeout;
// another pool of connections to the same instance may share it.
func (u *Upstream) Limit() *IdleLimit { return &u.limit }

// Prefix is the instance's base path without its trailing slash.
func (u *Upstream) Prefix() string { return u.prefix }

// Get returns a pooled connection that still looks open, or dials one.
// Every pooled connection is peeked at first (one non-blocking system
// call): one the instance closed is not used, and neither is one on which
// the instance sent bytes nobody asked for, which would otherwise be read
// as the answer to the next request.
func (u *Upstream) Get(fresh bool) (*UpConn, error) { return u.get(fresh, true) }

// GetUnchecked is Get without the peek, for a caller that calls
// ReadResponseHead right after Send: a pooled connection it returns is
// looked at when the request is written to it (for a request without a
// body on a raw socket, in ReadResponseHead's first read callback, with
// the write: one system call fewer), and Send or ReadResponseHead fail
// with ErrStaleConn, having sent nothing, when it is unusable.
func (u *Upstream) GetUnchecked(fresh bool) (*UpConn, error) { return u.get(fresh, false) }

func (u *Upstream) get(fresh, peek bool) (*UpConn, error) {
	if !fresh {
		now := u.now()
		limit := u.limit.Limit(u.idleTimeout)
		for {
			c, since, ok := u.idle.Pop()
			if !ok {
				break
			}
			c.idleFor = now.Sub(since)
			if c.idleFor >= limit || peek && !c.open() {
				c.Close()
				continue
			}
			c.reused, c.check, c.lazy = true, !peek, !peek
			return c, nil
		}
	}
	nc, err := u.dialer.Dial("tcp", u.addr)
	if err != nil {
		return nil, err
	}
	c := &UpConn{nc: nc, lazy: !peek, limit: &u.limit, strays: &u.strays}
	c.cr = newConnReader(nc, u.takeBuf, u.giveBuf)
	return c, nil
}

func (u *Upstream) takeBuf() []byte  { return u.bufs.upstream.get()[:] }
func (u *Upstream) giveBuf(b []byte) { u.bufs.upstream.put((*upstreamBuf)(b)) }

// Put returns a connection whose exchange ended cleanly to the pool. It
// keeps its read buffer: the pool hands out its most recently used
// connection first, under load within microseconds, and lending a buffer
// anew for each request cost about 2 % of the proxy's CPU per request.
// CloseIdle gives back the buffers of connections idle for longer than
// BufferGrace.
func (u *Upstream) Put(c *UpConn) {
	if c.cr.buffered() != 0 { // the instance sent more than it announced
		c.stray()
		c.Close()
		return
	}
	if c.abandoned.Load() != 0 { // its answer ended within the grace: as good as new
		c.abandoned.Store(0)
		_ = c.nc.SetDeadline(time.Time{})
	}
	if !u.idle.Push(c, u.now(), u.maxIdle) {
		c.Close()
	}
}

// Done ends the use of a connection whose exchange failed: one whose
// only failure was the client's leaving, and whose answer was read to its
// end within the abandon's grace (Conn.ReadResponseHead), goes back to the
// pool; any other is closed.
func (u *Upstream) Done(c *UpConn) {
	if c.settled {
		c.settled = false
		u.Put(c)
		return
	}
	c.Close()
}

// BufferGrace is how long a pooled connection keeps its read buffer after
// its last exchange (Put): CloseIdle gives back the buffers of those idle
// for longer.
const BufferGrace = 100 * time.Millisecond

// CloseIdle closes the idle connections, or only those idle for longer
// than the idle timeout when expiredOnly; the others give back their read
// buffers once idle for longer than BufferGrace.
func (u *Upstream) CloseIdle(expiredOnly bool) {
	now := u.now()
	for _, c := range u.idle.Remove(!expiredOnly, now.Add(-u.limit.Limit(u.idleTimeout))) {
		c.Close()
	}
	u.idle.EachIdleSince(now.Add(-BufferGrace), false, func(c *UpConn) { c.cr.release() })
}

func (c *UpConn) Close() {
	_ = c.nc.Close()
	c.cr.release()
}

// open peeks at an idle connection without blocking: an instance that
// closed it has sent EOF (or reset it), which teaches the pool's
// IdleLimit; an idle one has sent nothing, and one that sent bytes nobody
// asked for is not used either.
func (c *UpConn) open() bool {
	switch c.cr.peekState() {
	case peekNothing, peekUnknown:
		return true
	case peekClosed:
		c.limit.ClosedAfter(c.idleFor)
	case peekData:
		c.stray()
	}
	return false
}

// stray counts a connection found holding bytes the instance sent after
// an answer's end: more than its Content-Length, a body to a HEAD, a 204
// or a 304. The answer the client got may have been cut short of what
// the instance meant; the connection is closed.
func (c *UpConn) stray() {
	if c.strays != nil {
		c.strays.Add(1)
	}
}

// TakeStrays returns how many connections were closed for holding bytes
// the instance sent after an answer's end since the last call.
func (u *Upstream) TakeStrays() int64 { return u.strays.Swap(0) }

// IdleBuffers reports the pooled connections and how many of them hold a
// buffer; for tests of the memory an idle connection costs.
func (u *Upstream) IdleBuffers() (idle, holding int) {
	u.idle.Each(func(c *UpConn) {
		idle++
		if c.cr.buf != nil {
			holding++
		}
	})
	return idle, holding
}
