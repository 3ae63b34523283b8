// Package h1 is the fast HTTP/1.1 codec of the data plane: it accepts
// client connections, reads request heads, sends requests to an instance,
// reads response heads and relays bodies, in the connection's goroutine and
// without per-request allocations. It decides nothing about routing,
// retries, faults or counting: each parsed request goes to a Handler (the
// proxy's request pipeline), which drives an exchange with the Conn and
// Exchange methods. Any connection the codec does not fully understand is
// handed, with the bytes already read, to a net/http Server (Fallback)
// behind a framing guard (Guard) that refuses faulty framing there too.
//
// Where the system offers them (unix), raw socket calls let an idle
// connection hold no buffer and let a pooled instance connection be peeked
// at before reuse; elsewhere the codec works the same with blocking reads.
// On Linux an idle connection also gives up its goroutine (park_linux.go).
package h1

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Handler runs the request pipeline for one request whose head is parsed
// in x.Req. It returns whether the client connection may carry another
// request.
type Handler interface {
	ServeH1(c *Conn, x *Exchange) (keep bool)
}

// Server accepts client connections and runs their requests through
// Handler. The zero value is not usable: Handler, Fallback, Buffers and Log
// are required.
type Server struct {
	Handler  Handler
	Fallback *http.Server // serves what the codec hands over
	Buffers  *Buffers
	Log      *slog.Logger
	// ReadHeaderTimeout bounds the time from a request's first byte to the
	// end of its head; default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without a request for
	// that long; default 120s.
	IdleTimeout time.Duration
	// ParkAfter is the longest a keep-alive connection waits for its next
	// request in its own goroutine; then, on Linux, it is parked: the
	// goroutine ends, and one goroutine of the Server watches the socket
	// and resumes the connection when bytes arrive (park_linux.go). A
	// connection waits four times as long as it waited for its last
	// request, at least 20ms, at most ParkAfter (see serveConn). Default
	// 1s, and at most half of IdleTimeout; negative: never park.
	// Connections without a RawConn (TLS) never park.
	ParkAfter time.Duration
	// ClientBodyTimeout is the most time between two reads of a request
	// body; default 60s.
	ClientBodyTimeout time.Duration
	// ClientSendTimeout is the most time a write of an answer's body to
	// the client may wait for room (a client that stops reading), to
	// within 100ms after it (watchEvery); the connection is then cut and
	// SendStalled reports it. Default 60s.
	ClientSendTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an instance's response
	// head, to within 100ms after it (watchEvery), and how long an
	// instance may go without taking a byte of a request body it is sent
	// (sendStall) or without sending a byte of an answer's body once its
	// head has come (UpConn.BodyStall; event streams excepted); 0: none.
	ResponseHeaderTimeout time.Duration
	// Trusted reports whether a peer's forwarding headers are kept; nil:
	// none is.
	Trusted func(remote string) bool
	// StripField is the lower-case name of a request field that is not
	// forwarded; empty: none.
	StripField string
	// Reap, when set, runs every ReapEvery (default 1s) to close instance
	// connections idle for too long, and once with false when the server
	// stops.
	Reap      func(expiredOnly bool)
	ReapEvery time.Duration
	// HandOff, when set, may give a parsed request (and its connection) to
	// Fallback instead of Handler.
	HandOff func(*Head) bool
	// GuardHandoff wraps each connection handed to Fallback; nil: none.
	GuardHandoff func(net.Conn) net.Conn
	// Refused, when set, is called for each request refused for faulty
	// framing (400), by the codec or by the Guard of a handed-off
	// connection.
	Refused func()

	date      dateCache
	exchanges exchangePool

	shutdown atomic.Bool
	noKeep   atomic.Bool // EndKeepAlives was called (drainend.go)
	closed   atomic.Bool // Close was called: connections are cut, not drained
	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	conns    map[*Conn]struct{}
	handoff  *ConnQueue
	done     chan struct{}
	park     *parker // nil: connections are not parked

	beforePark func(*Conn) // for tests: runs as a parking connection is about to be watched
}

// Connection states, for graceful shutdown.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
	stateParked // its goroutine ended; the parker watches its socket
)

// watchEvery is how often the server looks for clients that went away
// while their request waits for an instance's answer, and for waits past
// ResponseHeaderTimeout.
const watchEvery = 100 * time.Millisecond

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.start(ln, ln.Addr()); err != nil {
		ln.Close()
		return err
	}

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.Log.Warn("accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := s.newConn(nc)
		c.parkable = s.park != nil && c.cr.rc != nil // a connection served elsewhere never parks: its caller waits for it
		if !s.track(c) {
			return http.ErrServerClosed
		}
		go s.serveConn(c)
	}
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// handOff gives the connection, with what was read of it, to net/http
// behind the framing guard (Guard).
func (s *Server) handOff(c *Conn) bool {
	pre := append([]byte(nil), c.cr.bytes()...)
	c.cr.discard(len(pre))
	c.cr.release()
	c.releaseOut()
	_ = c.nc.SetReadDeadline(time.Time{})
	return s.handoff.Deliver(Guard(&prefixConn{Conn: c.nc, pre: pre}, s.Refused))
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight (on both codecs) until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	s.mu.Lock()
	started := s.lns != nil
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	if !started {
		return s.Fallback.Shutdown(ctx)
	}
	s.handoff.Close()
	fbDone := make(chan error, 1)
	go func() { fbDone <- s.Fallback.Shutdown(ctx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	s.stopBackground()
	return <-fbDone
}

// ShuttingDown reports whether Shutdown or Close was called.
func (s *Server) ShuttingDown() bool { return s.shutdown.Load() }

// closeIdle closes the idle connections and returns how many are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
		} else if s.closeParked(c, false) {
			delete(s.conns, c)
		}
	}
	return len(s.conns)
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.shutdown.Store(true)
	s.mu.Lock()
	for ln := range s.lns {
		ln.Close()
	}
	s.closed.Store(true)
	for c := range s.conns {
		if c.state.Swap(stateClosed) == stateParked {
			s.park.drop(c)
			delete(s.conns, c)
		}
		c.cut()
		if uc := c.upstream.Load(); uc != nil {
			uc.nc.Close()
		}
	}
	started := s.lns != nil
	s.mu.Unlock()
	if started {
		s.handoff.Close()
		s.stopBackground()
	}
	return s.Fallback.Close()
}

func (s *Server) stopBackground() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
	default:
		close(s.done)
		if s.park != nil {
			s.park.stop()
		}
	}
}

// background reaps idle instance connections and cancels the waits of
// clients that went away.
func (s *Server) background() {
	reap := time.NewTicker(s.ReapEvery)
	defer reap.Stop()
	watch := time.NewTicker(watchEvery)
	defer watch.Stop()
	for {
		select {
		case <-s.done:
			if s.Reap != nil {
				s.Reap(false)
			}
			return
		case <-reap.C:
			if s.Reap != nil {
				s.Reap(true)
			}
		case <-watch.C:
			s.watchWaits()
		}
	}
}

// watchWaits looks at every request waiting for an instance's answer
// head or relaying its body: one whose client closed its side is
// cancelled (its instance connection abandoned, or closed), so that an
// instance that stalls cannot hold an exchange nobody waits for; one that
// has waited for its head longer than ResponseHeaderTimeout is ended by
// an expired read deadline on it.
func (s *Server) watchWaits() {
	var gone, late, stalled []*Conn
	now := time.Now()
	var cutoff int64
	if s.ResponseHeaderTimeout > 0 {
		cutoff = now.Add(-s.ResponseHeaderTimeout).UnixNano()
	}
	sendCutoff := now.Add(-s.ClientSendTimeout).UnixNano()
	s.mu.Lock()
	for c := range s.conns {
		st := c.waiting.Load()
		if st != waitHead && st != waitBody {
			continue
		}
		if st == waitBody {
			if at := c.cr.blockedAt.Load(); at != 0 {
				// Writing to the client: it has not left, and if
				// it stopped reading for too long it is cut.
				if at <= sendCutoff {
					stalled = append(stalled, c)
				}
				continue
			}
		}
		switch {
		case c.clientLeft():
			gone = append(gone, c)
		case st == waitHead && cutoff != 0 && c.waitSince.Load() <= cutoff:
			late = append(late, c)
		}
	}
	s.mu.Unlock()
	for _, c := range stalled {
		if at := c.cr.blockedAt.Load(); at != 0 && at <= sendCutoff { // still the same wait
			c.sendStalled.Store(true)
			c.cut()
		}
	}
	for _, c := range gone {
		head := c.waiting.CompareAndSwap(waitHead, waitCancelling)
		if !head && !c.waiting.CompareAndSwap(waitBody, waitCancelling) {
			continue
		}
		// A request sent whole lets the instance answer within the
		// abandon's grace, so a short answer keeps its connection
		// (ReadResponseHead drains it); otherwise, and in the middle of
		// a body, the connection closes.
		if uc := c.upstream.Load(); uc != nil {
			if head && c.whole {
				uc.Abandon()
			} else {
				uc.nc.Close()
			}
		}
		c.waiting.Store(waitCancelled)
	}
	for _, c := range late {
		if uc := c.upstream.Load(); uc != nil && c.waiting.CompareAndSwap(waitHead, waitTimedOut) {
			_ = uc.nc.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// IdleBuffers reports the connections that are idle and parked in a wait
// for the next request (on the poller, or by the parker), and how many of
// those hold a buffer; for tests of the memory an idle connection costs.
// whileParked(nc, look) calls look and reports true if nc's goroutine
// waits on the poller, excluding its poller callbacks meanwhile, so look
// reads what that goroutine writes.
func (s *Server) IdleBuffers(whileParked func(nc net.Conn, look func()) bool) (conns, idle, holding int, noRaw bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		conns++
		held := false
		look := func() { held = c.cr.buf != nil || c.out.b != nil }
		switch st := c.state.Load(); {
		case st == stateParked:
			look()
		case st == stateIdle && whileParked(c.nc, look):
		default:
			continue
		}
		idle++
		if c.cr.rc == nil {
			noRaw = true
		}
		if held {
			holding++
		}
	}
	return
}

// ConnQueue is a net.Listener whose connections are handed to it: the
// ones the codec gives to net/http, or, for a TLS listener, the
// connections it handshook for another server.
type ConnQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

// NewConnQueue returns a queue that reports addr as its address.
func NewConnQueue(addr net.Addr) *ConnQueue {
	return &ConnQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for a delivered connection; net.ErrClosed once closed.
func (q *ConnQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept and Deliver.
func (q *ConnQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

// Addr is the address given to NewConnQueue.
func (q *ConnQueue) Addr() net.Addr { return q.addr }

// Deliver hands c to the server accepting from q; false once q is closed.
func (q *ConnQueue) Deliver(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

// prefixConn replays the bytes the codec read before handing over.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite lets net/http half-close after an error response.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// panicked logs a recovered panic of a connection goroutine.
func (s *Server) panicked(c *Conn, v any) {
	s.Log.Error("panic serving a connection", "remote", c.remote, "panic", v, "stack", string(debug.Stack()))
}
