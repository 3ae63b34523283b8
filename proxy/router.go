package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ColorConfig names a colour and its instances.
type ColorConfig struct {
	Name string
	URLs []*url.URL
}

// Config configures a Router.
type Config struct {
	// Colors are exactly two colours (blue and green), each with at least one instance.
	Colors [2]ColorConfig
	// Balance chooses among healthy instances; default round-robin.
	Balance Balance
	// PreviewHeader routes a request that carries it (value "1" or "true")
	// to the idle colour. Empty disables it.
	PreviewHeader string
	// PreviewCookie does the same with a cookie of that name. Empty disables it.
	PreviewCookie string
	// DrainTimeout is how long long-lived connections on a colour that lost
	// the traffic may stay open. Default 30s.
	DrainTimeout time.Duration
	// RetryAfter is the Retry-After hint sent with 503 when a colour has no
	// healthy instance. Default 2s.
	RetryAfter time.Duration
	// Upstream tunes the connections to the instances: those of the fast
	// path (see Server) and, when Transport is nil, NewTransport's.
	Upstream TransportConfig
	// Transport reaches the instances on the net/http path; nil means
	// NewTransport(Upstream). A custom Transport turns the fast path off.
	Transport http.RoundTripper
	// Metrics may be nil.
	Metrics *Metrics
	// Log receives upstream errors and drain events. Required.
	Log *slog.Logger
	// AccessLog, when set, receives one record per request.
	AccessLog *slog.Logger
	// Outlier configures passive outlier detection; the zero value disables it.
	Outlier OutlierConfig
	// Now is the clock of outlier detection; nil means time.Now.
	Now func() time.Time
	// TrustedProxies are the peers whose X-Forwarded-For, X-Forwarded-Host,
	// X-Forwarded-Proto and Forwarded headers are kept (X-Forwarded-For is
	// appended to). From any other peer every X-Forwarded-* header, Forwarded
	// and X-Real-Ip are dropped and set afresh.
	TrustedProxies []netip.Prefix
	// StripPreviewHeader removes PreviewHeader before forwarding.
	StripPreviewHeader bool
	// ColorFailing, when set, is called synchronously on the request path
	// when every instance of the active colour in rotation refuses
	// connections since its last answer, or is failing by outlier
	// detection (see colorfail.go). It may switch the active colour; a
	// request that was refused (nothing sent) is then retried on the new
	// active colour. It must be safe for concurrent use.
	ColorFailing func(color, reason string)
}

// snapshot is one immutable routing decision. A request loads it once.
type snapshot struct {
	active, idle *Pool
	generation   uint64
}

// Router is the public listener's handler: it sends each request to a
// healthy instance of the active colour (or of the idle one for preview
// requests). SetActive swaps the routing snapshot atomically: requests in
// flight finish where they started, new requests see the new colour. Safe for
// concurrent use.
type Router struct {
	pools         [2]*Pool
	snap          atomic.Pointer[snapshot]
	previewHeader string
	previewCookie string
	retryAfter    string
	log           *slog.Logger
	access        *slog.Logger
	trusted       []netip.Prefix
	stripPreview  bool
	transport     http.RoundTripper
	setMu         sync.Mutex // serialises SetActive
	colorFailing  colorFailingFunc

	// The fast path (see Server).
	fast              bool
	bufs              buffers
	exchanges         exchangePool
	date              dateCache
	previewLower      string
	respHeaderTimeout time.Duration
	upstreamIdle      time.Duration
}

// NewRouter builds the pools and their reverse proxies. The first colour is
// active with generation 0 until SetActive is called. Instances start
// unhealthy: they get traffic once the health checker reports them up.
func NewRouter(cfg Config) (*Router, error) {
	if cfg.Log == nil {
		return nil, errors.New("proxy: Config.Log is required")
	}
	if cfg.Balance == "" {
		cfg.Balance = RoundRobin
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 2 * time.Second
	}
	cfg.Upstream = cfg.Upstream.withDefaults()
	fast := cfg.Transport == nil
	if cfg.Transport == nil {
		cfg.Transport = NewTransport(cfg.Upstream)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Colors[0].Name == "" || cfg.Colors[1].Name == "" || cfg.Colors[0].Name == cfg.Colors[1].Name {
		return nil, fmt.Errorf("proxy: need two distinct colour names, got %q and %q", cfg.Colors[0].Name, cfg.Colors[1].Name)
	}
	rt := &Router{
		previewHeader: http.CanonicalHeaderKey(cfg.PreviewHeader),
		previewCookie: cfg.PreviewCookie,
		retryAfter:    strconv.Itoa(int((cfg.RetryAfter + time.Second - 1) / time.Second)),
		log:           cfg.Log,
		access:        cfg.AccessLog,
		trusted:       cfg.TrustedProxies,
		transport:     cfg.Transport,
		stripPreview:  cfg.StripPreviewHeader && cfg.PreviewHeader != "",
		colorFailing:  cfg.ColorFailing,

		previewLower:      strings.ToLower(cfg.PreviewHeader),
		respHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout,
		upstreamIdle:      cfg.Upstream.IdleConnTimeout,
	}
	buffers := newBufferPool(1024)
	errLog := slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn)
	for i, cc := range cfg.Colors {
		if len(cc.URLs) == 0 {
			return nil, fmt.Errorf("proxy: colour %s has no instances", cc.Name)
		}
		cm := cfg.Metrics.forColor(cc.Name)
		p := &Pool{color: cc.Name, balance: cfg.Balance, metrics: cm}
		p.outlier, p.now, p.log = cfg.Outlier.policy(), cfg.Now, cfg.Log
		p.streams = newStreamSet(cc.Name, cfg.DrainTimeout, cfg.Log, cm.drainingGauge())
		seen := make(map[string]bool)
		for _, u := range cc.URLs {
			if u == nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return nil, fmt.Errorf("proxy: colour %s: instance %v: need an http or https URL with a host", cc.Name, u)
			}
			name := u.String()
			if seen[name] {
				return nil, fmt.Errorf("proxy: colour %s: instance %s listed twice", cc.Name, name)
			}
			seen[name] = true
			b := &Backend{url: u, name: name, pool: p, rt: rt, errs: cm.forInstance(name)}
			if u.Scheme != "http" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
				fast = false
			}
			b.conns = newUpstream(u.Host, u.EscapedPath(), cfg.Upstream, &rt.bufs, cfg.Now)
			b.out.counter = cm.ejectionCounter(name)
			b.rp = &httputil.ReverseProxy{
				Rewrite:        b.rewrite,
				Transport:      &backendTransport{b: b, base: cfg.Transport},
				BufferPool:     buffers,
				ErrorLog:       errLog,
				ModifyResponse: b.modifyResponse,
				ErrorHandler:   rt.errorHandler(b),
			}
			p.backends = append(p.backends, b)
		}
		rt.pools[i] = p
	}
	rt.fast = fast
	rt.snap.Store(&snapshot{active: rt.pools[0], idle: rt.pools[1]})
	return rt, nil
}

// Pool returns the pool of a colour, or nil for an unknown colour.
func (rt *Router) Pool(color string) *Pool {
	for _, p := range rt.pools {
		if p.color == color {
			return p
		}
	}
	return nil
}

// Active returns the colour that receives live traffic and the state
// generation that decision came from.
func (rt *Router) Active() (color string, generation uint64) {
	s := rt.snap.Load()
	return s.active.color, s.generation
}

// SetActive routes new requests to color. Requests already in flight finish
// on the colour they started on; long-lived connections on the colour that
// lost the traffic are closed after the drain timeout.
func (rt *Router) SetActive(color string, generation uint64) error {
	next := rt.Pool(color)
	if next == nil {
		return fmt.Errorf("proxy: unknown colour %q", color)
	}
	idle := rt.pools[0]
	if idle == next {
		idle = rt.pools[1]
	}
	rt.setMu.Lock()
	defer rt.setMu.Unlock()
	prev := rt.snap.Swap(&snapshot{active: next, idle: idle, generation: generation})
	if prev.active != next {
		next.streams.undrain()
		prev.active.streams.drain()
	}
	return nil
}

// Streams reports the long-lived connections open on a colour and how many
// of them are draining.
func (rt *Router) Streams(color string) (open, draining int) {
	p := rt.Pool(color)
	if p == nil {
		return 0, 0
	}
	return p.streams.Len(), p.streams.Draining()
}

// CloseIdleConnections closes the kept-alive connections to the instances
// that are not carrying a request, when the transport supports it.
func (rt *Router) CloseIdleConnections() {
	if c, ok := rt.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	for _, p := range rt.pools {
		for _, b := range p.backends {
			b.conns.closeIdle(false)
		}
	}
}

// FastPath reports whether Server can serve plain requests on the fast
// path: every instance is plain http without a query and no custom
// Transport was given.
func (rt *Router) FastPath() bool { return rt.fast }

// CloseStreams ends every upgraded connection and event stream at once
// (cleanly, see drainend.go: they stay counted by Streams until they have
// ended); used in a graceful shutdown, since http.Server.Shutdown does not
// wait for hijacked connections. It returns how many were ended.
func (rt *Router) CloseStreams() int {
	n := 0
	for _, p := range rt.pools {
		n += p.streams.closeAll()
	}
	return n
}

func (rt *Router) wantsPreview(r *http.Request) bool {
	if rt.previewHeader != "" {
		if v := r.Header[rt.previewHeader]; len(v) > 0 && truthy(v[0]) {
			return true
		}
	}
	if rt.previewCookie != "" {
		if cs := r.Header["Cookie"]; len(cs) > 0 && strings.Contains(strings.Join(cs, ";"), rt.previewCookie) {
			if c, err := r.Cookie(rt.previewCookie); err == nil && truthy(c.Value) {
				return true
			}
		}
	}
	return false
}

func truthy(v string) bool { return v == "1" || strings.EqualFold(v, "true") }

// ServeHTTP routes one request.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		// Not a forward proxy: no tunnels to anywhere.
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Opaque != "" {
		// "GET x:secret/admin": no path, and the instance would get a
		// request target without its leading slash.
		http.Error(w, "400 bad request: the request target has no path", http.StatusBadRequest)
		return
	}
	s := rt.snap.Load()
	pool := s.active
	if (rt.previewHeader != "" || rt.previewCookie != "") && rt.wantsPreview(r) {
		pool = s.idle
	}
	b := pool.Pick()
	if b == nil {
		rt.unavailable(w, r, pool)
		return
	}
	start := time.Now()
	var rec *statusRecorder
	if rt.access != nil {
		rec = &statusRecorder{ResponseWriter: w}
		w = rec
	}
	pool.begin(b)
	defer func() {
		elapsed := pool.end(b, start, longLived(r))
		if rec != nil {
			rt.logAccess(r.Context(), r.Method, r.URL.Path, rec.status(), pool, b, elapsed, r.RemoteAddr)
		}
	}()
	b.rp.ServeHTTP(w, r)
}

// begin counts a request in flight on b, an instance of p.
func (p *Pool) begin(b *Backend) {
	b.inflight.Add(1)
	if cm := p.metrics; cm != nil {
		cm.inflight.Inc()
	}
}

// end undoes begin and observes the request's duration, unless it was a
// long-lived connection (an upgrade or an event stream). It returns the
// duration.
func (p *Pool) end(b *Backend, start time.Time, longLived bool) time.Duration {
	b.inflight.Add(-1)
	elapsed := time.Since(start)
	if cm := p.metrics; cm != nil {
		cm.inflight.Dec()
		if !longLived {
			cm.duration.Observe(elapsed.Seconds())
		}
	}
	return elapsed
}

// logAccess writes one access-log record; rt.access must be set.
func (rt *Router) logAccess(ctx context.Context, method, path string, status int, p *Pool, b *Backend, elapsed time.Duration, remote string) {
	rt.access.LogAttrs(ctx, slog.LevelInfo, "request",
		slog.String("method", method),
		slog.String("path", path),
		slog.Int("status", status),
		slog.String("color", p.color),
		slog.String("instance", b.name),
		slog.Duration("duration", elapsed),
		slog.String("remote", remote))
}

// longLived reports requests whose duration is a connection's lifetime, not
// a response time: upgrades and event streams.
func longLived(r *http.Request) bool {
	if _, ok := r.Header["Upgrade"]; ok {
		return true
	}
	a := r.Header["Accept"]
	return len(a) > 0 && strings.HasPrefix(a[0], "text/event-stream")
}

func (rt *Router) unavailable(w http.ResponseWriter, r *http.Request, p *Pool) {
	p.metrics.count(r.Method, http.StatusServiceUnavailable)
	h := w.Header()
	h.Set("Retry-After", rt.retryAfter)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, unavailableBody(p))
}

// unavailableBody is the text of the 503 a colour without a healthy
// instance answers with.
func unavailableBody(p *Pool) string { return "503 no healthy " + p.color + " instance\n" }

func (rt *Router) errorHandler(b *Backend) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		status, kind := classify(r.Context(), err)
		b.pool.metrics.count(r.Method, status)
		if kind == "" {
			// The client went away; nobody reads an answer.
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		inst := b
		if ae := errAttempt(err); ae != nil {
			inst = ae.b // counted by the transport already
		} else {
			b.errs.inc(kind)
			b.failed()
		}
		rt.log.Warn("upstream error", "color", b.pool.color, "instance", inst.name, "kind", kind, "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, http.StatusText(status)+"\n")
	}
}

// rewrite builds the outgoing request. Its URL always comes from the
// instance: an absolute request URI or a Host header only ever change the
// Host header the instance sees, never where the proxy connects.
func (b *Backend) rewrite(pr *httputil.ProxyRequest) {
	rt := b.rt
	pr.SetURL(b.url)
	pr.Out.Host = pr.In.Host // the instance sees the Host the client asked for
	in, out := pr.In.Header, pr.Out.Header
	if len(rt.trusted) > 0 && rt.trustedPeer(pr.In.RemoteAddr) {
		// ReverseProxy dropped these from Out; a trusted proxy's values stand.
		if v := in["X-Forwarded-For"]; len(v) > 0 {
			out["X-Forwarded-For"] = v // SetXForwarded appends the peer
		}
		pr.SetXForwarded()
		for _, k := range [...]string{"X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
			if v := in[k]; len(v) > 0 {
				out[k] = v
			}
		}
	} else {
		for k := range out {
			if strings.HasPrefix(k, "X-Forwarded-") || k == "X-Real-Ip" {
				delete(out, k)
			}
		}
		pr.SetXForwarded()
	}
	if rt.stripPreview {
		delete(out, rt.previewHeader)
	}
}

// trustedPeer reports whether the connection's peer is a trusted proxy.
func (rt *Router) trustedPeer(remoteAddr string) bool {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range rt.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (b *Backend) modifyResponse(res *http.Response) error {
	p := b.pool
	p.metrics.count(res.Request.Method, res.StatusCode)
	if res.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			res.Body = p.streams.trackWebSocket(rwc) // drainend.go
		}
	} else if res.ContentLength < 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		res.Body = p.streams.trackEventStream(res.Body)
	}
	return nil
}

// statusRecorder remembers the status for the access log. It unwraps so
// http.ResponseController still reaches Flush and Hijack.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
