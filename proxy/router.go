package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cryoprotect/bluegreen/internal/loglimit"
	"github.com/cryoprotect/bluegreen/proxy/h1"
	"github.com/cryoprotect/bluegreen/proxy/stats"
	"golang.org/x/net/http/httpguts"
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
	// PreviewFrom are the peers whose preview requests are honoured; from
	// any other peer the header and the cookie are ignored and the request
	// goes to the active colour. Empty: every peer.
	PreviewFrom []netip.Prefix
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
	// NewTransport(Upstream) for requests with a body or an upgrade and
	// the direct leg (direct.go) for the others. A custom Transport turns
	// the fast path and the direct leg off.
	Transport http.RoundTripper
	// NetHTTPOnly serves every request with net/http (the fast codec off);
	// the upstream leg stays as with a nil Transport.
	NetHTTPOnly bool
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
	// ClientBodyTimeout is the most time between two reads of a request
	// body (as nginx's client_body_timeout); a client that stops sending
	// longer gets 408 and the connection closes. Default 60s.
	ClientBodyTimeout time.Duration
	// ClientSendTimeout is the most time a client may take no byte of its
	// answer before its connection is cut (a client that stopped reading
	// holds an exchange and an instance connection); default 60s.
	ClientSendTimeout time.Duration
	// Stats, when set, counts every finished request per colour (see
	// package stats).
	Stats *stats.Recorder
	// RolloutKey recognises a client during a progressive rollout (see
	// SetActiveWeighted); the zero value is the rollout cookie.
	RolloutKey RolloutKey
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
	weight       uint32 // rollout: clients whose key hashes below it go to idle (weight.go)
	from         *Pool  // the active pool before this switch (colorfail.go)
	at           int64  // when this switch was applied, Unix ns
}

// Router is the public listener's handler: it sends each request to a
// healthy instance of the active colour (or of the idle one for preview
// requests). SetActive swaps the routing snapshot atomically: requests in
// flight finish where they started, new requests see the new colour. Safe for
// concurrent use.
type Router struct {
	pools      [2]*Pool
	snap       atomic.Pointer[snapshot]
	stats      *stats.Recorder
	rolloutKey RolloutKey
	// rolloutKeyLower is the key header's name in lower case (fast codec).
	rolloutKeyLower string
	previewHeader   string
	previewCookie   string
	retryAfter      string
	log             *slog.Logger
	access          *slog.Logger
	trusted         []netip.Prefix
	previewFrom     []netip.Prefix
	previewLog      loglimit.Limit // the lines of preview requests ignored (previewAllowed)
	stripPreview    bool
	transport       http.RoundTripper
	setMu           sync.Mutex // serialises SetActive
	colorFailing    colorFailingFunc
	localLog        loglimit.Limit // the lines of the proxy's own faults (localFault)

	metrics           *Metrics
	clientBodyTimeout time.Duration
	clientSendTimeout time.Duration

	// The fast codec (see Server).
	fast              bool
	bufs              h1.Buffers
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
	if cfg.ClientBodyTimeout <= 0 {
		cfg.ClientBodyTimeout = 60 * time.Second
	}
	if cfg.ClientSendTimeout <= 0 {
		cfg.ClientSendTimeout = 60 * time.Second
	}
	cfg.Upstream = cfg.Upstream.withDefaults()
	fast := cfg.Transport == nil
	direct := fast
	fast = fast && !cfg.NetHTTPOnly
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
		previewFrom:   cfg.PreviewFrom,
		previewLog:    loglimit.Limit{Every: time.Minute, Now: cfg.Now},
		transport:     cfg.Transport,
		stripPreview:  cfg.StripPreviewHeader && cfg.PreviewHeader != "",
		metrics:       cfg.Metrics,
		stats:         cfg.Stats,
		rolloutKey:    cfg.RolloutKey,
		colorFailing:  cfg.ColorFailing,
		localLog:      loglimit.Limit{Every: time.Second, Now: cfg.Now},

		rolloutKeyLower:   strings.ToLower(cfg.RolloutKey.Header),
		clientBodyTimeout: cfg.ClientBodyTimeout,
		clientSendTimeout: cfg.ClientSendTimeout,

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
			b.conns = h1.NewUpstream(u.Host, u.EscapedPath(), cfg.Upstream.DialTimeout, cfg.Upstream.IdleConnTimeout,
				cfg.Upstream.MaxIdleConnsPerHost, &rt.bufs, cfg.Now)
			if direct && u.Scheme == "http" && u.User == nil {
				b.direct = newDirectConns(u.Host, cfg.Upstream, cfg.Now, b.conns.Limit())
			}
			if direct {
				b.own = newInstanceTransport(cfg.Upstream, b.conns.Limit(), cfg.Now)
			}
			b.out.counter = cm.ejectionCounter(name)
			b.rp = &httputil.ReverseProxy{
				Rewrite:      b.rewrite,
				Transport:    &backendTransport{b: b, base: cfg.Transport},
				BufferPool:   buffers,
				ErrorLog:     errLog,
				ErrorHandler: rt.errorHandler(b),
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
	return rt.SetActiveWeighted(color, generation, 0)
}

// SetActiveWeighted is SetActive during a progressive rollout: weight
// percent of the clients (by a stable hash of their key) go to the other
// colour. Both change in one swap.
func (rt *Router) SetActiveWeighted(color string, generation uint64, weight int) error {
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
	prev := rt.snap.Swap(&snapshot{active: next, idle: idle, generation: generation, weight: weightOf(weight),
		from: rt.snap.Load().active, at: time.Now().UnixNano()})
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
			b.conns.CloseIdle(false)
			if b.direct != nil {
				b.direct.closeIdle(false)
			}
			if b.own != nil {
				b.own.CloseIdleConnections()
			}
		}
	}
}

// FastPath reports whether Server can serve plain requests on the fast
// path: every instance is plain http without a query and no custom
// Transport was given.
func (rt *Router) FastPath() bool { return rt.fast }

// CloseStreams closes every upgraded connection and event stream at once;
// used at the end of a graceful shutdown, since http.Server.Shutdown does not
// wait for hijacked connections. It returns how many were closed.
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

// ServeHTTP runs the pipeline (pipeline.go) for one request of the
// net/http codec.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		// Not a forward proxy: no tunnels to anywhere.
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	canonicalKeys(r.Header)
	dropH2CUpgrade(r.Header)
	preview := rt.previewable() && rt.wantsPreview(r) && rt.previewAllowed(r.RemoteAddr)
	var key []byte
	if !preview && rt.rolloutRunning() {
		key = rt.rolloutKeyHTTP(w, r)
	}
	pool := rt.route(preview, key)
	rec := &statusRecorder{ResponseWriter: w, sendTimeout: rt.clientSendTimeout}
	rec.o = outcome{pool: pool, method: r.Method, start: time.Now(), remote: r.RemoteAddr, proto: r.Proto, longLived: longLived(r)}
	o := &rec.o
	if rt.access != nil {
		o.path = r.URL.EscapedPath()
	}
	if why := badTarget(r); why != "" {
		// The client's malformed request, counted as the HTTP/2 codec
		// counts a malformed target (h2Handler.refuse).
		o.status, o.fault, o.kind = http.StatusBadRequest, clientFault, ClientMalformed
		rt.finish(o)
		http.Error(w, "400 bad request: "+why, http.StatusBadRequest)
		return
	}
	b := pool.Pick()
	if b == nil {
		rt.unavailable(w, pool)
		o.status = http.StatusServiceUnavailable
		rt.finish(o)
		return
	}
	pool.begin(b)
	o.b, o.inst = b, b
	if r.Body != nil && r.Body != http.NoBody {
		rec.body = &clientBody{rc: r.Body, ctl: http.NewResponseController(w), timeout: rt.clientBodyTimeout}
		r.Body = rec.body
	}
	r = r.WithContext(context.WithValue(r.Context(), recorderKey{}, rec))
	if !directable(r) {
		r = r.WithContext(limitInformational(r.Context()))
	}
	rec.req = r
	growStack(len(r.URL.Path))
	defer func() {
		if o.status == 0 {
			o.status = rec.status()
		}
		// The request's context ends before ServeHTTP returns only when
		// the client went away (net/http saw its side close), which ends
		// the copy of the answer.
		rec.ended(r.Context().Err() != nil)
		rt.finish(o)
	}()
	b.rp.ServeHTTP(rec, r)
}

// limitInformational returns ctx with a client trace that fails the
// request's exchange with its instance at the informational answer after
// h1.MaxInformational, as the fast codec and the direct leg do. Go's
// Transport reads any number of them once a Got1xxResponse hook takes them
// (ReverseProxy's, which relays them), so an instance that sent them
// forever held its request until the upstream timeout. It must be in the
// context before ReverseProxy adds its own hook: httptrace calls the hook
// added later first and returns the result of the one added earlier, so
// this one's error is what the Transport sees. One count per request,
// across its attempts. A malformed field name fails an informational
// answer as it fails a final one (badFieldName).
func limitInformational(ctx context.Context) context.Context {
	n := 0
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
			if n++; n > h1.MaxInformational {
				return h1.ErrTooMany1xx
			}
			return badFieldName(http.Header(h))
		},
	})
}

// badTarget says what is wrong with r's request target, or "" when
// nothing is.
func badTarget(r *http.Request) string {
	switch {
	case r.RequestURI == "*":
		// The asterisk form is OPTIONS's alone (RFC 9112 3.2.4), which
		// net/http answers itself; net/http passes "PRI * HTTP/2.0" (an
		// HTTP/2 preface) on, and the instance got "PRI /%2A", the rest
		// of the preface read as its next request.
		return "the request target * is for OPTIONS alone"
	case r.URL.Opaque != "":
		// "GET x:secret/admin": no path, and the instance would get a
		// request target without its leading slash.
		return "the request target has no path"
	}
	return ""
}

// dropH2CUpgrade takes h2c out of a request's Upgrade field, and its
// HTTP2-Settings field with it: the request is served as the HTTP/1.1
// request it also is (a server may ignore Upgrade, RFC 9110 7.8), never
// passed on as an upgrade. An instance that took it (Apache's mod_http2,
// a Go server with h2c) would speak HTTP/2 with the client through a
// tunnel the proxy cannot see into, so the requests sent in it would reach
// the instance without the proxy's X-Forwarded-For, preview stripping or
// routing (h2c smuggling), and stay on that instance through a switch.
// RFC 9113 dropped the upgrade; h2c with prior knowledge is refused on the
// plain listener (400).
func dropH2CUpgrade(h http.Header) {
	v, ok := h["Upgrade"]
	if !ok || !httpguts.HeaderValuesContainsToken(v, "h2c") {
		return
	}
	var keep []string
	for _, line := range v {
		for tok := range strings.SplitSeq(line, ",") {
			if tok = textproto.TrimString(tok); tok != "" && !strings.EqualFold(tok, "h2c") {
				keep = append(keep, tok)
			}
		}
	}
	if len(keep) == 0 {
		delete(h, "Upgrade")
	} else {
		h["Upgrade"] = []string{strings.Join(keep, ", ")}
	}
	delete(h, "Http2-Settings")
}

// growStack grows the handler goroutine's stack in one step, while it is
// shallow, to the size the reverse proxy and the upstream exchange below
// need. net/http starts a goroutine per request (per stream on HTTP/2)
// with a small stack that would otherwise double several times, each time
// copying and adjusting every frame on it.
//
//go:noinline
func growStack(i int) byte {
	var pad [8 << 10]byte
	return pad[i&(len(pad)-1)]
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

func (rt *Router) unavailable(w http.ResponseWriter, p *Pool) {
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

// errorHandler answers a request whose attempts failed, with the verdict
// the pipeline reached (attemptFailed) or, for a failure outside the
// attempts, judge's.
func (rt *Router) errorHandler(b *Backend) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		var v verdict
		inst := b
		if ae := errAttempt(err); ae != nil {
			v, inst = ae.v, ae.b
		} else {
			v = judge(r.Context(), err)
		}
		rec, _ := w.(*statusRecorder)
		if rec != nil {
			if rec.body != nil && rec.body.err != nil {
				v = clientVerdict(rec.body.err.Kind) // the body's failure came first
			}
			rec.o.fail(v, inst, err)
			if rec.o.fault == instanceFault && rec.o.path == "" {
				rec.o.path = rec.req.URL.EscapedPath()
			}
		}
		if v.status == 499 {
			// Nobody reads an answer: close without one (as nginx does),
			// not with the empty 200 net/http would send.
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if v.fault == clientFault || v.fault == localFault { // as the fast codec: a local fault gives its descriptor back
			w.Header().Set("Connection", "close")
		}
		w.WriteHeader(v.status)
		_, _ = io.WriteString(w, http.StatusText(v.status)+"\n")
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
	trusted := len(rt.trusted) > 0 && rt.trustedPeer(pr.In.RemoteAddr)
	for k := range out {
		if h1.ForwardingAlias(k) || !trusted && (strings.HasPrefix(k, "X-Forwarded-") || k == "X-Real-Ip") {
			delete(out, k)
		}
	}
	if trusted {
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
		pr.SetXForwarded()
	}
	if rt.stripPreview {
		delete(out, rt.previewHeader)
	}
}

// canonicalKeys files every field of h under its canonical name. net/http's
// servers do so already; a request built by another caller may not, and a
// field under another spelling ("HoSt", "x-forwarded-for") would pass every
// check by name and reach the instance as a second Host or a spoofed
// X-Forwarded-For. Canonical keys, the rule, cost one look each.
func canonicalKeys(h http.Header) {
	for k, v := range h {
		if c := textproto.CanonicalMIMEHeaderKey(k); c != k {
			delete(h, k)
			h[c] = append(h[c], v...)
		}
	}
}

// trustedPeer reports whether the connection's peer is a trusted proxy.
func (rt *Router) trustedPeer(remoteAddr string) bool { return peerIn(remoteAddr, rt.trusted) }

// peerIn reports whether remoteAddr (ip:port) is in one of ps.
func peerIn(remoteAddr string, ps []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// previewAllowed reports whether a preview request from remoteAddr, the
// connection's peer, is honoured (Config.PreviewFrom). One that is not
// goes to the active colour as if it asked for nothing, and is logged, a
// line a minute at most: an operator trying a release from outside the
// allowed networks sees why the idle colour does not answer.
func (rt *Router) previewAllowed(remoteAddr string) bool {
	if len(rt.previewFrom) == 0 || peerIn(remoteAddr, rt.previewFrom) {
		return true
	}
	if ok, held := rt.previewLog.Allow(); ok {
		rt.log.Warn("preview request served by the active colour: its client is not in BLUEGREEN_PREVIEW_FROM",
			"remote", remoteAddr, "ignored_since_last_line", held)
	}
	return false
}

// answer takes the head of b's answer on the net/http codec: outlier
// detection sees it, and its body is wrapped for what follows (the
// stall limit, the charge of a body broken off, the success at its end,
// the tracking of long-lived streams). The Transport calls it, with the
// instance that answered: after a retry that is not the ReverseProxy's
// own instance, which ReverseProxy's ModifyResponse hook would charge.
func (b *Backend) answer(res *http.Response) *http.Response {
	b.observe(res.StatusCode)
	p := b.pool
	if res.StatusCode == http.StatusNoContent {
		// RFC 9110 8.6, as the fast codecs do (h1.Head.lengthAllowed):
		// Go's HTTP/2 server would send it, which nghttp2 refuses.
		res.Header.Del("Content-Length")
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			res.Body = p.streams.trackWebSocket(rwc) // drainend.go
		}
	} else if res.ContentLength < 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		res.Body = p.streams.trackEventStream(res.Body)
	} else if res.Body != nil && res.Body != http.NoBody {
		ctx := res.Request.Context()
		rec, _ := ctx.Value(recorderKey{}).(*statusRecorder)
		res.Body = &instanceBody{ReadCloser: res.Body, b: b, ctx: ctx, rec: rec, stall: b.rt.respHeaderTimeout, code: res.StatusCode}
		return res // its end is the success or failure (bodyEnded)
	}
	b.bodyEnded(res.StatusCode, nil, false) // no body to wait for; a long-lived one counts at its start
	return res
}

// instanceBody charges an instance with a response body it breaks off (a
// reset or an early close after the head was relayed), as the fast codec
// does; a read ended because the client left is not the instance's doing.
// A read that waits longer than stall (the upstream timeout; 0: no limit)
// for the instance's next bytes closes the body and fails with
// h1.ErrBodyStalled, the instance's timeout, as on the fast codecs: a
// timer per read, on this path only (event streams are eventBody).
type instanceBody struct {
	io.ReadCloser
	b       *Backend
	ctx     context.Context
	rec     *statusRecorder // the request's, for outcome.broken; nil when the Router's ServeHTTP did not start it
	code    int             // the answer's status, for outlier detection at the body's end
	settled bool            // the body ended: its success or failure is counted
	stall   time.Duration
	timer   *time.Timer
	stalled atomic.Bool
}

func (ib *instanceBody) Read(p []byte) (int, error) {
	if ib.stall > 0 {
		if ib.timer == nil {
			ib.timer = time.AfterFunc(ib.stall, ib.cut)
		} else {
			ib.timer.Reset(ib.stall)
		}
	}
	n, err := ib.ReadCloser.Read(p)
	if ib.timer != nil {
		ib.timer.Stop()
	}
	if err != nil && err != io.EOF && ib.stalled.Load() {
		err = fmt.Errorf("%w: %w", h1.ErrBodyStalled, os.ErrDeadlineExceeded)
	}
	// Once the client's request is done (it left), a failed read is the
	// proxy closing the instance's connection, not the instance failing.
	switch {
	case ib.settled:
	case err == io.EOF:
		ib.settled = true
		ib.b.bodyEnded(ib.code, nil, false)
	case err != nil && ib.ctx.Err() == nil:
		if judge(ib.ctx, err).fault == instanceFault {
			ib.settled = true
			ib.b.bodyEnded(ib.code, err, false)
			if ib.rec != nil {
				ib.rec.o.broken = true
				ib.rec.flushBroken()
			}
		}
	}
	return n, err
}

// cut ends a read that waited too long: closing the body wakes it.
func (ib *instanceBody) cut() {
	ib.stalled.Store(true)
	_ = ib.ReadCloser.Close()
}

func (ib *instanceBody) Close() error {
	if ib.timer != nil {
		ib.timer.Stop()
	}
	return ib.ReadCloser.Close()
}

// statusRecorder remembers the status and carries the request's outcome. It unwraps so
// http.ResponseController still reaches Flush and Hijack.
type statusRecorder struct {
	http.ResponseWriter
	code int
	o    outcome
	body *clientBody // the request body, when there is one

	req *http.Request // the client's request as ServeHTTP passed it on

	// Each write of the answer may wait sendTimeout for the client to
	// take bytes (ClientSendTimeout): a write deadline set per write
	// through ctl, cleared when the request ends (deadline), and stalled
	// when a write ran out of it.
	sendTimeout               time.Duration
	ctl                       *http.ResponseController
	deadline, stalled, failed bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		s.code = code
	}
	if code < 200 && code != http.StatusSwitchingProtocols && s.req != nil && !s.req.ProtoAtLeast(1, 1) {
		return // an HTTP/1.0 client takes no informational answer (RFC 9110 15.2)
	}
	if code >= 200 {
		// An answer without a Content-Type goes out without one, as the
		// fast codec and nginx send it: net/http would add one sniffed
		// from the body's first bytes, and a body the app chose not to
		// type (with X-Content-Type-Options: nosniff, say) would reach
		// the browser as text/html.
		if h := s.ResponseWriter.Header(); h["Content-Type"] == nil {
			h["Content-Type"] = nil
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if s.sendTimeout > 0 {
		if s.ctl == nil {
			s.ctl = http.NewResponseController(s.ResponseWriter)
		}
		s.deadline = s.ctl.SetWriteDeadline(time.Now().Add(s.sendTimeout)) == nil || s.deadline
	}
	n, err := s.ResponseWriter.Write(p)
	if err != nil && !errors.Is(err, http.ErrBodyNotAllowed) && !errors.Is(err, http.ErrContentLength) { // those two are the instance's answer's
		s.failed = true
		var ne net.Error
		s.stalled = s.stalled || s.deadline && errors.As(err, &ne) && ne.Timeout()
	}
	return n, err
}

// ended clears the write deadline of the answer's writes, which would
// otherwise hold for the connection's next request, and counts an answer
// the client did not take whole (a write to it failed, or left: its
// request's context ended the copy) as the client's, as the fast codecs
// do: 499, a timeout when it stopped reading, else gone.
func (s *statusRecorder) ended(left bool) {
	if s.deadline {
		_ = s.ctl.SetWriteDeadline(time.Time{})
	}
	if !s.failed && !left || s.o.fault != noFault {
		return
	}
	s.o.status, s.o.fault, s.o.kind = 499, clientFault, ClientGone
	if s.stalled {
		s.o.kind = ClientTimeout
	}
}

// flushBroken sends the client what it has been written of an answer
// whose instance broke its body off, before ReverseProxy aborts the
// connection: net/http holds a short head and the first bytes in its
// buffer, and the abort would close the connection with none of them
// sent, where the fast codecs (and nginx) send the head, then cut. The
// client sees the answer it was given end early, not a connection that
// closed without an answer, which it could take for a request never
// served.
func (s *statusRecorder) flushBroken() {
	if s.ctl == nil {
		s.ctl = http.NewResponseController(s.ResponseWriter)
	}
	_ = s.ctl.Flush()
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// serveNetHTTP serves ln with net/http only (the fast codec off), behind
// the framing guard.
func serveNetHTTP(srv *http.Server, ln net.Listener, rt *Router) error {
	return srv.Serve(h1.GuardListener(ln, rt.refused))
}

// refused counts a request refused for faulty framing.
func (rt *Router) refused() { rt.metrics.clientError(ClientMalformed) }
