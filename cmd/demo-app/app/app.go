// Package app is the demo application that plays one colour, blue or green, of
// a blue/green deployment. It is an http.Handler, so the demo-app program, the
// proxy's demo subcommand and tests can all run it in-process.
//
// Routes:
//
//	GET  /                any path not listed below: colour, version, host
//	GET  /health          200 while healthy, 503 while failing
//	POST /health/fail     make /health fail
//	POST /health/recover  make /health pass again
//	GET  /ws              WebSocket echo, greeting "hello from <color>" first
//	GET  /events          Server-Sent Events "data: <color> <n>" (?count=N stops after N)
//	GET  /slow?d=500ms    wait d (at most 60s), then answer like /
//	GET  /status/{code}   answer with that status code (200-599)
//	GET  /version         JSON colour and version
//
// Every response carries the header X-Deployment-Color.
package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Defaults applied by New to the zero values of Config.
const (
	DefaultColor          = "blue"
	DefaultVersion        = "dev"
	DefaultStreamInterval = time.Second
)

// MaxSlow is the longest delay /slow waits for; larger values of d are capped.
const MaxSlow = 60 * time.Second

// ColorHeader is the response header that names the colour that answered.
const ColorHeader = "X-Deployment-Color"

// VersionHeader is the response header that carries the app's version.
const VersionHeader = "X-App-Version"

// Config describes one instance of the demo application.
type Config struct {
	// Color is the colour the instance plays; empty means DefaultColor.
	Color string
	// Version is the version it reports; empty means DefaultVersion.
	Version string
	// StreamInterval is the time between two events of /events;
	// zero or negative means DefaultStreamInterval.
	StreamInterval time.Duration
}

// App is the demo application. It starts healthy.
//
// An App is safe for concurrent use: ServeHTTP, SetHealthy, Healthy and
// CloseStreams may be called from any goroutine at any time. Its configuration
// does not change after New; only the health flag and the closed-streams state
// do, and both are held in atomics. An App must not be copied after New.
type App struct {
	color    string
	version  string
	hostname string
	interval time.Duration
	log      *slog.Logger
	mux      *http.ServeMux

	healthy atomic.Bool

	// streams is cancelled by CloseStreams; long-lived handlers watch it.
	streams      context.Context
	closeStreams context.CancelFunc
}

// New returns a healthy App for cfg. A nil log discards log records.
func New(cfg Config, log *slog.Logger) *App {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Color == "" {
		cfg.Color = DefaultColor
	}
	if cfg.Version == "" {
		cfg.Version = DefaultVersion
	}
	if cfg.StreamInterval <= 0 {
		cfg.StreamInterval = DefaultStreamInterval
	}
	host, err := os.Hostname()
	if err != nil {
		log.Warn("cannot read host name", "err", err)
		host = "unknown"
	}
	streams, closeStreams := context.WithCancel(context.Background())
	a := &App{
		color:        cfg.Color,
		version:      cfg.Version,
		hostname:     host,
		interval:     cfg.StreamInterval,
		log:          log.With("color", cfg.Color),
		mux:          http.NewServeMux(),
		streams:      streams,
		closeStreams: closeStreams,
	}
	a.healthy.Store(true)

	a.mux.HandleFunc("GET /", a.handleInfo)
	a.mux.HandleFunc("GET /health", a.handleHealth)
	a.mux.HandleFunc("POST /health/fail", a.handleSetHealth(false))
	a.mux.HandleFunc("POST /health/recover", a.handleSetHealth(true))
	a.mux.HandleFunc("GET /ws", a.handleWebSocket)
	a.mux.HandleFunc("GET /events", a.handleEvents)
	a.mux.HandleFunc("GET /slow", a.handleSlow)
	a.mux.HandleFunc("GET /status/{code}", a.handleStatus)
	a.mux.HandleFunc("GET /version", a.handleVersion)
	return a
}

// ServeHTTP answers r with the route that matches it and sets ColorHeader on
// every response.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(ColorHeader, a.color)
	w.Header().Set(VersionHeader, a.version)
	a.mux.ServeHTTP(w, r)
}

// SetHealthy makes /health pass (ok) or fail. A change is logged once.
func (a *App) SetHealthy(ok bool) {
	if a.healthy.Swap(ok) != ok {
		a.log.Info("health changed", "healthy", ok)
	}
}

// Healthy reports whether /health passes.
func (a *App) Healthy() bool { return a.healthy.Load() }

// CloseStreams ends the open WebSocket connections (with status "going away")
// and event streams, and makes new ones end at once. Plain requests, /slow
// included, are not affected. It is meant for http.Server.RegisterOnShutdown,
// since Shutdown neither waits for nor ends such connections by itself.
// Calls after the first do nothing.
func (a *App) CloseStreams() { a.closeStreams() }

// info is the answer of / and /slow.
type info struct {
	Color    string `json:"color"`
	Version  string `json:"version"`
	Hostname string `json:"hostname"`
	Path     string `json:"path"`
}

func (a *App) handleInfo(w http.ResponseWriter, r *http.Request) {
	a.writeInfo(w, r)
}

func (a *App) writeInfo(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r.Header.Get("Accept")) {
		writeJSON(w, http.StatusOK, info{Color: a.color, Version: a.version, Hostname: a.hostname, Path: r.URL.Path})
		return
	}
	writeText(w, http.StatusOK, fmt.Sprintf("color=%s version=%s host=%s\n", a.color, a.version, a.hostname))
}

// healthStatus is the answer of /health and of the calls that change it.
type healthStatus struct {
	Status string `json:"status"`
	Color  string `json:"color"`
}

func (a *App) writeHealth(w http.ResponseWriter) {
	if a.Healthy() {
		writeJSON(w, http.StatusOK, healthStatus{Status: "ok", Color: a.color})
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, healthStatus{Status: "failing", Color: a.color})
}

func (a *App) handleHealth(w http.ResponseWriter, _ *http.Request) {
	a.writeHealth(w)
}

func (a *App) handleSetHealth(ok bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		a.SetHealthy(ok)
		status := "ok"
		if !ok {
			status = "failing"
		}
		// 200 either way: the call succeeded, whatever state it set.
		writeJSON(w, http.StatusOK, healthStatus{Status: status, Color: a.color})
	}
}

func (a *App) handleWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Browsers reach the app through the proxy, whose Origin differs from
		// the Host the app sees. The echo holds no state or credentials that
		// a cross-origin page could abuse.
		InsecureSkipVerify: true,
	})
	if err != nil {
		// Accept has already answered the client.
		a.log.Debug("websocket handshake failed", "err", err)
		return
	}
	defer c.CloseNow()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(a.streams, func() {
		c.Close(websocket.StatusGoingAway, "server shutting down")
	})
	defer stop()

	a.log.Debug("websocket open", "remote", r.RemoteAddr)
	if err := c.Write(ctx, websocket.MessageText, []byte("hello from "+a.color)); err != nil {
		return
	}
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			a.log.Debug("websocket closed", "remote", r.RemoteAddr, "err", err)
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			a.log.Debug("websocket write failed", "remote", r.RemoteAddr, "err", err)
			return
		}
	}
}

func (a *App) handleEvents(w http.ResponseWriter, r *http.Request) {
	count := 0 // no limit
	if s := r.URL.Query().Get("count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeText(w, http.StatusBadRequest, "count must be a positive integer\n")
			return
		}
		count = n
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	ticker := time.NewTicker(a.interval)
	defer ticker.Stop()
	// The first event goes out at once, the next ones every interval.
	for n := 1; count == 0 || n <= count; n++ {
		if n > 1 {
			select {
			case <-r.Context().Done():
				return
			case <-a.streams.Done():
				return
			case <-ticker.C:
			}
		}
		if _, err := fmt.Fprintf(w, "data: %s %d\n\n", a.color, n); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (a *App) handleSlow(w http.ResponseWriter, r *http.Request) {
	d, err := slowDelay(r.URL.Query().Get("d"))
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		a.writeInfo(w, r)
	case <-r.Context().Done():
		// The client is gone: nobody is left to answer.
		a.log.Debug("slow request cancelled", "d", d, "err", context.Cause(r.Context()))
	}
}

// slowDelay parses the d parameter of /slow: a time.Duration, 1s when empty,
// capped at MaxSlow.
func slowDelay(s string) (time.Duration, error) {
	if s == "" {
		return time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("d must be a non-negative duration such as 500ms, got %q", s)
	}
	return min(d, MaxSlow), nil
}

func (a *App) handleStatus(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	// 1xx codes are informational, never the final answer to a request.
	if err != nil || code < 200 || code > 599 {
		writeText(w, http.StatusBadRequest, "status code must be between 200 and 599\n")
		return
	}
	switch code {
	case http.StatusNoContent, http.StatusNotModified: // no body allowed
		w.WriteHeader(code)
		return
	}
	writeText(w, code, fmt.Sprintf("status=%d color=%s\n", code, a.color))
}

// versionInfo is the answer of /version.
type versionInfo struct {
	Color   string `json:"color"`
	Version string `json:"version"`
}

func (a *App) handleVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, versionInfo{Color: a.color, Version: a.version})
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only the fixed structs of this package are written.
		panic(fmt.Sprintf("app: marshal %T: %v", v, err))
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// wantsJSON reports whether an Accept header prefers application/json to
// text/plain. The higher quality wins; on a tie, the more specific media range
// wins (application/json over */*), then the one listed first. Without a
// preference for JSON the answer is plain text.
func wantsJSON(accept string) bool {
	if accept == "" {
		return false
	}
	js := match{q: -1}
	txt := match{q: -1}
	for i, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(s, 64); err != nil || q < 0 || q > 1 {
				continue
			}
		}
		js = js.better(mt, "application/json", q, i)
		txt = txt.better(mt, "text/plain", q, i)
	}
	if js.q <= 0 {
		return false
	}
	switch {
	case js.q != txt.q:
		return js.q > txt.q
	case js.specificity != txt.specificity:
		return js.specificity > txt.specificity
	default:
		return js.index < txt.index
	}
}

// match is the media range of an Accept header that applies to one media type.
type match struct {
	q           float64
	specificity int // 2 type/subtype, 1 type/*, 0 */*
	index       int // position in the header
}

// better returns the match of media range mt (quality q, position i) for
// media type want when it is more specific than m, else m (RFC 9110, 12.5.1:
// the most specific range decides the quality of a type).
func (m match) better(mt, want string, q float64, i int) match {
	typ, _, _ := strings.Cut(want, "/")
	s := -1
	switch mt {
	case want:
		s = 2
	case typ + "/*":
		s = 1
	case "*/*":
		s = 0
	}
	if s < 0 || (m.q >= 0 && s <= m.specificity) {
		return m
	}
	return match{q: q, specificity: s, index: i}
}
