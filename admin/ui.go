package admin

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cryoprotect/bluegreen/proxy/stats"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// The status page: GET / (and /ui/) renders the whole state server-side, so
// it is useful without JavaScript; /ui/app.js then polls /admin/status,
// /admin/history and /admin/stats to keep it live and draws the charts, and
// drives cut over, roll back and the progressive rollout's pause, resume,
// promote and abort with the bearer token the operator types (kept in the
// tab's sessionStorage only). Everything is embedded.

//go:embed ui/index.html ui/app.css ui/app.js
var uiFiles embed.FS

// contentSecurityPolicy lets the page load only its own script and style and
// talk only to its own origin; no inline script, no frames, no forms posted
// elsewhere.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// historyOnPage is how many switches the page lists.
const historyOnPage = 20

type ui struct {
	a    *api
	page *template.Template
	css  []byte
	js   []byte
}

func newUI(a *api) *ui {
	page := template.Must(template.New("index.html").Funcs(template.FuncMap{
		"when":    fmtTime,
		"clock":   fmtClock,
		"ago":     ago,
		"dur":     fmtDur,
		"ratio":   fmtRatio,
		"rate":    func(n int64, secs int) string { return strconv.FormatFloat(float64(n)/float64(secs), 'f', 1, 64) },
		"upper":   strings.ToUpper,
		"version": colorVersion,
		"pct":     func(f float64) string { return strconv.FormatFloat(100*f, 'f', 2, 64) + " %" },
		"secs":    func(f float64) string { return fmtDur(time.Duration(f * float64(time.Second))) },
	}).ParseFS(uiFiles, "ui/index.html"))
	css, _ := fs.ReadFile(uiFiles, "ui/app.css")
	js, _ := fs.ReadFile(uiFiles, "ui/app.js")
	return &ui{a: a, page: page, css: css, js: js}
}

// mount adds the page, its assets and GET /admin/stats to r.
func (u *ui) mount(r chi.Router) {
	r.Get("/", u.index)
	r.Get("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently).ServeHTTP)
	r.Get("/ui/", u.index)
	r.Get("/ui/app.css", u.asset("text/css; charset=utf-8", u.css))
	r.Get("/ui/app.js", u.asset("text/javascript; charset=utf-8", u.js))
}

// secure sets the headers every page answer carries.
func secure(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

func (u *ui) asset(ctype string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		secure(h)
		h.Set("Content-Type", ctype)
		// Revalidate each time: a new binary may ship a new script.
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}
}

// colorView is one colour as the page shows it.
type colorView struct {
	Name    string
	Role    string // "active", "previous" or "idle"
	Active  bool
	Status  ColorStatus
	Minute  stats.Summary // the last 60 s of traffic
	Quarter stats.Summary // the last 15 min
}

type pageData struct {
	Status     Status
	Colors     []colorView
	History    []state.Event
	Now        time.Time
	AuthNeeded bool
	InSync     bool
	HasStats   bool
	Rollout    *rolloutPage // nil when progressive delivery is not served
}

// rolloutPage is the progressive rollout as the page shows it: the one
// running, or else the last one's outcome.
type rolloutPage struct {
	View   rollout.RolloutView
	Phase  string
	Live   bool           // running or paused
	R      *state.Rollout // the running one, else the last one; nil when none ever ran
	Line   string         // one sentence: what runs, or how the last one ended
	Steps  string         // "10 → 50 → 100 %"
	Colors []rolloutColor // target first
	Limits string
	Counts string // whose traffic the analysis counts: this replica, or the fleet
}

// rolloutColor is one colour's share and analysis window in a rollout.
type rolloutColor struct {
	Name   string
	Role   string // "target" or "baseline"
	Weight int
	Window rollout.Window
}

func newRolloutPage(v rollout.RolloutView) *rolloutPage {
	p := &rolloutPage{View: v, Phase: v.Phase, Live: v.Rollout != nil, R: v.Rollout}
	if p.R == nil {
		p.R = v.Last
	}
	r := p.R
	if r == nil {
		p.Line = "No rollout has run. Start one with bluegreen rollout --to COLOUR (or POST /admin/rollout)."
		return p
	}
	steps := make([]string, len(r.Steps))
	for i, s := range r.Steps {
		steps[i] = strconv.Itoa(s)
	}
	p.Steps = strings.Join(steps, " → ") + " %"
	if !p.Live {
		p.Line = "Last rollout " + r.From + " → " + r.To + ": " + r.Outcome + " at " + strconv.Itoa(r.Weight) + " % on " + fmtTime(r.EndedAt) + ": " + r.Ending
		return p
	}
	p.Line = r.From + " → " + r.To + ", started " + fmtTime(r.StartedAt)
	if r.Reason != "" {
		p.Line += ": " + r.Reason
	}
	p.Limits = rolloutLimits(r)
	p.Counts = rolloutCounts(v)
	p.Colors = []rolloutColor{
		{Name: r.To, Role: "target", Weight: v.Weight, Window: v.Colors[r.To]},
		{Name: r.From, Role: "baseline", Weight: 100 - v.Weight, Window: v.Colors[r.From]},
	}
	return p
}

// rolloutCounts says whose traffic the step's analysis counts: in a fleet
// the leader sums every replica's publications (see rollout/fleet.go).
// app.js mirrors it.
func rolloutCounts(v rollout.RolloutView) string {
	s := "this replica's traffic"
	if v.Replicas > 1 {
		s = strconv.Itoa(v.Replicas) + " replicas' traffic, summed"
	}
	if v.FleetStale != "" {
		s += " (stale: " + v.FleetStale + ")"
	}
	return s
}

// rolloutLimits says what a step must show to pass.
func rolloutLimits(r *state.Rollout) string {
	s := "each step " + time.Duration(r.StepInterval).String() + ", at least " + strconv.FormatInt(r.MinRequests, 10) +
		" requests to " + r.To + ", errors ≤ " + strconv.FormatFloat(100*r.MaxErrorRatio, 'f', -1, 64) + "\u00a0%"
	if r.MaxP99 > 0 {
		s += ", p99 ≤ " + time.Duration(r.MaxP99).String()
	}
	if r.MaxP99Ratio > 0 {
		s += ", p99 ≤ " + strconv.FormatFloat(r.MaxP99Ratio, 'f', -1, 64) + "× " + r.From + "'s"
	}
	return s
}

func (u *ui) index(w http.ResponseWriter, r *http.Request) {
	st := u.a.cfg.Controller.State()
	s := u.a.snapshot(st)
	now := time.Now()
	d := pageData{Status: s, Now: now, AuthNeeded: u.a.cfg.Token != "", InSync: s.AppliedGeneration == s.Generation, HasStats: u.a.cfg.Stats != nil}
	for _, c := range u.a.cfg.Colors {
		v := colorView{Name: c, Status: s.Colors[c], Active: c == s.Active, Role: "idle"}
		switch {
		case v.Active:
			v.Role = "active"
		case c == s.Previous:
			v.Role = "previous"
		}
		if rec := u.a.cfg.Stats; rec != nil {
			v.Minute = rec.Window(c, now.Add(-time.Minute))
			v.Quarter = rec.Window(c, now.Add(-stats.Span))
		}
		d.Colors = append(d.Colors, v)
	}
	if ro := u.a.cfg.Rollouts; ro != nil {
		d.Rollout = newRolloutPage(ro.RolloutStatus())
	}
	for i := len(st.History) - 1; i >= 0 && len(d.History) < historyOnPage; i-- {
		d.History = append(d.History, st.History[i])
	}
	var buf bytes.Buffer
	if err := u.page.Execute(&buf, d); err != nil {
		u.a.cfg.Log.Error("status page", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "rendering the status page failed")
		return
	}
	h := w.Header()
	secure(h)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// StatsAnswer is the answer of GET /admin/stats.
type StatsAnswer struct {
	Now         time.Time              `json:"now"`
	Since       time.Time              `json:"since"` // when counting started (the process start)
	StepSeconds int                    `json:"step_seconds"`
	SpanSeconds int                    `json:"span_seconds"`
	Colors      map[string]ColorSeries `json:"colors"`
}

// ColorSeries is one colour's traffic: the last minute and the series.
type ColorSeries struct {
	LastMinute stats.Summary `json:"last_minute"`
	Points     []stats.Point `json:"points"`
}

// statsHandler answers GET /admin/stats?step=5s: each colour's traffic over
// the last 15 minutes in steps (1s to 5m, default 5s).
func (a *api) statsHandler(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Stats == nil {
		writeError(w, http.StatusNotFound, "not_found", "traffic statistics are not enabled")
		return
	}
	step := 5 * time.Second
	if v := r.URL.Query().Get("step"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 5*time.Minute {
			writeError(w, http.StatusBadRequest, "bad_request", "step must be a duration from 1s to 5m")
			return
		}
		step = d.Truncate(time.Second)
	}
	now := time.Now()
	out := StatsAnswer{Now: now.UTC(), Since: a.cfg.Stats.Started().UTC(), StepSeconds: int(step / time.Second), SpanSeconds: int(stats.Span / time.Second), Colors: map[string]ColorSeries{}}
	for _, c := range a.cfg.Colors {
		out.Colors[c] = ColorSeries{LastMinute: a.cfg.Stats.Window(c, now.Add(-time.Minute)), Points: a.cfg.Stats.Series(c, step)}
	}
	writeJSON(w, http.StatusOK, out)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// fmtClock is the time of day (UTC) of a recent instant.
func fmtClock(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("15:04:05Z")
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s"
}

func fmtRatio(s stats.Summary) string {
	if s.Requests == 0 {
		return "–"
	}
	return strconv.FormatFloat(100*s.ErrorRatio(), 'f', 2, 64) + " %"
}

// colorVersion lists the versions a colour's instances report, or "".
func colorVersion(cs ColorStatus) string {
	var vs []string
	for _, i := range cs.Instances {
		if i.Version != "" && !slices.Contains(vs, i.Version) {
			vs = append(vs, i.Version)
		}
	}
	return strings.Join(vs, ", ")
}
