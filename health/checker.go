// Package health runs active health checks against the backend instances of
// one colour.
//
// A Checker probes every instance with an HTTP GET and keeps its health in
// atomics on a long-lived per-instance object. The first result of an instance
// decides its health directly; after that a healthy instance turns unhealthy
// after Config.Fall consecutive failures and an unhealthy one turns healthy
// after Config.Rise consecutive passes (HAProxy's rise/fall). Each transition
// is a compare-and-swap, so its log line, metrics and Reporter call happen
// exactly once.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cryoprotect/bluegreen/internal/localfault"
)

// Defaults applied by NewChecker to unset Config fields.
const (
	defaultPath     = "/health"
	defaultInterval = 2 * time.Second
	defaultTimeout  = time.Second
	defaultRise     = 2
	defaultFall     = 3
	defaultJitter   = 0.1
)

const (
	userAgent   = "bluegreen-health"
	maxBodyRead = 4 << 10 // bytes of a probe's body read before closing it
	maxErrorLen = 200     // bytes of an error kept in InstanceStatus.LastError
)

// Config tunes the probes of a Checker. Zero fields take defaults: Path
// "/health", Interval 2s, Timeout 1s, Rise 2, Fall 3, Jitter 0.1.
type Config struct {
	// Path is joined to each instance's base URL, e.g. "/health"; it may
	// carry a query ("/health?deep=1").
	Path string
	// Interval is the time between probes of one instance.
	Interval time.Duration
	// Timeout bounds each probe.
	Timeout time.Duration
	// Rise is the number of consecutive passes that make an unhealthy
	// instance healthy.
	Rise int
	// Fall is the number of consecutive failures that make a healthy
	// instance unhealthy.
	Fall int
	// Jitter is a fraction of Interval: each periodic probe is delayed by a
	// random duration in [0, Jitter*Interval). 0 means the default 0.1, a
	// negative value means no jitter, values above 1 count as 1.
	Jitter float64
	// Version, when set, reads the version an instance reports from each
	// passing probe: "header:NAME" (a response header) or "json:FIELD" (a
	// top-level field of a JSON body). See ParseVersionSource.
	Version VersionSource
}

func (c Config) withDefaults() Config {
	if c.Path == "" {
		c.Path = defaultPath
	}
	if c.Interval <= 0 {
		c.Interval = defaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = defaultTimeout
	}
	if c.Rise < 1 {
		c.Rise = defaultRise
	}
	if c.Fall < 1 {
		c.Fall = defaultFall
	}
	switch {
	case c.Jitter == 0 || math.IsNaN(c.Jitter):
		c.Jitter = defaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	case c.Jitter > 1:
		c.Jitter = 1
	}
	return c
}

// Reporter learns of health transitions. SetStatus is called once per
// transition, including an instance's first probe result (unknown to up or
// unknown to down), with the instance URL as configured (u.String()). It is
// called from the probing goroutine with no lock held; calls for one instance
// come one at a time, in the order of the transitions. It may call the
// Checker's read methods but must not call CheckOnce.
type Reporter interface {
	SetStatus(instance string, up bool)
}

// ReporterFunc adapts a function to the Reporter interface.
type ReporterFunc func(instance string, up bool)

// SetStatus calls f(instance, up).
func (f ReporterFunc) SetStatus(instance string, up bool) { f(instance, up) }

// InstanceStatus is a point-in-time view of one instance's health.
type InstanceStatus struct {
	// URL is the instance's base URL as configured.
	URL string `json:"url"`
	// Healthy reports whether the instance currently counts as healthy.
	Healthy bool `json:"healthy"`
	// Checked reports whether the instance has been probed at least once.
	Checked bool `json:"-"`
	// LastCheck is the time of the last probe result; zero when never checked.
	LastCheck time.Time `json:"last_check"`
	// LastError describes the last probe's failure; "" after a pass.
	LastError string `json:"last_error"`
	// Version is what the instance last reported (see Config.Version).
	Version string `json:"version,omitempty"`
	// Ejected reports that passive outlier detection on the data path has
	// taken the instance out of balancing until EjectedUntil. The Checker
	// does not set these; the process that owns both views fills them in.
	Ejected      bool       `json:"ejected"`
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
}

// Health states of an instance, kept in instance.state.
const (
	stateUnknown int32 = iota // not probed yet
	stateUp
	stateDown
)

// result is the outcome of one probe.
type result struct {
	at  time.Time
	err string
}

// instance is one backend instance and its health. It lives as long as its
// Checker and must not be copied. state and last are read without locks by
// any goroutine; everything else is written only by the goroutine that holds
// the probe token.
type instance struct {
	name     string // u.String() as configured
	probeURL string
	metrics  instanceMetrics

	// probe holds a token while a probe of this instance runs, so probes
	// of one instance never overlap.
	probe chan struct{}

	state   atomic.Int32
	last    atomic.Pointer[result]
	version atomic.Pointer[string]

	// Consecutive passes and failures; guarded by the probe token.
	passes, fails int
}

// Checker probes all instances of one colour. All its methods are safe for
// concurrent use; Run must be called at most once. Probes of one instance
// never overlap, whether they come from Run or from concurrent CheckOnce calls.
type Checker struct {
	color     string
	cfg       Config
	client    *http.Client
	rep       Reporter
	log       *slog.Logger
	now       func() time.Time
	instances []*instance
}

// NewChecker returns a Checker for the instances (base URLs, not nil) of
// color. cfg's zero fields take defaults. client sends the probes (nil: a
// client on http.DefaultTransport); redirects are not followed, so a 3xx
// answer passes. rep, m and log may be nil (no reports, no metrics, no logs);
// now is the clock for InstanceStatus.LastCheck (nil: time.Now). The backend_up
// series of every instance is created at 0.
func NewChecker(color string, instances []*url.URL, cfg Config, client *http.Client, rep Reporter, m *Metrics, log *slog.Logger, now func() time.Time) *Checker {
	cfg = cfg.withDefaults()
	var cl http.Client
	if client != nil {
		cl = *client // shares client's Transport and so its connections
	}
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	c := &Checker{
		color:     color,
		cfg:       cfg,
		client:    &cl,
		rep:       rep,
		log:       log,
		now:       now,
		instances: make([]*instance, 0, len(instances)),
	}
	for _, u := range instances {
		name := u.String()
		c.instances = append(c.instances, &instance{
			name:     name,
			probeURL: probeURL(u, cfg.Path),
			metrics:  m.forInstance(color, name),
			probe:    make(chan struct{}, 1),
		})
	}
	return c
}

// probeURL joins path (which may carry a query) to base, keeping base's path:
// http://h:5000/app + /health gives http://h:5000/app/health.
func probeURL(base *url.URL, path string) string {
	ref, err := url.Parse(path)
	if err != nil {
		ref = &url.URL{Path: path}
	}
	u := base.JoinPath(ref.Path)
	if ref.RawQuery != "" {
		u.RawQuery = ref.RawQuery
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// Color returns the colour whose instances c probes.
func (c *Checker) Color() string { return c.color }

// Status returns the health of every instance, in configured order.
func (c *Checker) Status() []InstanceStatus {
	out := make([]InstanceStatus, len(c.instances))
	for i, in := range c.instances {
		// state is stored after last, so a checked state implies a result.
		st := in.state.Load()
		out[i] = InstanceStatus{URL: in.name, Healthy: st == stateUp, Checked: st != stateUnknown}
		if r := in.last.Load(); r != nil && st != stateUnknown {
			out[i].LastCheck, out[i].LastError = r.at, r.err
		}
		if v := in.version.Load(); v != nil {
			out[i].Version = *v
		}
	}
	return out
}

// Healthy returns the number of instances currently healthy.
func (c *Checker) Healthy() int {
	n := 0
	for _, in := range c.instances {
		if in.state.Load() == stateUp {
			n++
		}
	}
	return n
}

// Ready reports whether every instance has been probed at least once.
func (c *Checker) Ready() bool {
	for _, in := range c.instances {
		if in.state.Load() == stateUnknown {
			return false
		}
	}
	return true
}

// CheckOnce probes every instance concurrently, without jitter, and returns
// when all probes have ended. A probe of an instance that is already being
// probed waits for that probe to end. Probes cut short because ctx ended are
// not counted.
func (c *Checker) CheckOnce(ctx context.Context) {
	c.checkAll(ctx, false)
}

// Run probes every instance at once, then every Config.Interval, each
// periodic probe delayed by its own random jitter, until ctx ends. Each round
// waits for all its probes, so probes of one instance never overlap and none
// outlive Run: Run returns only after all its goroutines have ended.
func (c *Checker) Run(ctx context.Context) {
	c.checkAll(ctx, false)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.checkAll(ctx, true)
		}
	}
}

func (c *Checker) checkAll(ctx context.Context, jitter bool) {
	var wg sync.WaitGroup
	for _, in := range c.instances {
		var delay time.Duration
		if jitter {
			delay = c.jitter()
		}
		wg.Go(func() { c.check(ctx, in, delay) })
	}
	wg.Wait()
}

// jitter returns a random delay in [0, Jitter*Interval).
func (c *Checker) jitter() time.Duration {
	limit := time.Duration(c.cfg.Jitter * float64(c.cfg.Interval))
	if limit <= 0 {
		return 0
	}
	return rand.N(limit)
}

// check waits delay, probes in and records the result, unless ctx ends first.
func (c *Checker) check(ctx context.Context, in *instance, delay time.Duration) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	if ctx.Err() != nil {
		return
	}
	select {
	case in.probe <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-in.probe }()

	err := c.probe(ctx, in)
	if ctx.Err() != nil {
		// Cut short by the caller (shutdown): says nothing about the backend.
		return
	}
	if kind, ok := localfault.Of(err); ok {
		// Not sent: the proxy is out of descriptors, ports or memory,
		// which says nothing about the backend either.
		c.log.Error("health probe not sent: the proxy is out of a resource of its own", "color", c.color,
			"instance", in.name, "kind", kind, "error", err)
		return
	}
	c.record(in, err)
}

// probe sends one GET to in and returns nil when it answered 200–399.
func (c *Checker) probe(ctx context.Context, in *instance) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.probeURL, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.client.Do(req)
	if err != nil {
		return c.transportError(err)
	}
	// A bounded read: a short body is drained so the connection can be
	// reused; a long one is cut off.
	var body []byte
	if c.cfg.Version.field != "" {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, maxBodyRead))
	} else {
		_, _ = io.CopyN(io.Discard, resp.Body, maxBodyRead)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if c.cfg.Version.set() {
		if v := c.cfg.Version.read(resp.Header, body); v != "" {
			in.version.Store(&v)
		}
	}
	return nil
}

// transportError shortens a client error: the *url.Error wrapper (operation
// and URL) is dropped, since the instance is reported beside it, and
// timeouts say so.
func (c *Checker) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("timeout after %s: %w", c.cfg.Timeout, err)
	}
	return err
}

// shorten cuts s to at most n bytes, on a rune boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// record applies one probe result to in. The caller holds in's probe token.
func (c *Checker) record(in *instance, err error) {
	pass := err == nil
	msg := ""
	if !pass {
		msg = err.Error()
		msg = shorten(msg, maxErrorLen)
	}
	in.last.Store(&result{at: c.now(), err: msg})
	in.metrics.probed(pass)

	if pass {
		in.passes, in.fails = in.passes+1, 0
	} else {
		in.passes, in.fails = 0, in.fails+1
	}
	cur := in.state.Load()
	next := cur
	switch cur {
	case stateUnknown:
		next = stateDown
		if pass {
			next = stateUp
		}
	case stateUp:
		if in.fails >= c.cfg.Fall {
			next = stateDown
		}
	case stateDown:
		if in.passes >= c.cfg.Rise {
			next = stateUp
		}
	}
	c.log.Debug("health probe", "color", c.color, "instance", in.name, "pass", pass, "error", msg)
	if next == cur || !in.state.CompareAndSwap(cur, next) {
		return
	}

	up := next == stateUp
	in.metrics.setUp(up)
	if up {
		c.log.Info("backend up", "color", c.color, "instance", in.name)
	} else {
		c.log.Warn("backend down", "color", c.color, "instance", in.name, "error", msg)
	}
	if c.rep != nil {
		c.rep.SetStatus(in.name, up)
	}
}
