package h1

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"
)

// ConnOptions describe a connection given to ServeConn.
type ConnOptions struct {
	// HTTPS: the connection is TLS; its requests are forwarded with
	// X-Forwarded-Proto: https (unless a trusted peer set it).
	HTTPS bool
	// ResponseFields are header lines, each ending in CRLF, added to every
	// response relayed on the connection (Strict-Transport-Security, say).
	ResponseFields string

	sock syscall.RawConn // the socket under the connection, for clientLeft
}

// ServeConn serves one established client connection in the calling
// goroutine until it closes: a *tls.Conn whose handshake is done, say. It
// needs no socket of its own (reads block, holding the read buffer, and
// the idle and header timeouts are read deadlines), shares everything else
// with the listeners of Serve (Handler, Fallback, Shutdown, Close,
// EndKeepAlives), and may run without any. What the codec does not handle
// goes to Fallback as usual; TLSState finds a *tls.Conn's state there.
func (s *Server) ServeConn(nc net.Conn, o ConnOptions) error {
	if err := s.start(nil, nc.LocalAddr()); err != nil {
		nc.Close()
		return err
	}
	c := s.newConn(nc)
	o.sock = socketOf(nc)
	c.opts = o
	if !s.track(c) {
		return http.ErrServerClosed
	}
	s.serveConn(c)
	return nil
}

// start checks the configuration and, the first time, sets the defaults
// and starts the hand-off to Fallback and the background work; then it
// adds ln (when not nil) to the listeners Shutdown closes.
func (s *Server) start(ln net.Listener, addr net.Addr) error {
	if s.Fallback == nil || s.Handler == nil || s.Buffers == nil || s.Log == nil {
		return errors.New("h1: Server needs Handler, Fallback, Buffers and Log")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return http.ErrServerClosed
	}
	if s.lns == nil {
		if s.ReadHeaderTimeout <= 0 {
			s.ReadHeaderTimeout = 10 * time.Second
		}
		if s.IdleTimeout <= 0 {
			s.IdleTimeout = 120 * time.Second
		}
		if s.ClientBodyTimeout <= 0 {
			s.ClientBodyTimeout = 60 * time.Second
		}
		if s.ClientSendTimeout <= 0 {
			s.ClientSendTimeout = 60 * time.Second
		}
		if s.ReapEvery <= 0 {
			s.ReapEvery = time.Second
		}
		s.lns = make(map[net.Listener]struct{})
		s.conns = make(map[*Conn]struct{})
		s.handoff = NewConnQueue(addr)
		s.done = make(chan struct{})
		go func() { _ = s.Fallback.Serve(s.handoff) }() // ends when handoff is closed
		go s.background()
		s.startParker()
	}
	if ln != nil {
		s.lns[ln] = struct{}{}
	}
	return nil
}

// track adds c to the connections Shutdown waits for; false (and c's
// connection closed) when the server is shutting down.
func (s *Server) track(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		c.nc.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// TLSState returns the TLS state of a connection Fallback serves that came
// from a *tls.Conn given to ServeConn (looking through the hand-off's
// wrappers), or nil: for Fallback's ConnContext, since net/http sets
// Request.TLS only for a *tls.Conn it accepted itself.
func TLSState(nc net.Conn) *tls.ConnectionState {
	for {
		switch c := nc.(type) {
		case *tls.Conn:
			st := c.ConnectionState()
			return &st
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}

// NetConn is the connection the hand-off replays (for TLSState).
func (p *prefixConn) NetConn() net.Conn { return p.Conn }

// NetConn is the guarded connection (for TLSState).
func (g *guardConn) NetConn() net.Conn { return g.Conn }

// ResponseFields are the header lines every answer on the connection
// carries (ConnOptions); for error answers the Handler writes.
func (c *Conn) ResponseFields() string { return c.opts.ResponseFields }

// clientLeft reports whether the client of a request that waits for an
// instance's answer has closed its side: a peek at the socket, or for a
// connection given to ServeConn with a socket under it (a *tls.Conn),
// whether the peer hung up, since TLS records (a close_notify alert) may
// wait ahead of the end.
func (c *Conn) clientLeft() bool {
	if c.cr.rc != nil {
		return peekConn(c.cr.rc) == peekClosed
	}
	return c.opts.sock != nil && hungUp(c.opts.sock)
}

// socketOf is the socket under nc when nc wraps one (a *tls.Conn), or nil.
func socketOf(nc net.Conn) syscall.RawConn {
	w, ok := nc.(interface{ NetConn() net.Conn })
	if !ok {
		return nil
	}
	sc, ok := w.NetConn().(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
