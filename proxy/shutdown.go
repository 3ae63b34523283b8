package proxy

import "net/http"

// EndKeepAlives makes every response from now on end its connection: it
// carries Connection: close and the connection closes after it, on the fast
// codec and, through the handler EndKeepAlivesHandler wraps, on net/http.
// Connections that are idle stay open (closing one races with a request
// its client may be sending); Shutdown closes them. The graceful stop calls
// it when it turns /readyz to 503, so that by the time the listener closes
// every busy client has reconnected, through its load balancer, to another
// replica.
func (s *Server) EndKeepAlives() { s.h1.EndKeepAlives() }

// EndKeepAlivesHandler wraps the Fallback's handler so that EndKeepAlives
// also ends the keep-alive connections net/http serves: their responses say
// Connection: close, which net/http honours by closing after the response.
func (s *Server) EndKeepAlivesHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.h1.KeepAlivesEnded() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}
