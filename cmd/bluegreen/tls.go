package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/internal/certs"
	"github.com/cryoprotect/bluegreen/proxy"
	"github.com/cryoprotect/bluegreen/proxy/h1"
	"github.com/cryoprotect/bluegreen/state"
)

// publicServer serves the plain listener: the proxy's own server (fast
// path), or net/http when the plain listener must answer ACME HTTP-01
// validations or redirect to HTTPS.
type publicServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// tlsEdge is the TLS listener: HTTP/2 and HTTP/1.1 by ALPN, certificates
// from certs.Manager. With the fast path it accepts and handshakes itself
// (tlsfast.go): HTTPS/1.1 connections go to the proxy's fast codec, HTTP/2
// ones to net/http. Without it net/http serves everything with the router
// as its handler. A nil *tlsEdge (TLS off) is valid and does nothing.
type tlsEdge struct {
	ln    net.Listener
	srv   *http.Server // net/http: HTTP/2, and HTTP/1.1 without the fast path
	mgr   *certs.Manager
	plain *http.Server // nil: the plain listener keeps the proxy's server
	log   *slog.Logger

	fast             *proxy.Server // nil: net/http serves HTTP/1.1 too
	handshakeTimeout time.Duration
	h2               *h1.ConnQueue // handshaken HTTP/2 connections for srv
	h2fast           bool          // HTTP/2 on the proxy's own codec (fast.ServeH2), not srv
	pending          handshakes
}

// newTLSEdge binds the TLS listener and loads the certificates; nil when
// BLUEGREEN_TLS_LISTEN is empty. pub is the proxy's server of the plain
// listener: its fast codec also serves HTTPS/1.1, and its answers end
// keep-alives at shutdown (on HTTP/2: GOAWAY). pubLn is the bound plain
// listener (where ACME HTTP-01 validations arrive); with an etcd state
// store, ACME certificates are kept in etcd for the whole fleet.
func newTLSEdge(cfg Config, log *slog.Logger, reg prometheus.Registerer, pub *proxy.Server, pubLn net.Listener, store state.Store) (*tlsEdge, error) {
	if cfg.TLSListen == "" {
		return nil, nil
	}
	router := pub.EndKeepAlivesHandler(pub.Router)
	m, err := certs.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.TLSListen)
	if err != nil {
		return nil, fmt.Errorf("TLS listener %sTLS_LISTEN=%q: %w", envPrefix, cfg.TLSListen, err)
	}
	ccfg := certs.Config{Pairs: cfg.tls.pairs, Metrics: m, Log: log.With("log", "tls")}
	if len(cfg.tls.domains) > 0 {
		ccfg.ACME = &certs.ACME{
			Domains: cfg.tls.domains, Email: cfg.ACMEEmail, CA: cfg.ACMECA, Roots: cfg.tls.roots,
			Storage: cfg.ACMEStorage, Store: acmeFleetStore(store), HTTPAddr: pubLn.Addr().String(), TLSAddr: ln.Addr().String(),
		}
	}
	mgr, err := certs.New(ccfg)
	if err != nil {
		ln.Close()
		return nil, startupError{fmt.Errorf("%sTLS_CERT_FILE=%q %sTLS_KEY_FILE=%q: %w", envPrefix, cfg.TLSCertFile, envPrefix, cfg.TLSKeyFile, err)}
	}
	e := &tlsEdge{ln: ln, mgr: mgr, log: log, handshakeTimeout: cmp.Or(cfg.ReadHeaderTimeout, 10*time.Second)}
	if pub.Router.FastPath() {
		e.fast = pub
		pub.HSTS = cfg.HSTS
		e.h2 = h1.NewConnQueue(ln.Addr())
		e.h2fast = cfg.H2 != "nethttp"
	}
	var h http.Handler = router
	if cfg.HSTS != "" {
		h = hsts(cfg.HSTS, h)
	}
	e.srv = &http.Server{
		Handler:           h,
		TLSConfig:         mgr.TLSConfig(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          mgr.ErrorLog(log),
	}
	if cfg.HTTPRedirect || ccfg.ACME != nil {
		var ph http.Handler = router
		if cfg.HTTPRedirect {
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			ph = redirect(port)
		}
		e.plain = &http.Server{
			Handler:           mgr.HTTPChallenge(ph),
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
	}
	return e, nil
}

// public returns what serves the plain listener.
func (e *tlsEdge) public(pub *proxy.Server) publicServer {
	if e == nil || e.plain == nil {
		return pub
	}
	return e.plain
}

// addr is the bound TLS address ("" when off).
func (e *tlsEdge) addr() string {
	if e == nil {
		return ""
	}
	return e.ln.Addr().String()
}

// start serves TLS, watches the certificate files (on change; SIGHUP:
// reload) and runs ACME until bg ends; serve errors go to errc.
func (e *tlsEdge) start(bg context.Context, wg *sync.WaitGroup, errc chan<- error) {
	if e == nil {
		return
	}
	// The certificates in ACME storage are in use before the first
	// handshake (connections wait in the backlog meanwhile).
	loaded := make(chan struct{})
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		e.mgr.LoadStored(ctx)
		cancel()
		close(loaded)
		e.mgr.Run(bg)
	})
	if e.fast == nil {
		go func() { <-loaded; errc <- e.srv.ServeTLS(e.ln, "", "") }()
	} else {
		go func() { _ = e.srv.Serve(e.h2) }() // ends when srv shuts down
		go func() { <-loaded; errc <- e.serve() }()
	}
	e.log.Info("TLS listener serving", "listen", e.addr(), "redirect", e.plain != nil)
}

// shutdown starts stopping the TLS listener like the plain one, at the
// same time: no new connections, HTTP/2 connections get GOAWAY, requests
// in flight finish within ctx (then they are cut). The returned func waits
// for it.
func (e *tlsEdge) shutdown(ctx context.Context) (wait func()) {
	if e == nil {
		return func() {}
	}
	if e.fast != nil {
		e.stopAccepting() // else srv.Shutdown closes the listener
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if e.fast != nil && e.plain != nil { // else the plain listener's stop waits for it
			fastDone := make(chan error, 1)
			go func() { fastDone <- e.fast.Shutdown(ctx) }()
			defer func() { e.cutAfterDrain(<-fastDone, e.fast.Close) }()
		}
		e.cutAfterDrain(e.srv.Shutdown(ctx), e.srv.Close)
	}()
	return func() { <-done }
}

// cutAfterDrain closes what err (of a Shutdown) says is still running.
func (e *tlsEdge) cutAfterDrain(err error, closeFn func() error) {
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		e.log.Warn("TLS requests still running at the end of the drain timeout were cut", "err", err)
		closeFn()
	}
}

// close stops the TLS listener at once.
func (e *tlsEdge) close() {
	if e == nil {
		return
	}
	e.srv.Close()
	if e.fast != nil {
		e.stopAccepting()
		if e.plain != nil { // else the plain listener's Close cuts its connections
			e.fast.Close()
		}
	}
}

// hsts sets Strict-Transport-Security on every HTTPS answer.
func hsts(value string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", value)
		next.ServeHTTP(w, r)
	})
}

// redirect answers 308 to the same host and path on https://, at the TLS
// listener's port (left out when it is 443).
func redirect(tlsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			http.Error(w, "400 bad request: no Host header to redirect to", http.StatusBadRequest)
			return
		}
		if tlsPort != "443" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), tlsPort)
		} else if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// reload reads the certificate files again (on SIGHUP).
func (e *tlsEdge) reload() {
	n, err := e.mgr.Reload()
	e.log.Info("SIGHUP: certificates reloaded", "replaced", n, "err", err)
}
