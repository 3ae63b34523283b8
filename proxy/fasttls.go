package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// ServeTLS serves one HTTPS/1.1 connection, whose TLS handshake is done
// (ALPN http/1.1 or none), in the calling goroutine until it closes: on the
// fast codec, like the connections of Serve and with them for Shutdown,
// Close and EndKeepAlives. Its requests are forwarded with
// X-Forwarded-Proto: https, its answers carry HSTS when set, and what the
// codec hands to Fallback arrives there with Request.TLS set. It needs
// the fast path (Router.FastPath); without it, serve TLS with net/http.
func (s *Server) ServeTLS(tc *tls.Conn) error {
	if s.Fallback == nil || s.Router == nil || !s.Router.fast {
		tc.Close()
		return errors.New("proxy: ServeTLS needs Router, Fallback and the fast path")
	}
	s.configure()
	o := h1.ConnOptions{HTTPS: true}
	if s.HSTS != "" {
		o.ResponseFields = "Strict-Transport-Security: " + s.HSTS + "\r\n"
	}
	return s.h1.ServeConn(tc, o)
}

// tlsStateKey carries, in the context of a connection Fallback serves, the
// TLS state of a connection handed over by ServeTLS's codec.
type tlsStateKey struct{}

// tlsConnContext is Fallback's ConnContext: next's, plus the TLS state of
// a connection ServeTLS's codec handed over.
func tlsConnContext(next func(context.Context, net.Conn) context.Context) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		if next != nil {
			ctx = next(ctx, c)
		}
		if st := h1.TLSState(c); st != nil {
			ctx = context.WithValue(ctx, tlsStateKey{}, st)
		}
		return ctx
	}
}

// tlsAware wraps Fallback's handler: a request of a TLS connection the
// codec handed over gets its Request.TLS (so it is forwarded with
// X-Forwarded-Proto: https) and its answer HSTS, as on the codec.
func (s *Server) tlsAware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, _ := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); st != nil {
				r.TLS = st
				if s.HSTS != "" {
					w.Header().Set("Strict-Transport-Security", s.HSTS)
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
