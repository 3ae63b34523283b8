// Package admin is the HTTP face of the control plane: status, cutover,
// rollback, history, liveness, readiness and metrics, on their own listener.
// Mutating calls need a bearer token when one is configured; the optional
// profiling endpoints under /debug/pprof/ always need it.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/proxy/stats"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// MaxBodyBytes bounds a mutating request's body.
const MaxBodyBytes = 64 << 10

// maxReason bounds the reason recorded in history.
const maxReason = 1024

// Controller is what the admin API drives; *rollout.Controller implements it.
type Controller interface {
	State() state.State
	Cutover(ctx context.Context, req rollout.Request) (rollout.Result, error)
	Rollback(ctx context.Context, req rollout.Request) (rollout.Result, error)
}

// Config configures the admin handler.
type Config struct {
	// Token, when not empty, is required as "Authorization: Bearer <token>"
	// on every mutating call.
	Token      string
	Controller Controller
	Health     rollout.HealthView
	Colors     [2]string
	// Applied reports the colour and generation the data plane routes by.
	Applied func() (color string, generation uint64)
	// Ready reports whether the proxy should receive traffic: started, not
	// shutting down, and the active colour has a healthy instance.
	Ready    func() (bool, string)
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	Replica  string
	Version  string
	// Store, when set, reports the state store's kind and reachability.
	Store func() StoreStatus
	// Rollouts, when set, serves the progressive-rollout endpoints under
	// /admin/rollout.
	Rollouts Rollouts
	// Pprof serves net/http/pprof's handlers under /debug/pprof/. Every
	// request there needs the token, GET included; with no Token set they
	// are all refused.
	Pprof bool
	// Stats, when set, feeds GET /admin/stats and the status page's traffic.
	Stats *stats.Recorder
	// LoopbackOnly: the listener is on a loopback address. Without a
	// Token, every request must then name this machine in Host (localHost:
	// localhost, a name under .localhost, a loopback IP, or 0.0.0.0): a
	// page on a site whose name was made to resolve to 127.0.0.1 (DNS
	// rebinding) is the listener's own origin to the browser, and browsers
	// send no Sec-Fetch-Site to such a name, so this is what keeps it from
	// reading the status, history, metrics and page, and from switching
	// colours. With a token any name is answered (the status page behind a
	// reverse proxy that passes its own): a rebinding page has no token to
	// send for a switch, but reads need none.
	LoopbackOnly bool
}

// StoreStatus is the state store as one replica sees it.
type StoreStatus struct {
	Kind string `json:"kind"` // "file" or "etcd"
	Up   bool   `json:"up"`   // the last operation or probe reached the store
	// Leader is set in a fleet: whether this replica runs auto-rollback.
	Leader *bool `json:"leader,omitempty"`
}

type api struct {
	cfg       Config
	tokenHash [sha256.Size]byte
	origins   *http.CrossOriginProtection
}

// New returns the admin handler.
func New(cfg Config) http.Handler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &api{cfg: cfg, origins: http.NewCrossOriginProtection()}
	if cfg.Token != "" {
		a.tokenHash = sha256.Sum256([]byte(cfg.Token))
	}
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
	})
	r.Get("/healthz", a.healthz)
	r.Get("/readyz", a.readyz)
	if cfg.Gatherer != nil {
		r.Handle("/metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	r.Route("/admin", func(r chi.Router) {
		r.Get("/status", a.status)
		r.Get("/history", a.history)
		r.Get("/stats", a.statsHandler)
		r.Group(func(r chi.Router) {
			r.Use(a.mutation)
			r.Post("/cutover", a.switcher(false))
			r.Post("/rollback", a.switcher(true))
		})
		if cfg.Rollouts != nil {
			a.mountRollout(r)
		}
	})
	newUI(a).mount(r)
	if cfg.Pprof {
		a.mountPprof(r)
		cfg.Log.Info("profiling enabled on the admin listener", "path", "/debug/pprof/", "auth", cfg.Token != "")
	}
	return a.loopbackHostOnly(r)
}

// loopbackHostOnly refuses, on a loopback listener without a token, a
// request whose Host does not name this machine (see Config.LoopbackOnly).
func (a *api) loopbackHostOnly(next http.Handler) http.Handler {
	if !a.cfg.LoopbackOnly || a.cfg.Token != "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "" && !localHost(r.Host) { // browsers always send one
			a.cfg.Log.Warn("admin request refused: Host is not a loopback name", "method", r.Method, "path", r.URL.Path,
				"host", r.Host, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "foreign_host", fmt.Sprintf(
				"this admin listener is on a loopback address and has no token: it answers requests to localhost or a loopback address only, not to %q (set BLUEGREEN_ADMIN_TOKEN to reach it through another name)", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// localHost reports whether a request's Host names this machine in a way
// no rebinding page can: a loopback name or address (LoopbackHost), a name
// under .localhost (browsers resolve those to loopback themselves, RFC
// 6761), or 0.0.0.0 or [::], which clients on Linux reach this machine
// through (curl http://0.0.0.0:8081/...): an address, so a page calling it
// is cross-origin, kept from switches by the Origin check and from reads
// by the browser.
func localHost(hostport string) bool {
	if LoopbackHost(hostport) {
		return true
	}
	host := hostOf(hostport)
	ip := net.ParseIP(host)
	return strings.HasSuffix(host, ".localhost") || ip != nil && ip.IsUnspecified()
}

// hostOf is the host of host[:port], lower-case, without brackets or a
// final dot.
func hostOf(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
}

// auth guards the mutating calls: it needs the token when one is set.
func (a *api) auth(next http.Handler) http.Handler {
	guarded := a.requireToken(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Token == "" {
			next.ServeHTTP(w, r)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// requireToken lets a request through only with the right bearer token; with
// no token configured it refuses every request. A refusal is logged without
// the credentials that were sent.
func (a *api) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if a.cfg.Token == "" || !ok || subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) != 1 {
			a.cfg.Log.Warn("admin request refused: missing or wrong token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="bluegreen"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// mutation guards the calls that change state (switches and rollouts):
// a browser may make them only from the admin listener's own origin, the
// token is needed when one is set, and options come in the body only.
func (a *api) mutation(next http.Handler) http.Handler {
	return a.sameOrigin(a.auth(bodyOnly(next)))
}

// sameOrigin refuses a state-changing request that a browser sends from
// another site (Sec-Fetch-Site, or an Origin that is not the request's
// Host): without a token, any page the operator opens could otherwise
// switch colours with a form posted to the loopback admin listener, since
// a switch needs no body. Clients that are not browsers (curl, the CLI, CI
// jobs) send neither field and pass.
// (A rebinding page, whose name resolves to 127.0.0.1, is refused before,
// by loopbackHostOnly.)
func (a *api) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.origins.Check(r) != nil {
			a.cfg.Log.Warn("admin request refused: sent by a browser from another site", "method", r.Method, "path", r.URL.Path,
				"host", r.Host, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "cross_origin", "a browser may call "+r.URL.Path+" only from the admin listener's own pages")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LoopbackHost reports whether host[:port] (a Host field, a listen
// address) names this machine by a loopback name: localhost, or a
// loopback IP.
func LoopbackHost(hostport string) bool {
	host := hostOf(hostport)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bodyOnly refuses a mutating call that carries a query string: the
// calls take their options in a JSON body only, and a `?to=green` that
// was ignored would make a cutover without a body flip to whichever colour
// is not active, perhaps away from green.
func bodyOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			name := r.URL.RawQuery
			if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
				name = strings.Join(slices.Sorted(maps.Keys(q)), ", ")
			}
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf(
				"%s takes no query parameters (got %q): send its options as a JSON body, e.g. {\"to\":\"green\"}", r.URL.Path, name))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ok, why := a.cfg.Ready()
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// Status is the answer of GET /admin/status and of a switch.
type Status struct {
	Changed           *bool                  `json:"changed,omitempty"`
	Active            string                 `json:"active"`
	Previous          string                 `json:"previous,omitempty"`
	Generation        uint64                 `json:"generation"`
	AppliedGeneration uint64                 `json:"applied_generation"`
	ChangedAt         time.Time              `json:"changed_at"`
	Replica           string                 `json:"replica,omitempty"`
	Version           string                 `json:"version,omitempty"`
	Colors            map[string]ColorStatus `json:"colors"`
	Store             *StoreStatus           `json:"store,omitempty"`
}

// ColorStatus is the health of one colour.
type ColorStatus struct {
	Healthy   int                     `json:"healthy"`
	Total     int                     `json:"total"`
	Instances []health.InstanceStatus `json:"instances"`
}

func (a *api) snapshot(st state.State) Status {
	_, applied := a.cfg.Applied()
	s := Status{
		Active: st.Active, Previous: st.Previous, Generation: st.Generation,
		AppliedGeneration: applied, ChangedAt: st.ChangedAt,
		Replica: a.cfg.Replica, Version: a.cfg.Version,
		Colors: make(map[string]ColorStatus, 2),
	}
	for _, c := range a.cfg.Colors {
		inst := a.cfg.Health.Instances(c)
		healthy := 0
		for _, i := range inst {
			if i.Healthy {
				healthy++
			}
		}
		s.Colors[c] = ColorStatus{Healthy: healthy, Total: len(inst), Instances: inst}
	}
	if a.cfg.Store != nil {
		ss := a.cfg.Store()
		s.Store = &ss
	}
	return s
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.snapshot(a.cfg.Controller.State()))
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit must be a positive integer")
			return
		}
		limit = n
	}
	h := a.cfg.Controller.State().History
	out := make([]state.Event, 0, len(h))
	for i := len(h) - 1; i >= 0 && (limit == 0 || len(out) < limit); i-- {
		out = append(out, h[i])
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": out})
}

// SwitchRequest is the optional body of POST /admin/cutover and /admin/rollback.
type SwitchRequest struct {
	To         string  `json:"to"`
	Force      bool    `json:"force"`
	Reason     string  `json:"reason"`
	Generation *uint64 `json:"generation"`
	Trigger    string  `json:"trigger"`
}

func (a *api) switcher(rollback bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body larger than %d bytes", MaxBodyBytes))
				return
			}
			writeError(w, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
			return
		}
		req, err := parseSwitch(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		rr := rollout.Request{To: req.To, Force: req.Force, Reason: req.Reason, Trigger: req.Trigger, Generation: req.Generation}
		var res rollout.Result
		if rollback {
			res, err = a.cfg.Controller.Rollback(r.Context(), rr)
		} else {
			res, err = a.cfg.Controller.Cutover(r.Context(), rr)
		}
		if err != nil {
			status, code := errorStatus(err)
			writeError(w, status, code, err.Error())
			return
		}
		s := a.snapshot(res.State)
		s.Changed = &res.Changed
		writeJSON(w, http.StatusOK, s)
	}
}

// parseSwitch decodes an optional switch body strictly.
func parseSwitch(body []byte) (SwitchRequest, error) {
	var req SwitchRequest
	if err := decodeStrict(body, &req, "switch request"); err != nil {
		return req, err
	}
	if len(req.Reason) > maxReason {
		return req, fmt.Errorf("reason longer than %d bytes", maxReason)
	}
	switch req.Trigger {
	case "", state.TriggerAPI, state.TriggerCLI:
	default:
		return req, fmt.Errorf("trigger must be %q or %q", state.TriggerAPI, state.TriggerCLI)
	}
	return req, nil
}

func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, rollout.ErrInvalid):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, rollout.ErrUnhealthy):
		return http.StatusConflict, "unhealthy"
	case errors.Is(err, rollout.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, rollout.ErrNoPrevious):
		return http.StatusConflict, "no_previous"
	case errors.Is(err, rollout.ErrRolloutRunning):
		return http.StatusConflict, "rollout_running"
	case errors.Is(err, rollout.ErrNoRollout):
		return http.StatusConflict, "no_rollout"
	case errors.Is(err, rollout.ErrStore):
		return http.StatusServiceUnavailable, "store_unavailable"
	}
	return http.StatusInternalServerError, "internal"
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
