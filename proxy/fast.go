package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves the public listener. Plain HTTP/1.1 requests (one of the
// usual methods, an origin-form target, a Content-Length body or none, no
// upgrade, no Expect) take a fast path that parses the request itself and
// relays it over a keep-alive connection to the instance in the same
// goroutine: no per-request goroutines, no per-request allocations, and an
// idle connection holds no buffers. Any other connection (an upgrade, a
// chunked request body, HTTP/1.0, an absolute-form target, a head larger
// than 8 KiB, anything malformed) is handed, with the bytes already read, to
// Fallback, an http.Server whose Handler is the Router; from then on
// net/http serves that connection. Routing, balancing, retries, outlier
// detection, draining, metrics and the access log are the same on both.
//
// When the Router cannot use the fast path (an https instance, an instance
// URL with a query, or a custom Transport), Serve is Fallback.Serve.
type Server struct {
	Router   *Router
	Fallback *http.Server // required; its Handler should be Router
	// ReadHeaderTimeout bounds the time from a request's first byte to the
	// end of its head; default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without a request for
	// that long; default 120s.
	IdleTimeout time.Duration

	shutdown atomic.Bool
	closed   atomic.Bool // Close was called: connections are cut, not drained
	noKeep   atomic.Bool // EndKeepAlives was called (proxy/shutdown.go)
	mu       sync.Mutex
	lns      map[net.Listener]struct{}
	conns    map[*fconn]struct{}
	handoff  *handoffListener
	done     chan struct{}
}

// Connection states of the fast path, for graceful shutdown.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
)

type fconn struct {
	s        *Server
	nc       net.Conn
	cr       *connReader
	out      outBuf
	state    atomic.Int32
	remote   string
	clientIP string
	trusted  bool

	deadlineCleared bool // a request body was read without a deadline
	linger          bool // closing with request bytes unread: half-close and drain first

	upstream atomic.Pointer[upConn] // the instance connection of the request in flight, for Close
}

// lingerClose half-closes and reads what the client still sends for a
// moment before the close, as net/http does: closing a socket with unread
// bytes sends a reset, which can destroy the answer before the client
// reads it.
func (c *fconn) lingerClose() {
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

// exchange is the scratch space of one request, pooled: two heads of up to
// 100 fields are too large to keep per idle connection.
type exchange struct {
	req, res head
	wbuf     []byte
	path     string
	consumed bool // the request head was taken out of the read buffer
}

var errClientBody = errors.New("client request body ended early")

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	if s.Fallback == nil || s.Router == nil {
		return errors.New("proxy: Server needs Router and Fallback")
	}
	if !s.Router.fast {
		return s.Fallback.Serve(ln)
	}
	if s.ReadHeaderTimeout <= 0 {
		s.ReadHeaderTimeout = 10 * time.Second
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 120 * time.Second
	}
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	if s.lns == nil {
		s.lns = make(map[net.Listener]struct{})
		s.conns = make(map[*fconn]struct{})
		s.handoff = &handoffListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
		s.done = make(chan struct{})
		go func() { _ = s.Fallback.Serve(s.handoff) }() // ends when handoff is closed
		go s.reap()
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()

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
			s.Router.log.Warn("accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := s.newConn(nc)
		s.mu.Lock()
		if s.shutdown.Load() {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) newConn(nc net.Conn) *fconn {
	rt := s.Router
	c := &fconn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.cr = newConnReader(nc, c.takeBuf, c.giveBuf)
	c.out.nc = nc
	c.clientIP = c.remote
	if host, _, err := net.SplitHostPort(c.remote); err == nil {
		c.clientIP = host
	}
	c.trusted = len(rt.trusted) > 0 && rt.trustedPeer(c.remote)
	return c
}

func (c *fconn) takeBuf() []byte  { return c.s.Router.bufs.client.get()[:] }
func (c *fconn) giveBuf(b []byte) { c.s.Router.bufs.client.put((*clientBuf)(b)) }

func (s *Server) forget(c *fconn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveConn runs one client connection's requests in order.
func (s *Server) serveConn(c *fconn) {
	handedOff := false
	defer func() {
		if v := recover(); v != nil {
			s.Router.log.Error("panic serving a connection", "remote", c.remote, "panic", v, "stack", string(debug.Stack()))
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
	var idleArmed time.Time // when the idle deadline was set; zero: another deadline is set
	rearm := min(s.IdleTimeout/8, time.Second)
	for {
		if c.cr.buffered() == 0 {
			c.cr.release()
			c.state.Store(stateIdle)
			if s.shutdown.Load() {
				return
			}
			// Re-arming a deadline costs a timer update; a busy connection
			// re-arms it at most every rearm (an eighth of the idle timeout,
			// up to a second), so the idle timeout may end that much early.
			if now := time.Now(); idleArmed.IsZero() || now.Sub(idleArmed) > rearm {
				_ = c.nc.SetReadDeadline(now.Add(s.IdleTimeout))
				idleArmed = now
			}
			err := c.cr.waitData()
			if !c.state.CompareAndSwap(stateIdle, stateActive) || err != nil {
				return
			}
		}
		start := time.Now()
		n := findHeadEnd(c.cr.bytes())
		if n == 0 {
			// The head came in pieces: from now on it has ReadHeaderTimeout.
			_ = c.nc.SetReadDeadline(start.Add(s.ReadHeaderTimeout))
			idleArmed = time.Time{}
		}
		for n == 0 {
			if err := c.cr.fill(); err != nil {
				if err == errBufferFull {
					n = -1
					break
				}
				return // header timeout, or the client went away
			}
			n = findHeadEnd(c.cr.bytes())
		}
		if n < 0 {
			handedOff = s.handOff(c)
			return
		}
		x := s.Router.exchanges.get()
		err := x.req.parseRequest(c.cr.bytes()[:n])
		switch err {
		case nil:
		case errCLTE:
			s.Router.exchanges.put(x)
			c.badRequest("Content-Length and Transfer-Encoding together")
			c.linger = true
			return
		default:
			s.Router.exchanges.put(x)
			handedOff = s.handOff(c)
			return
		}
		keep := s.serveRequest(c, x, start)
		if c.deadlineCleared {
			idleArmed, c.deadlineCleared = time.Time{}, false
		}
		if !x.consumed {
			c.cr.discard(x.req.end)
		}
		s.Router.exchanges.put(x)
		c.releaseOut()
		if !keep {
			return
		}
	}
}

func (c *fconn) releaseOut() {
	if c.out.b != nil {
		c.s.Router.bufs.client.put((*clientBuf)(c.out.b[:clientBufSize]))
		c.out.b = nil
	}
}

func (c *fconn) ensureOut() {
	if c.out.b == nil {
		c.out.b = c.s.Router.bufs.client.get()[:0]
	}
}

// handOff gives the connection, with what was read of it, to net/http.
func (s *Server) handOff(c *fconn) bool {
	pre := append([]byte(nil), c.cr.bytes()...)
	c.cr.discard(len(pre))
	c.cr.release()
	c.releaseOut()
	_ = c.nc.SetReadDeadline(time.Time{})
	return s.handoff.deliver(&prefixConn{Conn: c.nc, pre: pre})
}

func (c *fconn) badRequest(why string) {
	c.ensureOut()
	c.out.writeString("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: " + why)
	c.out.flush()
}

// serveRequest proxies one parsed request and reports whether the
// connection stays open for another.
func (s *Server) serveRequest(c *fconn, x *exchange, start time.Time) bool {
	rt := s.Router
	req := &x.req
	snap := rt.snap.Load()
	pool := snap.active
	if (rt.previewHeader != "" || rt.previewCookie != "") && rt.wantsPreviewFast(req) {
		pool = snap.idle
	}
	if rt.access != nil {
		x.path = string(pathOf(req.target))
	}
	c.ensureOut()
	b := pool.Pick()
	if b == nil {
		pool.metrics.count(req.method, http.StatusServiceUnavailable)
		keep := s.keepAfterError(c, req, false)
		c.writeStatus(req, http.StatusServiceUnavailable, "Retry-After: "+rt.retryAfter+"\r\nCache-Control: no-store\r\n",
			unavailableBody(pool), keep, start)
		return keep && c.out.err == nil
	}
	pool.begin(b)
	code, inst, stream, keep := s.forward(c, x, pool, b, start)
	c.upstream.Store(nil)
	elapsed := pool.end(b, start, stream)
	if rt.access != nil {
		rt.logAccess(context.Background(), req.method, x.path, code, pool, inst, elapsed, c.remote)
	}
	return keep
}

// forward sends the request to b (and once more elsewhere when that is
// safe) and relays the answer. It returns the status the client got, the
// instance that answered, whether the response was an event stream, and
// whether the client connection may carry another request.
func (s *Server) forward(c *fconn, x *exchange, pool *Pool, b *Backend, start time.Time) (int, *Backend, bool, bool) {
	rt := s.Router
	req := &x.req
	attempt, fresh, failedOver := b, false, false
	for try := 0; ; try++ {
		uc, err := attempt.conns.get(fresh)
		bodyStarted := false
		if err == nil {
			c.upstream.Store(uc)
			if s.closed.Load() {
				uc.nc.Close() // Close ran between the pick and the store
			}
			bodyStarted, err = s.send(c, x, uc, attempt)
			if err == nil {
				err = s.readResponseHead(c, x, uc)
			}
			if err == nil {
				code, stream, keep := s.relay(c, x, uc, pool, attempt, start)
				return code, attempt, stream, keep
			}
			uc.close()
		}
		if errors.Is(err, errClientBody) {
			pool.metrics.count(req.method, 499)
			return 499, attempt, false, false
		}
		status, kind := classify(context.Background(), err)
		attempt.errs.inc(kind)
		attempt.failedAttempt(kind)
		if try == 0 && !bodyStarted && retryableFast(req, kind) {
			alt := pool.pickOther(attempt)
			if alt == nil && kind != KindDial {
				alt, fresh = attempt, true // a reset pooled connection: try a new one
			}
			if alt != nil {
				pool.metrics.retried()
				attempt = alt
				continue
			}
		}
		if np, nb := rt.failoverFast(attempt.pool, kind, bodyStarted || failedOver); nb != nil {
			pool, attempt, fresh, failedOver = np, nb, false, true
			continue
		}
		pool.metrics.count(req.method, status)
		path := x.path
		if path == "" {
			path = string(pathOf(req.target))
		}
		rt.log.Warn("upstream error", "color", pool.color, "instance", attempt.name, "kind", kind,
			"method", req.method, "path", path, "err", err)
		keep := s.keepAfterError(c, req, bodyStarted)
		c.writeStatus(req, status, "", http.StatusText(status)+"\n", keep, start)
		return status, attempt, false, keep && c.out.err == nil
	}
}

// retryableFast: a refused connection means nothing was sent, so any
// request may go elsewhere (its body is still unread); after a reset only
// idempotent requests without a body may.
// keepAfterError reports whether the client connection can carry another
// request after an error answer: not when a body is left unread (or half
// read) on it; an unread body also makes the close linger.
func (s *Server) keepAfterError(c *fconn, req *head, bodyStarted bool) bool {
	c.linger = req.contentLength > 0 && !bodyStarted
	return req.contentLength <= 0 && !req.closeConn && s.keepAlive()
}

func retryableFast(req *head, kind string) bool {
	return kind == KindDial || mayRetry(req.method, req.contentLength > 0, kind)
}

// send writes the request head, rebuilt with the forwarding headers and
// without hop-by-hop fields, and the body.
func (s *Server) send(c *fconn, x *exchange, uc *upConn, b *Backend) (bodyStarted bool, err error) {
	rt := s.Router
	req := &x.req
	w := x.wbuf[:0]
	w = append(w, req.method...)
	w = append(w, ' ')
	w = append(w, b.conns.prefix...)
	w = append(w, req.target...)
	w = append(w, " HTTP/1.1\r\n"...)
	var host []byte
	hasXFH, hasXFP := false, false
	for i := range req.fields {
		f := &req.fields[i]
		switch f.id {
		case fHost:
			host = f.value
		case fConnection, fKeepAlive, fProxyConnection, fProxyAuthenticate, fProxyAuthorization, fTrailer, fXForwardedFor:
			continue
		case fTE:
			if !equalFold(f.value, "trailers") {
				continue
			}
		case fXForwardedHost:
			if !c.trusted {
				continue
			}
			hasXFH = true
		case fXForwardedProto:
			if !c.trusted {
				continue
			}
			hasXFP = true
		case fXForwardedOther, fXRealIP, fForwarded:
			if !c.trusted {
				continue
			}
		case fOther:
			if rt.stripPreview && equalFold(f.name, rt.previewLower) {
				continue
			}
		}
		w = append(w, f.name...)
		w = append(w, ": "...)
		w = append(w, f.value...)
		w = append(w, "\r\n"...)
	}
	w = append(w, "X-Forwarded-For: "...)
	if c.trusted {
		for i := range req.fields {
			if f := &req.fields[i]; f.id == fXForwardedFor && len(f.value) > 0 {
				w = append(w, f.value...)
				w = append(w, ", "...)
			}
		}
	}
	w = append(w, c.clientIP...)
	if !hasXFH {
		w = append(w, "\r\nX-Forwarded-Host: "...)
		w = append(w, host...)
	}
	if !hasXFP {
		w = append(w, "\r\nX-Forwarded-Proto: http"...)
	}
	w = append(w, "\r\n\r\n"...)
	if !x.consumed {
		c.cr.discard(req.end)
		x.consumed = true
	}

	rem := max(req.contentLength, 0)
	if rem > 0 {
		bodyStarted = true
		take := min(rem, int64(c.cr.buffered()))
		if len(w)+int(take) <= cap(w) {
			w = append(w, c.cr.bytes()[:take]...)
			c.cr.discard(int(take))
			rem -= take
		}
	}
	x.wbuf = w[:0]
	if _, err := uc.nc.Write(w); err != nil {
		return bodyStarted, err
	}
	if rem > 0 {
		if x.path == "" { // the target is overwritten by the body
			x.path = string(pathOf(req.target))
		}
		_ = c.nc.SetReadDeadline(time.Time{})
		c.deadlineCleared = true
		for rem > 0 {
			if c.cr.buffered() == 0 {
				if err := c.cr.fill(); err != nil {
					return true, errClientBody
				}
			}
			p := c.cr.bytes()
			if int64(len(p)) > rem {
				p = p[:rem]
			}
			if _, err := uc.nc.Write(p); err != nil {
				return true, err
			}
			c.cr.discard(len(p))
			rem -= int64(len(p))
		}
	}
	return bodyStarted, nil
}

var errUpstream101 = errors.New("instance switched protocols without being asked")

// readResponseHead reads the instance's response head into x.res, passing
// informational (1xx) responses on to the client.
func (s *Server) readResponseHead(c *fconn, x *exchange, uc *upConn) error {
	rt := s.Router
	if rt.respHeaderTimeout > 0 {
		_ = uc.nc.SetReadDeadline(time.Now().Add(rt.respHeaderTimeout))
		defer uc.nc.SetReadDeadline(time.Time{})
	}
	for {
		n := 0
		for {
			n = findHeadEnd(uc.cr.bytes())
			if n > 0 {
				break
			}
			if n < 0 {
				return errors.New("malformed response head: bare LF")
			}
			if err := uc.cr.fill(); err != nil {
				if err == errBufferFull {
					return errors.New("response head larger than 16 KiB")
				}
				return err
			}
		}
		res := &x.res
		if err := res.parseResponse(uc.cr.bytes()[:n]); err != nil {
			return err
		}
		if res.code >= 200 {
			return nil
		}
		if res.code == http.StatusSwitchingProtocols {
			return errUpstream101
		}
		// 100 Continue, 103 Early Hints: pass on and read on.
		c.writeHead(res, false, false, false)
		c.out.flush()
		uc.cr.discard(n)
	}
}

// Body framings of a response.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// relay writes the response to the client and returns the upstream
// connection to its pool when the exchange ended cleanly.
func (s *Server) relay(c *fconn, x *exchange, uc *upConn, pool *Pool, b *Backend, start time.Time) (code int, stream, keep bool) {
	req, res := &x.req, &x.res
	code = res.code
	b.answered(code)
	if code >= 500 {
		b.failedAnswer()
	} else {
		b.succeeded()
	}
	pool.metrics.count(req.method, code)

	framing := bodyUntilClose
	switch {
	case req.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified:
		framing = bodyNone
	case res.te > 0:
		framing = bodyChunked
	case res.nCL > 0:
		framing = bodyLength
		if res.contentLength == 0 {
			framing = bodyNone
		}
	}
	upKeep := !res.closeConn && !res.http10 && framing != bodyUntilClose
	keep = !req.closeConn && framing != bodyUntilClose && s.keepAlive()
	c.writeHead(res, framing == bodyChunked, !res.hasDate, !keep)
	uc.cr.discard(res.end)

	stream = res.sse && framing != bodyLength
	var fs *fastStream // drainend.go
	if stream {
		fs = &fastStream{client: c.nc, instance: uc.nc}
		st := pool.streams.add(fs)
		defer pool.streams.remove(st)
	}
	var err error
	switch framing {
	case bodyLength:
		err = s.copyN(c, uc, res.contentLength)
	case bodyChunked:
		err = s.copyChunked(c, uc)
	case bodyUntilClose:
		err = s.copyUntilClose(c, uc)
	}
	if fs.endedAtBoundary(err) {
		c.out.writeString("0\r\n\r\n") // a clean end: the client reconnects
		c.out.flush()
		uc.close()
		return code, stream, false
	}
	c.out.flush()
	if err != nil || c.out.err != nil {
		uc.close()
		if err != nil && c.out.err == nil {
			s.Router.log.Warn("upstream error in the response body", "color", pool.color, "instance", b.name,
				"method", req.method, "err", err)
		}
		return code, stream, false
	}
	if upKeep {
		b.conns.put(uc)
	} else {
		uc.close()
	}
	return code, stream, keep
}

// writeHead writes a response head: the status line and the instance's
// fields without the hop-by-hop ones (Transfer-Encoding stays when the
// chunked body is relayed as it is).
func (c *fconn) writeHead(res *head, chunked, addDate, closeConn bool) {
	o := &c.out
	o.writeString("HTTP/1.1 ")
	o.writeCode(res.code)
	if len(res.reason) > 0 {
		o.write(res.reason)
	} else {
		o.writeString(http.StatusText(res.code))
	}
	o.writeString("\r\n")
	for i := range res.fields {
		f := &res.fields[i]
		switch f.id {
		case fConnection, fKeepAlive, fProxyConnection, fTE, fUpgrade, fProxyAuthenticate, fProxyAuthorization:
			continue
		case fTransferEncoding, fTrailer:
			if !chunked {
				continue
			}
		case fContentLength:
			if chunked {
				continue
			}
		}
		if res.nConnTokens > 0 && f.id != fContentLength && f.id != fTransferEncoding && res.connectionNamed(f.name) {
			continue // hop-by-hop by the instance's word; the framing stays, it is relayed as is
		}
		o.write(f.name)
		o.writeString(": ")
		o.write(f.value)
		o.writeString("\r\n")
	}
	if addDate {
		o.writeString("Date: ")
		o.write(c.s.Router.date.get(time.Now()))
		o.writeString("\r\n")
	}
	if closeConn {
		o.writeString("Connection: close\r\n")
	}
	o.writeString("\r\n")
}

// fillUp reads more of the response, first sending the client what is
// pending: the read may block, and a stream's client must not wait on it.
func (s *Server) fillUp(c *fconn, uc *upConn) error {
	if c.out.pending() > 0 {
		c.out.flush()
		if c.out.err != nil {
			return nil // reported through c.out.err
		}
	}
	return uc.cr.fill()
}

func (s *Server) copyN(c *fconn, uc *upConn, n int64) error {
	for n > 0 && c.out.err == nil {
		if uc.cr.buffered() == 0 {
			if err := s.fillUp(c, uc); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			if c.out.err != nil {
				return nil
			}
		}
		p := uc.cr.bytes()
		if int64(len(p)) > n {
			p = p[:n]
		}
		c.out.write(p)
		uc.cr.discard(len(p))
		n -= int64(len(p))
	}
	return nil
}

func (s *Server) copyUntilClose(c *fconn, uc *upConn) error {
	for c.out.err == nil {
		if uc.cr.buffered() == 0 {
			if err := s.fillUp(c, uc); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if c.out.err != nil {
				return nil
			}
		}
		p := uc.cr.bytes()
		c.out.write(p)
		uc.cr.discard(len(p))
	}
	return nil
}

const maxChunkLine = 4096

// line returns the next CRLF-terminated line of the response (with its
// CRLF), still in the read buffer.
func (s *Server) line(c *fconn, uc *upConn) ([]byte, error) {
	for {
		p := uc.cr.bytes()
		for i, ch := range p {
			if ch == '\n' {
				if i == 0 || p[i-1] != '\r' {
					return nil, errors.New("malformed chunked body: bare LF")
				}
				return p[:i+1], nil
			}
		}
		if len(p) > maxChunkLine {
			return nil, errors.New("malformed chunked body: line too long")
		}
		if err := s.fillUp(c, uc); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if c.out.err != nil {
			return nil, c.out.err
		}
	}
}

// copyChunked relays a chunked body as it is, checking its framing so the
// end of the message is known.
func (s *Server) copyChunked(c *fconn, uc *upConn) error {
	for c.out.err == nil {
		ln, err := s.line(c, uc)
		if err != nil {
			return errChunkBoundary{err}
		}
		size, ok := parseChunkSize(ln[:len(ln)-2])
		if !ok {
			return errors.New("malformed chunked body: bad chunk size")
		}
		c.out.write(ln)
		uc.cr.discard(len(ln))
		if size == 0 {
			for { // trailer fields up to the blank line
				ln, err := s.line(c, uc)
				if err != nil {
					return err
				}
				c.out.write(ln)
				uc.cr.discard(len(ln))
				if len(ln) == 2 {
					return nil
				}
			}
		}
		if err := s.copyN(c, uc, size); err != nil {
			return err
		}
		ln, err = s.line(c, uc)
		if err != nil {
			return err
		}
		if len(ln) != 2 {
			return errors.New("malformed chunked body: no CRLF after a chunk")
		}
		c.out.write(ln)
		uc.cr.discard(2)
	}
	return nil
}

// writeStatus answers with a short plain-text error; extra holds more
// header lines, each ending in CRLF.
func (c *fconn) writeStatus(req *head, code int, extra, body string, keep bool, start time.Time) {
	o := &c.out
	o.writeString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n" + extra +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nDate: ")
	o.write(c.s.Router.date.get(start))
	if !keep {
		o.writeString("\r\nConnection: close")
	}
	o.writeString("\r\n\r\n")
	if req.method != http.MethodHead {
		o.writeString(body)
	}
	o.flush()
}

// pathOf is the path of an origin-form target.
func pathOf(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		return target[:i]
	}
	return target
}

// wantsPreviewFast is wantsPreview on a parsed head, with net/http's
// reading: the first preview field decides, and the first cookie of that
// name.
func (rt *Router) wantsPreviewFast(h *head) bool {
	headerSeen, cookieSeen := rt.previewHeader == "", rt.previewCookie == ""
	for i := range h.fields {
		f := &h.fields[i]
		switch {
		case !headerSeen && f.id == fOther && equalFold(f.name, rt.previewLower):
			headerSeen = true
			if truthyBytes(f.value) {
				return true
			}
		case !cookieSeen && f.id == fCookie:
			if val, ok := cookieValue(f.value, rt.previewCookie); ok {
				cookieSeen = true
				if truthyBytes(val) {
					return true
				}
			}
		}
		if headerSeen && cookieSeen {
			return false
		}
	}
	return false
}

func truthyBytes(v []byte) bool { return string(v) == "1" || equalFold(v, "true") }

// cookieValue finds the first cookie called name in the Cookie field value
// v, read exactly as net/http reads it: parts and names trimmed, a part
// without '=' is a cookie with an empty value, a quoted value is unquoted,
// and a value with a byte a cookie cannot hold is skipped.
func cookieValue(v []byte, name string) ([]byte, bool) {
	for len(v) > 0 {
		var part []byte
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			part, v = v, nil
		}
		part = bytes.Trim(part, " \t")
		if len(part) == 0 {
			continue
		}
		n, val := part, []byte(nil)
		if eq := bytes.IndexByte(part, '='); eq >= 0 {
			n, val = part[:eq], part[eq+1:]
		}
		if string(bytes.Trim(n, " \t")) != name {
			continue
		}
		if len(val) > 1 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		ok := true
		for _, c := range val {
			if c < 0x20 || c >= 0x7f || c == '"' || c == ';' || c == '\\' {
				ok = false
				break
			}
		}
		if ok {
			return val, true
		}
	}
	return nil, false
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight (on both paths) until ctx ends.
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
	s.stopReaper()
	return <-fbDone
}

// closeIdle closes the idle connections and returns how many are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
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
		c.state.Store(stateClosed)
		c.nc.Close()
		if uc := c.upstream.Load(); uc != nil {
			uc.nc.Close()
		}
	}
	started := s.lns != nil
	s.mu.Unlock()
	if started {
		s.handoff.Close()
		s.stopReaper()
	}
	return s.Fallback.Close()
}

func (s *Server) stopReaper() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// reap closes upstream connections idle for longer than the idle timeout.
func (s *Server) reap() {
	t := time.NewTicker(max(s.Router.upstreamIdle/2, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			s.Router.CloseIdleConnections()
			return
		case <-t.C:
			for _, p := range s.Router.pools {
				for _, b := range p.backends {
					b.conns.closeIdle(true)
				}
			}
		}
	}
}

// handoffListener feeds connections the fast path hands over to net/http.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

func (l *handoffListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// prefixConn replays the bytes the fast path read before handing over.
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

// dateCache formats the Date field once a second.
type dateCache struct{ p atomic.Pointer[dateValue] }

type dateValue struct {
	sec int64
	b   []byte
}

func (d *dateCache) get(now time.Time) []byte {
	sec := now.Unix()
	if v := d.p.Load(); v != nil && v.sec == sec {
		return v.b
	}
	v := &dateValue{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	d.p.Store(v)
	return v.b
}

// exchangePool lends the per-request scratch space.
type exchangePool struct{ p sync.Pool }

func (ep *exchangePool) get() *exchange {
	if x, _ := ep.p.Get().(*exchange); x != nil {
		return x
	}
	return &exchange{wbuf: make([]byte, 0, clientBufSize+1024)}
}

func (ep *exchangePool) put(x *exchange) {
	x.path, x.consumed = "", false
	ep.p.Put(x)
}
