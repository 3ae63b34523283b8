package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestFirstProbeDecides(t *testing.T) {
	for _, tc := range []struct {
		name    string
		healthy bool
	}{
		{"pass makes it up", true},
		{"failure makes it down", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, tc.healthy)
			rep := &recorder{}
			// Rise and Fall far above 1: the first result still decides.
			c := NewChecker("blue", []*url.URL{b.URL(t)}, Config{Rise: 5, Fall: 5}, nil, rep, nil, nil, nil)
			c.CheckOnce(t.Context())

			want := 0
			if tc.healthy {
				want = 1
			}
			if got := c.Healthy(); got != want {
				t.Errorf("Healthy() = %d, want %d", got, want)
			}
			if st := c.Status(); len(st) != 1 || st[0].Healthy != tc.healthy || !st[0].Checked {
				t.Errorf("Status() = %+v, want one checked instance with Healthy %v", st, tc.healthy)
			}
			wantEv := []event{{b.srv.URL, tc.healthy}}
			if got := rep.take(); !slices.Equal(got, wantEv) {
				t.Errorf("reports = %v, want %v", got, wantEv)
			}
		})
	}
}

func TestRiseFall(t *testing.T) {
	// steps: P = backend passes, F = fails. want: U/D = healthy after each step.
	// events: the Reporter's calls, U = up, D = down.
	for _, tc := range []struct {
		name       string
		rise, fall int
		steps      string
		want       string
		events     string
	}{
		{"two failures keep it up, the third downs it", 2, 3, "PFFF", "UUUD", "UD"},
		{"one pass after down keeps it down, the second raises it", 2, 3, "PFFFPP", "UUUDDU", "UDU"},
		{"first failure downs it, then rise", 2, 3, "FPP", "DDU", "DU"},
		{"a failure resets the pass streak", 2, 3, "FPFPP", "DDDDU", "DU"},
		{"a pass resets the failure streak", 2, 3, "PFFPFFF", "UUUUUUD", "UD"},
		{"steady state reports nothing more", 2, 3, "PPPPP", "UUUUU", "U"},
		{"rise 1 fall 1 follows every result", 1, 1, "PFPFF", "UDUDD", "UDUD"},
		{"zero rise and fall take defaults 2 and 3", 0, 0, "PFFFPP", "UUUDDU", "UDU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, true)
			rep := &recorder{}
			c := NewChecker("green", []*url.URL{b.URL(t)}, Config{Rise: tc.rise, Fall: tc.fall}, nil, rep, nil, nil, nil)
			var got, events strings.Builder
			for _, s := range tc.steps {
				b.healthy.Store(s == 'P')
				c.CheckOnce(t.Context())
				got.WriteString(map[bool]string{true: "U", false: "D"}[c.Healthy() == 1])
				for _, ev := range rep.take() {
					if ev.instance != b.srv.URL {
						t.Errorf("report for %q, want %q", ev.instance, b.srv.URL)
					}
					events.WriteString(map[bool]string{true: "U", false: "D"}[ev.up])
				}
			}
			if got.String() != tc.want {
				t.Errorf("health after %s = %s, want %s", tc.steps, got.String(), tc.want)
			}
			if events.String() != tc.events {
				t.Errorf("reports after %s = %s, want %s", tc.steps, events.String(), tc.events)
			}
		})
	}
}

func TestStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		code    int
		pass    bool
		wantErr string
	}{
		{200, true, ""},
		{204, true, ""},
		{302, true, ""}, // not followed
		{399, true, ""},
		{400, false, "status 400"},
		{404, false, "status 404"},
		{500, false, "status 500"},
		{503, false, "status 503"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			var hits int
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				hits++
				mu.Unlock()
				if tc.code == 302 {
					http.Redirect(w, r, "/elsewhere", http.StatusFound)
					return
				}
				w.WriteHeader(tc.code)
			}))
			t.Cleanup(srv.Close)
			c := NewChecker("blue", []*url.URL{mustParse(t, srv.URL)}, Config{}, srv.Client(), nil, nil, nil, nil)
			c.CheckOnce(t.Context())
			st := c.Status()[0]
			if st.Healthy != tc.pass || st.LastError != tc.wantErr {
				t.Errorf("status %d: Healthy %v LastError %q, want %v %q", tc.code, st.Healthy, st.LastError, tc.pass, tc.wantErr)
			}
			mu.Lock()
			defer mu.Unlock()
			if hits != 1 {
				t.Errorf("backend saw %d requests, want 1 (redirects are not followed)", hits)
			}
		})
	}
}

func TestLastErrorAndLastCheck(t *testing.T) {
	b := newBackend(t, false)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	c := NewChecker("blue", []*url.URL{b.URL(t)}, Config{Rise: 1}, nil, nil, nil, nil, clk.now)

	c.CheckOnce(t.Context())
	st := c.Status()[0]
	if st.LastError != "status 503" || !st.LastCheck.Equal(t0) || st.Healthy {
		t.Errorf("after a failure: %+v, want LastError %q LastCheck %v unhealthy", st, "status 503", t0)
	}

	clk.add(time.Minute)
	b.healthy.Store(true)
	c.CheckOnce(t.Context())
	st = c.Status()[0]
	if st.LastError != "" || !st.LastCheck.Equal(t0.Add(time.Minute)) || !st.Healthy {
		t.Errorf("after a pass: %+v, want no LastError, LastCheck %v, healthy", st, t0.Add(time.Minute))
	}
}

func TestTransportErrorIsShortAndSecretFree(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close() // nothing listens there any more

	u := mustParse(t, "http://user:s3cret@"+addr)
	c := NewChecker("blue", []*url.URL{u}, Config{}, nil, nil, nil, nil, nil)
	c.CheckOnce(t.Context())
	st := c.Status()[0]
	if st.Healthy || !st.Checked {
		t.Fatalf("status = %+v, want checked and unhealthy", st)
	}
	if st.LastError == "" || len(st.LastError) > maxErrorLen+len("…") {
		t.Errorf("LastError = %q, want a short error", st.LastError)
	}
	for _, bad := range []string{"s3cret", "http://"} {
		if strings.Contains(st.LastError, bad) {
			t.Errorf("LastError = %q, contains %q", st.LastError, bad)
		}
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	c := NewChecker("blue", []*url.URL{mustParse(t, srv.URL)}, Config{Timeout: 50 * time.Millisecond}, nil, nil, nil, nil, nil)
	start := time.Now()
	c.CheckOnce(t.Context())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("CheckOnce took %v with a 50ms timeout", d)
	}
	st := c.Status()[0]
	if st.Healthy || !strings.Contains(st.LastError, "timeout") {
		t.Errorf("status = %+v, want unhealthy with a timeout error", st)
	}
}

func TestBoundedBodyRead(t *testing.T) {
	// The backend writes 10 MB and then keeps the response open: a probe
	// that read to the end would hang until its timeout and fail.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for n := 0; n < 10<<20; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)

	c := NewChecker("blue", []*url.URL{mustParse(t, srv.URL)}, Config{Timeout: 10 * time.Second}, nil, nil, nil, nil, nil)
	start := time.Now()
	c.CheckOnce(t.Context())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("CheckOnce took %v", d)
	}
	if st := c.Status()[0]; !st.Healthy {
		t.Errorf("status = %+v, want healthy", st)
	}
}

func TestProbeRequest(t *testing.T) {
	for _, tc := range []struct {
		base, path, want string
	}{
		{"", "/health", "/health"},
		{"", "", "/health"}, // default path
		{"/app", "/health", "/app/health"},
		{"/app/", "/health", "/app/health"},
		{"/app", "health", "/app/health"},
		{"", "/health?deep=1", "/health?deep=1"},
		{"/app", "/status/ready", "/app/status/ready"},
	} {
		t.Run(tc.base+" + "+tc.path, func(t *testing.T) {
			b := newBackend(t, true)
			c := NewChecker("blue", []*url.URL{mustParse(t, b.srv.URL+tc.base)}, Config{Path: tc.path}, nil, nil, nil, nil, nil)
			c.CheckOnce(t.Context())
			if got := *b.path.Load(); got != tc.want {
				t.Errorf("probe requested %q, want %q", got, tc.want)
			}
			if got := *b.agent.Load(); got != "bluegreen-health" {
				t.Errorf("User-Agent = %q, want bluegreen-health", got)
			}
			if st := c.Status()[0]; st.URL != b.srv.URL+tc.base {
				t.Errorf("Status URL = %q, want the configured %q", st.URL, b.srv.URL+tc.base)
			}
		})
	}
}

func TestReady(t *testing.T) {
	up, down := newBackend(t, true), newBackend(t, false)
	c := NewChecker("blue", []*url.URL{up.URL(t), down.URL(t)}, Config{}, nil, nil, nil, nil, nil)
	if c.Color() != "blue" {
		t.Errorf("Color() = %q", c.Color())
	}
	if c.Ready() {
		t.Error("Ready() before the first probe")
	}
	for _, st := range c.Status() {
		if st.Checked || st.Healthy || !st.LastCheck.IsZero() || st.LastError != "" {
			t.Errorf("before the first probe: %+v", st)
		}
	}

	c.CheckOnce(t.Context())
	if !c.Ready() {
		t.Error("not Ready() after CheckOnce")
	}
	st := c.Status()
	if len(st) != 2 || st[0].URL != up.srv.URL || st[1].URL != down.srv.URL {
		t.Fatalf("Status() = %+v, want the configured order", st)
	}
	if !st[0].Healthy || st[1].Healthy || c.Healthy() != 1 {
		t.Errorf("Status() = %+v, Healthy() = %d; want first up, second down", st, c.Healthy())
	}
}

func TestCheckOnceCanceledIsNotCounted(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	rep := &recorder{}
	c := NewChecker("blue", []*url.URL{mustParse(t, srv.URL)}, Config{Timeout: time.Minute}, nil, rep, nil, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.CheckOnce(ctx)
	}()
	<-entered
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("CheckOnce did not return after cancel")
	}
	if c.Ready() || len(rep.take()) != 0 {
		t.Errorf("a canceled probe was counted: Ready %v, status %+v", c.Ready(), c.Status())
	}
}

func TestConcurrentUseNeverOverlapsProbes(t *testing.T) {
	b := newBackend(t, true)
	b.work = time.Millisecond
	rep := &recorder{}
	c := NewChecker("blue", []*url.URL{b.URL(t)}, Config{Rise: 1, Fall: 1}, nil, rep, nil, nil, nil)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				b.healthy.Store((i+j)%2 == 0)
				c.CheckOnce(t.Context())
				_ = c.Status()
				_ = c.Healthy()
				_ = c.Ready()
			}
		})
	}
	wg.Wait()
	if got := b.hits.Load(); got != 40 {
		t.Errorf("backend saw %d probes, want 40", got)
	}
	if got := b.maxSeen.Load(); got != 1 {
		t.Errorf("up to %d probes of one instance overlapped", got)
	}
	// Reports alternate, starting from the first result, and end on the
	// current health.
	ev := rep.take()
	for i := 1; i < len(ev); i++ {
		if ev[i].up == ev[i-1].up {
			t.Fatalf("two reports in a row with up=%v: %v", ev[i].up, ev)
		}
	}
	if len(ev) == 0 || ev[len(ev)-1].up != (c.Healthy() == 1) {
		t.Errorf("last report %v does not match Healthy() = %d", ev, c.Healthy())
	}
}

func TestReporterFunc(t *testing.T) {
	var got []event
	var rep Reporter = ReporterFunc(func(instance string, up bool) { got = append(got, event{instance, up}) })
	rep.SetStatus("http://a", true)
	rep.SetStatus("http://b", false)
	if want := []event{{"http://a", true}, {"http://b", false}}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{Path: "/health", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Jitter: 0.1}},
		{"set", Config{Path: "/hz", Interval: time.Minute, Timeout: 3 * time.Second, Rise: 4, Fall: 5, Jitter: 0.5},
			Config{Path: "/hz", Interval: time.Minute, Timeout: 3 * time.Second, Rise: 4, Fall: 5, Jitter: 0.5}},
		{"negative jitter means none", Config{Jitter: -1}, Config{Path: "/health", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Jitter: 0}},
		{"jitter capped at 1", Config{Jitter: 7}, Config{Path: "/health", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Jitter: 1}},
		{"negative values", Config{Interval: -1, Timeout: -1, Rise: -1, Fall: -1}, Config{Path: "/health", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Jitter: 0.1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.withDefaults(); got != tc.want {
				t.Errorf("withDefaults() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		jitter float64
		max    time.Duration
	}{
		{"default", 0, 10 * time.Millisecond},
		{"half", 0.5, 50 * time.Millisecond},
		{"none", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewChecker("blue", nil, Config{Interval: 100 * time.Millisecond, Jitter: tc.jitter}, nil, nil, nil, nil, nil)
			for range 1000 {
				d := c.jitter()
				if d < 0 || (tc.max == 0 && d != 0) || (tc.max > 0 && d >= tc.max) {
					t.Fatalf("jitter() = %v, want in [0, %v)", d, tc.max)
				}
			}
		})
	}
}

func TestShorten(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijkl", 5, "abcde…"},
		{"aé", 2, "a…"}, // never splits a rune
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := shorten(tc.in, tc.n); got != tc.want {
				t.Errorf("shorten(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

// TestLocalFaultsSayNothingAboutTheBackend: a probe the proxy could not send
// for want of a resource of its own (descriptors, local ports, memory)
// neither passes nor fails the instance: a proxy out of descriptors must
// not take every healthy instance down (and, after a cutover, roll a good
// release back). A refused connection, the instance's doing, still fails
// it.
func TestLocalFaultsSayNothingAboutTheBackend(t *testing.T) {
	b := newBackend(t, true)
	var dialErr atomic.Pointer[error] // nil: dial the backend
	tr := &http.Transport{
		DisableKeepAlives: true, // every probe dials
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if e := dialErr.Load(); e != nil {
				return nil, &net.OpError{Op: "dial", Net: network, Err: *e}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	rep := &recorder{}
	c := NewChecker("green", []*url.URL{b.URL(t)}, Config{Rise: 1, Fall: 1}, &http.Client{Transport: tr}, rep, nil, nil, nil)
	c.CheckOnce(t.Context())
	if c.Healthy() != 1 {
		t.Fatalf("healthy backend: %+v", c.Status())
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.EADDRNOTAVAIL, syscall.ENOBUFS} {
		e := error(os.NewSyscallError("socket", errno))
		dialErr.Store(&e)
		c.CheckOnce(t.Context())
		if c.Healthy() != 1 {
			t.Errorf("a probe not sent (%v) took the instance down: %+v", errno, c.Status())
		}
	}
	e := error(os.NewSyscallError("connect", syscall.ECONNREFUSED))
	dialErr.Store(&e)
	c.CheckOnce(t.Context())
	if c.Healthy() != 0 {
		t.Errorf("a refused probe left the instance up: %+v", c.Status())
	}
	events := ""
	for _, ev := range rep.take() {
		events += map[bool]string{true: "U", false: "D"}[ev.up]
	}
	if events != "UD" {
		t.Errorf("reports %q, want up then down only at the refusal", events)
	}
}
