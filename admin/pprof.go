package admin

import (
	"net/http"
	"net/http/pprof"

	"github.com/go-chi/chi/v5"
)

// pprofProfiles are the named runtime profiles served under /debug/pprof/.
var pprofProfiles = []string{"heap", "goroutine", "allocs", "block", "mutex", "threadcreate"}

// mountPprof serves net/http/pprof's handlers under /debug/pprof/ on r. The
// handlers are registered here explicitly, never on http.DefaultServeMux.
// Every request under /debug/pprof, GET included and unknown paths too, needs
// the bearer token; without a configured token every one is refused.
func (a *api) mountPprof(r chi.Router) {
	r.Route("/debug/pprof", func(r chi.Router) {
		r.Use(a.requireToken)
		r.Get("/", func(w http.ResponseWriter, r *http.Request) {
			// Mounted at /debug/pprof, this also matches the path without
			// the slash; the index's links are relative, so redirect.
			if r.URL.Path != "/debug/pprof/" {
				u := *r.URL
				u.Path = "/debug/pprof/"
				http.Redirect(w, r, u.RequestURI(), http.StatusMovedPermanently)
				return
			}
			pprof.Index(w, r)
		})
		r.Get("/cmdline", pprof.Cmdline)
		r.Get("/profile", pprof.Profile)
		r.Get("/symbol", pprof.Symbol)
		r.Post("/symbol", pprof.Symbol) // go tool pprof looks symbols up with a POST
		r.Get("/trace", pprof.Trace)
		for _, name := range pprofProfiles {
			r.Get("/"+name, pprof.Handler(name).ServeHTTP)
		}
	})
}
