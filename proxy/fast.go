package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/h1"
	"github.com/cryoprotect/bluegreen/proxy/h2"
)

// Server serves the public listener. Plain HTTP/1.1 requests (one of the
// usual methods, an origin-form target, a Content-Length body or none, no
// upgrade, no Expect but 100-continue) take the fast codec (package h1),
// which parses the request itself and relays it over a keep-alive
// connection to the instance in the same goroutine: no per-request
// goroutines, no per-request
// allocations, and an idle connection holds no buffers. Any other
// connection (an upgrade, a chunked request body, HTTP/1.0, an
// absolute-form target, a head larger than 8 KiB, anything malformed) is
// handed, with the bytes already read, to Fallback, an http.Server whose
// Handler is the Router; from then on net/http serves that connection.
// Both codecs run the same request pipeline (pipeline.go): routing,
// balancing, retries, outlier detection, draining, metrics and the access
// log.
//
// ServeTLS serves the HTTPS/1.1 connections of a TLS listener, after their
// handshake, on the same codec (fasttls.go), and ServeH2 its HTTP/2
// connections on the proxy's HTTP/2 codec (package h2), whose streams run
// the same pipeline (fast_h2.go).
//
// When the Router cannot use the fast codec (an https instance, an
// instance URL with a query, or a custom Transport), Serve is
// Fallback.Serve.
type Server struct {
	Router   *Router
	Fallback *http.Server // required; its Handler should be Router
	// ReadHeaderTimeout bounds the time from a request's first byte to the
	// end of its head; default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without a request for
	// that long; default 120s.
	IdleTimeout time.Duration
	// HSTS, when set, is the Strict-Transport-Security value of every
	// answer on a connection given to ServeTLS.
	HSTS string

	once sync.Once
	h1   h1.Server
	h2   h2.Server // HTTP/2 connections of a TLS listener (fast_h2.go)
}

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	if s.Fallback == nil || s.Router == nil {
		return errors.New("proxy: Server needs Router and Fallback")
	}
	rt := s.Router
	if !rt.fast {
		return serveNetHTTP(s.Fallback, ln, rt)
	}
	s.configure()
	return s.h1.Serve(ln)
}

// configure sets up the fast codec from the Router, once (Serve and
// ServeTLS may both run).
func (s *Server) configure() {
	s.once.Do(func() {
		rt := s.Router
		h := &s.h1
		h.Handler = fastHandler{rt}
		h.Fallback = s.Fallback
		s.Fallback.ConnContext = tlsConnContext(s.Fallback.ConnContext)
		s.Fallback.Handler = s.tlsAware(s.Fallback.Handler)
		h.Buffers = &rt.bufs
		h.Log = rt.log
		h.ReadHeaderTimeout = s.ReadHeaderTimeout
		h.IdleTimeout = s.IdleTimeout
		h.ClientBodyTimeout = rt.clientBodyTimeout
		h.ClientSendTimeout = rt.clientSendTimeout
		h.ResponseHeaderTimeout = rt.respHeaderTimeout
		if len(rt.trusted) > 0 {
			h.Trusted = rt.trustedPeer
		}
		if rt.stripPreview {
			h.StripField = rt.previewLower
		}
		h.HandOff = rt.needsRolloutID
		h.Refused = rt.refused
		h.Reap = rt.reapUpstreams
		h.ReapEvery = max(rt.upstreamIdle/2, time.Second)
		s.configureH2()
	})
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight (on both codecs) until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.Router == nil || !s.Router.fast {
		return s.Fallback.Shutdown(ctx)
	}
	s.configure() // Serve or ServeTLS may not have run
	h2done := make(chan error, 1)
	go func() { h2done <- s.h2.Shutdown(ctx) }()
	err := s.h1.Shutdown(ctx)
	return errors.Join(err, <-h2done)
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	if s.Router == nil || !s.Router.fast {
		return s.Fallback.Close()
	}
	s.configure() // Serve or ServeTLS may not have run
	s.h2.Close()
	return s.h1.Close()
}

// reapUpstreams closes the fast codec's instance connections: those idle
// for too long, or all idle ones. Every reap (Server.ReapEvery: half the
// upstream idle timeout, at least a second) also reports the instances
// that sent bytes after an answer's end since the last: a line each, with
// the count, where nginx writes one per answer ("upstream sent more data
// than specified").
func (rt *Router) reapUpstreams(expiredOnly bool) {
	for _, p := range rt.pools {
		for _, b := range p.backends {
			if n := b.conns.TakeStrays(); n > 0 {
				rt.log.Warn("instance sent bytes after the end of its answers (more than their Content-Length, or a body to a HEAD, 204 or 304): "+
					"what the clients got may be cut short of what it meant; each such connection was closed",
					"color", p.color, "instance", b.name, "connections", n)
			}
		}
	}
	if !expiredOnly {
		rt.CloseIdleConnections()
		return
	}
	for _, p := range rt.pools {
		for _, b := range p.backends {
			b.conns.CloseIdle(true)
			if b.direct != nil {
				b.direct.closeIdle(true)
			}
		}
	}
}

// fastHandler runs the pipeline for requests of the fast codec.
type fastHandler struct{ rt *Router }

// ServeH1 routes, picks, attempts (retrying where the policy allows) and
// finishes one request the fast codec parsed.
func (h fastHandler) ServeH1(c *h1.Conn, x *h1.Exchange) bool {
	rt := h.rt
	req := &x.Req
	preview := rt.previewable() && req.WantsPreview(rt.previewLower, rt.previewCookie) && rt.previewAllowed(c.Remote())
	var key []byte
	if !preview && rt.rolloutRunning() {
		key = rt.rolloutKeyH1(req, c.Remote())
	}
	pool := rt.route(preview, key)
	o := outcome{pool: pool, method: req.Method(), start: x.Start, remote: c.Remote(), proto: "HTTP/1.1"}
	if rt.access != nil {
		o.path = x.Path()
	}
	b := pool.Pick()
	if b == nil {
		o.status = http.StatusServiceUnavailable
		rt.finish(&o) // an error answer is counted before the client can read it
		keep := c.KeepAfterError(x, false)
		ok := c.WriteError(x, o.status, c.ResponseFields()+"Retry-After: "+rt.retryAfter+"\r\nCache-Control: no-store\r\n", unavailableBody(pool), keep)
		return keep && ok
	}
	pool.begin(b)
	o.b, o.inst = b, b
	hasBody := req.ContentLength() > 0
	fresh := false
	for try := 0; ; try++ {
		// A request without a body takes a pooled connection unchecked: the
		// look at it is folded into the write of the request (h1.ErrStaleConn).
		var uc *h1.UpConn
		var err error
		if hasBody {
			uc, err = b.conns.Get(fresh)
		} else {
			uc, err = b.conns.GetUnchecked(fresh)
		}
		sent := false
		if err == nil {
			sent, err = c.Send(x, uc, b.conns.Prefix())
			if err == nil {
				err = c.ReadResponseHead(x, uc)
			}
			if err == nil {
				o.inst = b
				return h.relay(c, x, uc, b, &o)
			}
			b.conns.Done(uc)
			if err == h1.ErrStaleConn {
				try-- // nothing was sent: not an attempt
				continue
			}
		}
		next, fr := rt.attemptOver(&o, b, err, attempt{
			method: o.method, hasBody: hasBody, bodySent: sent, firstTry: try == 0, try: try, start: o.start,
		}, x.Path)
		if next != nil {
			b, fresh = next, fr
			continue
		}
		keep := false
		switch {
		case o.fault == instanceFault:
			keep = c.KeepAfterError(x, sent)
			keep = c.WriteError(x, o.status, c.ResponseFields(), http.StatusText(o.status)+"\n", keep) && keep
		case o.status != 499: // 400, 408, or the proxy's own 503 (localFault): the client is told, and the connection closes
			c.KeepAfterError(x, true)
			c.WriteError(x, o.status, c.ResponseFields(), http.StatusText(o.status)+"\n", false)
		}
		return keep
	}
}

// relay writes the instance's answer, whose head is read, to the client and
// finishes the request.
func (h fastHandler) relay(c *h1.Conn, x *h1.Exchange, uc *h1.UpConn, b *Backend, o *outcome) bool {
	r := c.WriteResponseHead(x, uc)
	b.observe(r.Code)
	o.status = r.Code
	if r.Stream {
		o.longLived = true
		st := o.pool.streams.add(c.StreamCloser(uc))
		defer o.pool.streams.remove(st)
	}
	keep, err := c.RelayBody(&r, uc, b.conns)
	switch {
	case c.SendStalled():
		// The client took no byte of its answer for ClientSendTimeout and
		// was cut: its timeout, as on HTTP/2.
		o.status, o.fault, o.kind = 499, clientFault, ClientTimeout
	case c.AnswerCut():
		// The client left before it had the whole answer: its doing.
		o.status, o.fault, o.kind = 499, clientFault, ClientGone
	}
	if kind := b.bodyEnded(r.Code, err, c.AnswerCut()); err != nil {
		// The head was relayed, so the client keeps its status, but the
		// instance broke its answer: charged to it like any failed attempt.
		o.broken = true
		h.rt.log.Warn("upstream error in the response body", "color", o.pool.color, "instance", b.name,
			"method", o.method, "kind", kind, "err", err)
	}
	h.rt.finish(o)
	return keep
}
