package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// backend is a real loopback instance that answers "<color> <n>".
type backend struct {
	*httptest.Server
	color string
	hits  atomic.Int64
}

func newBackend(t *testing.T, color string, n int) *backend {
	t.Helper()
	b := &backend{color: color}
	name := fmt.Sprintf("%s-%d", color, n)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("X-Instance", name)
		_, _ = io.WriteString(w, color)
	}))
	t.Cleanup(b.Close)
	return b
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type fixture struct {
	rt    *Router
	front *httptest.Server
	reg   *prometheus.Registry
}

func newFixture(t *testing.T, blue, green []string, mutate func(*Config)) *fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		PreviewHeader: "X-Bluegreen-Preview",
		PreviewCookie: "bluegreen_preview",
		Metrics:       m,
		Log:           testLogger(t),
		DrainTimeout:  time.Minute,
	}
	cfg.Colors[0].Name, cfg.Colors[1].Name = "blue", "green"
	for _, s := range blue {
		cfg.Colors[0].URLs = append(cfg.Colors[0].URLs, mustURL(t, s))
	}
	for _, s := range green {
		cfg.Colors[1].URLs = append(cfg.Colors[1].URLs, mustURL(t, s))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	rt, err := NewRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rt.pools {
		for _, b := range p.backends {
			p.SetStatus(b.name, true)
		}
	}
	front := httptest.NewServer(rt)
	t.Cleanup(rt.CloseIdleConnections) // after front.Close: cleanups run last-in first-out
	t.Cleanup(front.Close)
	return &fixture{rt: rt, front: front, reg: reg}
}

func get(t *testing.T, c *http.Client, u string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(body), res.Header
}

func TestRoutingActiveAndPreview(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	c := f.front.Client()

	cases := []struct {
		name   string
		active string
		hdr    map[string]string
		want   string
	}{
		{"active blue", "blue", nil, "blue"},
		{"preview header goes to idle", "blue", map[string]string{"X-Bluegreen-Preview": "1"}, "green"},
		{"preview header true", "blue", map[string]string{"X-Bluegreen-Preview": "true"}, "green"},
		{"preview header 0 ignored", "blue", map[string]string{"X-Bluegreen-Preview": "0"}, "blue"},
		{"preview cookie", "blue", map[string]string{"Cookie": "a=b; bluegreen_preview=1"}, "green"},
		{"other cookie ignored", "blue", map[string]string{"Cookie": "bluegreen_preview_x=1"}, "blue"},
		{"active green", "green", nil, "green"},
		{"preview after switch goes to blue", "green", map[string]string{"X-Bluegreen-Preview": "1"}, "blue"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.rt.SetActive(tc.active, uint64(i+1)); err != nil {
				t.Fatal(err)
			}
			code, body, _ := get(t, c, f.front.URL+"/x", tc.hdr)
			if code != 200 || body != tc.want {
				t.Fatalf("got %d %q, want 200 %q", code, body, tc.want)
			}
		})
	}
}

// Preview requests are honoured only from Config.PreviewFrom's peers, on
// every codec: from any other peer the header and the cookie are ignored
// and the active colour answers, and the refusal is logged, once a minute
// at most.
func TestPreviewFrom(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	for _, c := range []struct {
		name string
		from []netip.Prefix
		want string
	}{
		{"loopback in", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")}, "green"},
		{"loopback out", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}, "blue"},
		{"any", nil, "green"},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &testkit.Buffer{}
			f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(cfg *Config) {
				cfg.PreviewFrom = c.from
				cfg.Log = slog.New(slog.NewJSONHandler(logs, nil))
			})
			fronts := []struct {
				name, url string
				client    *http.Client
			}{
				{"net/http", f.front.URL, f.front.Client()},
				{"fast", startFast(t, f.rt, nil).url, http.DefaultClient},
				{"HTTP/2", startH2(t, f.rt, nil).url, h2Client(t)},
			}
			for _, fr := range fronts {
				for _, hdr := range []map[string]string{{"X-Bluegreen-Preview": "1"}, {"Cookie": "bluegreen_preview=1"}} {
					if code, body, _ := get(t, fr.client, fr.url+"/x", hdr); code != 200 || body != c.want {
						t.Errorf("%s %v: %d %q, want 200 %q", fr.name, hdr, code, body, c.want)
					}
				}
			}
			const line = "its client is not in BLUEGREEN_PREVIEW_FROM"
			if n := strings.Count(logs.String(), line); c.want == "blue" && n != 1 || c.want == "green" && n != 0 {
				t.Errorf("%d log lines of the refusal:\n%s", n, logs)
			}
		})
	}
}

func TestPreviewOfUnhealthyIdleIs503NeverActive(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	f.rt.Pool("green").SetStatus(green.URL, false)
	code, body, hdr := get(t, f.front.Client(), f.front.URL+"/", map[string]string{"X-Bluegreen-Preview": "1"})
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "green") {
		t.Fatalf("got %d %q, want 503 naming green", code, body)
	}
	if hdr.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if blue.hits.Load() != 0 || green.hits.Load() != 0 {
		t.Fatalf("a backend was reached: blue %d green %d", blue.hits.Load(), green.hits.Load())
	}
}

func TestRoundRobinOverHealthyAndNoFallOver(t *testing.T) {
	b0, b1, b2 := newBackend(t, "blue", 0), newBackend(t, "blue", 1), newBackend(t, "blue", 2)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{b0.URL, b1.URL, b2.URL}, []string{green.URL}, nil)
	c := f.front.Client()

	for range 30 {
		if code, _, _ := get(t, c, f.front.URL, nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	for i, b := range []*backend{b0, b1, b2} {
		if got := b.hits.Load(); got != 10 {
			t.Errorf("instance %d got %d requests, want 10", i, got)
		}
	}

	pool := f.rt.Pool("blue")
	pool.SetStatus(b1.URL, false)
	before0, before2 := b0.hits.Load(), b2.hits.Load()
	for range 20 {
		get(t, c, f.front.URL, nil)
	}
	if b1.hits.Load() != 10 {
		t.Errorf("unhealthy instance got traffic")
	}
	if b0.hits.Load()-before0+b2.hits.Load()-before2 != 20 {
		t.Errorf("healthy instances did not take all requests")
	}

	pool.SetStatus(b0.URL, false)
	pool.SetStatus(b2.URL, false)
	code, body, hdr := get(t, c, f.front.URL, nil)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "2" || !strings.Contains(body, "no healthy blue") {
		t.Fatalf("got %d %q Retry-After=%q", code, body, hdr.Get("Retry-After"))
	}
	if green.hits.Load() != 0 {
		t.Fatal("traffic fell over to the idle colour")
	}
	if got := testutil.ToFloat64(f.rt.pools[0].metrics.vec.WithLabelValues("blue", "503", "GET")); got != 1 {
		t.Fatalf("503 counted %v times", got)
	}
}

func TestLeastInflight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "slow")
	}))
	defer slow.Close()
	defer close(release)
	fast := newBackend(t, "blue", 1)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{slow.URL, fast.URL}, []string{green.URL}, func(c *Config) { c.Balance = LeastInflight })
	c := f.front.Client()
	// Occupy the slow instance (the other is down meanwhile); every following
	// request must then go to the idle one.
	pool := f.rt.Pool("blue")
	pool.SetStatus(fast.URL, false)
	go func() {
		res, err := c.Get(f.front.URL)
		if err == nil {
			res.Body.Close()
		}
	}()
	<-started
	pool.SetStatus(fast.URL, true)
	for range 10 {
		if _, body, _ := get(t, c, f.front.URL, nil); body != "blue" {
			t.Fatalf("got %q from the busy instance", body)
		}
	}
	if fast.hits.Load() != 10 {
		t.Fatalf("idle instance got %d of 10", fast.hits.Load())
	}
}

func TestForwardedHeadersAndHost(t *testing.T) {
	var got http.Header
	var host string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		host = r.Host
	}))
	defer be.Close()
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL + "/base"}, []string{green.URL}, nil)
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/p?q=1", nil)
	req.Host = "app.example"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop")
	res, err := f.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if host != "app.example" {
		t.Errorf("Host %q", host)
	}
	if xff := got.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q: a client-sent value must not be trusted", xff)
	}
	if got.Get("X-Forwarded-Host") != "app.example" || got.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("forwarded host/proto %q %q", got.Get("X-Forwarded-Host"), got.Get("X-Forwarded-Proto"))
	}
	if got.Get("X-Secret") != "" {
		t.Error("hop-by-hop header named in Connection was forwarded")
	}
}

func TestUpstreamErrorsClassified(t *testing.T) {
	// A listener that is closed: connections are refused.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()
	green := newBackend(t, "green", 0)

	cases := []struct {
		name   string
		url    string
		mutate func(*Config)
		status int
		kind   string
	}{
		{"refused is 502 dial", deadURL, nil, http.StatusBadGateway, KindDial},
		{"header timeout is 504", hang.URL, func(c *Config) {
			c.Transport = NewTransport(TransportConfig{ResponseHeaderTimeout: 50 * time.Millisecond})
		}, http.StatusGatewayTimeout, KindTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, []string{tc.url}, []string{green.URL}, tc.mutate)
			code, _, _ := get(t, f.front.Client(), f.front.URL, nil)
			if code != tc.status {
				t.Fatalf("status %d, want %d", code, tc.status)
			}
			errs := testutil.ToFloat64(f.rt.pools[0].backends[0].errs[indexOfKind(tc.kind)])
			if errs != 1 {
				t.Fatalf("%s errors = %v, want 1", tc.kind, errs)
			}
		})
	}
}

func indexOfKind(k string) int {
	for i, v := range kinds {
		if v == k {
			return i
		}
	}
	return -1
}

// TestInflightRequestFinishesOnOldColour holds a request inside blue while
// the router switches to green: it completes on blue, the next goes to green.
func TestInflightRequestFinishesOnOldColour(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	blue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "blue")
	}))
	defer blue.Close()
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	c := f.front.Client()

	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Get(f.front.URL + "/hold")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		done <- result{string(b), err}
	}()
	<-entered
	if err := f.rt.SetActive("green", 1); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := get(t, c, f.front.URL, nil); body != "green" {
		t.Fatalf("request after switch got %q", body)
	}
	close(release)
	r := <-done
	if r.err != nil || r.body != "blue" {
		t.Fatalf("in-flight request: %q %v, want blue", r.body, r.err)
	}
	if color, gen := f.rt.Active(); color != "green" || gen != 1 {
		t.Fatalf("Active() = %s %d", color, gen)
	}
}

// TestSwitchUnderLoad runs 64 keep-alive clients through the router while it
// switches 50 times: nothing fails, and every request sent after a switch
// returned is answered by the new colour.
func TestSwitchUnderLoad(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	// started counts switches begun, done those returned; even means blue,
	// odd green. A request sent after switch k returned must get colour k
	// unless another switch began while it ran.
	var started, done atomic.Int64
	colorOf := func(g int64) string { return [2]string{"blue", "green"}[g%2] }
	var failed, wrong, total atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				before := done.Load()
				res, err := c.Get(f.front.URL)
				if err != nil {
					failed.Add(1)
					continue
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				total.Add(1)
				if err != nil || res.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				if string(b) != colorOf(before) && started.Load() == before {
					wrong.Add(1)
				}
			}
		}()
	}
	for i := range int64(50) {
		started.Store(i + 1)
		if err := f.rt.SetActive(colorOf(i+1), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
		done.Store(i + 1)
		time.Sleep(5 * time.Millisecond) // pacing between switches, not a wait for an event
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 || wrong.Load() != 0 {
		t.Fatalf("%d requests: %d failed, %d answered by the old colour after the switch", total.Load(), failed.Load(), wrong.Load())
	}
	if total.Load() < 100 {
		t.Fatalf("only %d requests ran", total.Load())
	}
	t.Logf("%d requests across 50 switches, 0 failed", total.Load())
}

func TestMetricsLabelsAndInflight(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	c := f.front.Client()
	get(t, c, f.front.URL, nil)
	req, _ := http.NewRequest("BREW", f.front.URL, nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := testutil.ToFloat64(f.rt.pools[0].metrics.vec.WithLabelValues("blue", "200", "GET")); got != 1 {
		t.Errorf("GET 200 = %v", got)
	}
	if got := testutil.ToFloat64(f.rt.pools[0].metrics.vec.WithLabelValues("blue", "200", "OTHER")); got != 1 {
		t.Errorf("odd method not folded into OTHER: %v", got)
	}
	if got := testutil.ToFloat64(f.rt.pools[0].metrics.inflight); got != 0 {
		t.Errorf("inflight after requests = %v", got)
	}
	if n := testutil.CollectAndCount(f.reg, "bluegreen_request_duration_seconds"); n != 2 {
		t.Errorf("duration series = %d", n)
	}
}

func TestAccessLog(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	var buf syncBuffer
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(c *Config) {
		c.AccessLog = slog.New(slog.NewJSONHandler(&buf, nil))
	})
	get(t, f.front.Client(), f.front.URL+"/hello", nil)
	line := buf.String()
	for _, want := range []string{`"method":"GET"`, `"path":"/hello"`, `"status":200`, `"color":"blue"`, `"instance":"` + blue.URL + `"`, `"duration"`, `"proto":"HTTP/1.1"`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log %q lacks %s", line, want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNewRouterRejectsBadConfig(t *testing.T) {
	u := mustURL(t, "http://127.0.0.1:1")
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no logger", Config{Colors: [2]ColorConfig{{"blue", []*url.URL{u}}, {"green", []*url.URL{u}}}}},
		{"same names", Config{Log: testLogger(t), Colors: [2]ColorConfig{{"blue", []*url.URL{u}}, {"blue", []*url.URL{u}}}}},
		{"no instances", Config{Log: testLogger(t), Colors: [2]ColorConfig{{"blue", []*url.URL{u}}, {"green", nil}}}},
		{"not http", Config{Log: testLogger(t), Colors: [2]ColorConfig{{"blue", []*url.URL{mustURL(t, "ftp://x")}}, {"green", []*url.URL{u}}}}},
		{"duplicate", Config{Log: testLogger(t), Colors: [2]ColorConfig{{"blue", []*url.URL{u, u}}, {"green", []*url.URL{u}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewRouter(tc.cfg); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func wsEcho(t *testing.T, color string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(w, "data: %s %d\n\n", color, i); err != nil {
					return
				}
				if err := rc.Flush(); err != nil {
					return
				}
				select {
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte(color+":"), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func TestWebSocketAndStreamDrain(t *testing.T) {
	blue, green := wsEcho(t, "blue"), wsEcho(t, "green")
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(c *Config) { c.DrainTimeout = 200 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ws, _, err := websocket.Dial(ctx, strings.Replace(f.front.URL, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket through the proxy: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "blue:hi" {
		t.Fatalf("echo %q %v", msg, err)
	}

	res, err := f.front.Client().Get(f.front.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	buf := make([]byte, 64)
	if n, err := res.Body.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "data: blue") {
		t.Fatalf("first event %q %v", buf[:n], err)
	}
	if open, _ := f.rt.Streams("blue"); open != 2 {
		t.Fatalf("tracked streams on blue = %d, want 2", open)
	}

	if err := f.rt.SetActive("green", 1); err != nil {
		t.Fatal(err)
	}
	if _, draining := f.rt.Streams("blue"); draining != 2 {
		t.Fatalf("draining = %d, want 2", draining)
	}
	if got := testutil.ToFloat64(f.rt.pools[0].metrics.draining); got != 2 {
		t.Fatalf("draining gauge = %v", got)
	}
	// Still usable during the grace period.
	if err := ws.Write(ctx, websocket.MessageText, []byte("still")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "blue:still" {
		t.Fatalf("echo during drain %q %v", msg, err)
	}
	// After the drain timeout both are closed by the proxy.
	if _, _, err := ws.Read(ctx); err == nil {
		t.Fatal("websocket still open after drain")
	}
	if _, err := io.Copy(io.Discard, res.Body); err == nil {
		// A clean EOF is also a close; what matters is that it ended before ctx.
		if ctx.Err() != nil {
			t.Fatal("stream not closed before the deadline")
		}
	}
	if ctx.Err() != nil {
		t.Fatal("drain took longer than the test deadline")
	}
	if got := testutil.ToFloat64(f.rt.pools[0].metrics.draining); got != 0 {
		t.Fatalf("draining gauge after close = %v", got)
	}

	// A new WebSocket goes to green and is not drained.
	ws2, _, err := websocket.Dial(ctx, strings.Replace(f.front.URL, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.CloseNow()
	if err := ws2.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws2.Read(ctx); err != nil || string(msg) != "green:x" {
		t.Fatalf("echo %q %v", msg, err)
	}
	if n := f.rt.CloseStreams(); n != 1 {
		t.Fatalf("CloseStreams closed %d, want 1", n)
	}
}

func TestSwitchBackCancelsDrain(t *testing.T) {
	blue, green := wsEcho(t, "blue"), wsEcho(t, "green")
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(c *Config) { c.DrainTimeout = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(f.front.URL, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := f.rt.SetActive("green", 1); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.SetActive("blue", 2); err != nil {
		t.Fatal(err)
	}
	if _, draining := f.rt.Streams("blue"); draining != 0 {
		t.Fatalf("draining = %d after switching back", draining)
	}
	time.Sleep(150 * time.Millisecond) // longer than the drain timeout: the connection must survive it
	if err := ws.Write(ctx, websocket.MessageText, []byte("alive")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "blue:alive" {
		t.Fatalf("echo %q %v", msg, err)
	}
}
