package main

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// With the fast path the TLS listener accepts and handshakes itself, each
// connection in its own goroutine within the handshake timeout (the
// plain listener's ReadHeaderTimeout, as net/http uses), and then hands it
// on by its ALPN protocol: HTTP/2 to the proxy's HTTP/2 codec (with
// BLUEGREEN_H2=nethttp to net/http, srv), HTTP/1.1 (or none) to the
// proxy's fast codec, acme-tls/1 nowhere (certmagic answered the
// validation in the handshake). Failed handshakes are counted and logged
// at debug level through the certificate manager's error log, as net/http
// reports them, and plain HTTP sent to the TLS port gets net/http's 400.

// serve accepts TLS connections until the listener closes.
func (e *tlsEdge) serve() error {
	var delay time.Duration
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			if e.pending.stopped() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			e.log.Warn("TLS accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go e.serveConn(nc)
	}
}

// serveConn handshakes and serves one connection.
func (e *tlsEdge) serveConn(nc net.Conn) {
	if !e.pending.add(nc) {
		nc.Close()
		return
	}
	tc := tls.Server(nc, e.srv.TLSConfig)
	_ = nc.SetDeadline(time.Now().Add(e.handshakeTimeout))
	err := tc.Handshake()
	_ = nc.SetDeadline(time.Time{})
	e.pending.remove(nc)
	if err != nil {
		e.handshakeFailed(nc, err)
		nc.Close()
		return
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case "h2":
		if e.h2fast {
			_ = e.fast.ServeH2(tc) // it closes tc
			return
		}
		if !e.h2.Deliver(tc) {
			tc.Close()
		}
	case "", "http/1.1":
		_ = e.fast.ServeTLS(tc) // it closes tc
	default: // acme-tls/1: the handshake was the answer
		tc.Close()
	}
}

// handshakeFailed reports a failed handshake as net/http does: plain HTTP
// gets a 400, and one line goes to the error log, which counts it by cause
// (bluegreen_tls_handshakes_total) and logs it at debug level.
func (e *tlsEdge) handshakeFailed(nc net.Conn, err error) {
	reason := err.Error()
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		reason = "client sent an HTTP request to an HTTPS server"
	}
	e.srv.ErrorLog.Printf("http: TLS handshake error from %s: %s", nc.RemoteAddr(), reason)
}

// looksLikeHTTP reports whether a TLS record header is the start of an
// HTTP/1 request (net/http's test).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// stopAccepting closes the listener and the connections still in their
// handshake (they carry no request yet).
func (e *tlsEdge) stopAccepting() {
	e.pending.stop()
	e.ln.Close()
	if e.h2 != nil {
		e.h2.Close()
	}
}

// handshakes are the connections in their TLS handshake.
type handshakes struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

func (h *handshakes) add(nc net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return false
	}
	if h.conns == nil {
		h.conns = make(map[net.Conn]struct{})
	}
	h.conns[nc] = struct{}{}
	return true
}

func (h *handshakes) remove(nc net.Conn) {
	h.mu.Lock()
	delete(h.conns, nc)
	h.mu.Unlock()
}

func (h *handshakes) stopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done
}

// stop closes the connections in their handshake and refuses new ones.
func (h *handshakes) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	for nc := range h.conns {
		nc.Close()
	}
	clear(h.conns)
}
