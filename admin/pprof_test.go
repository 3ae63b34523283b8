package admin

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/state"
)

// pprofPaths are every endpoint served under /debug/pprof/, with cheap
// parameters for the ones that would otherwise run for 30 seconds.
var pprofPaths = []string{
	"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1", "/debug/pprof/symbol",
	"/debug/pprof/trace?seconds=0.1", "/debug/pprof/heap", "/debug/pprof/goroutine", "/debug/pprof/allocs",
	"/debug/pprof/block", "/debug/pprof/mutex", "/debug/pprof/threadcreate",
}

// newPprofAPI serves the admin API with profiling on or off over a real
// loopback listener, logging to the returned buffer.
func newPprofAPI(t *testing.T, token string, on bool) (*httptest.Server, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	h := New(Config{
		Token: token, Controller: &fakeController{st: state.State{Active: "blue", Generation: 1}},
		Health: fakeHealth{}, Colors: [2]string{"blue", "green"},
		Applied: func() (string, uint64) { return "blue", 1 },
		Ready:   func() (bool, string) { return true, "" },
		Log:     slog.New(slog.NewJSONHandler(logs, nil)),
		Pprof:   on,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, logs
}

// get sends a request and returns the status, the headers and the body.
func get(t *testing.T, method, url, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, b := testkit.Do(t, client, req)
	return res.StatusCode, res.Header, b
}

func errorCode(t *testing.T, hdr http.Header, body []byte) string {
	t.Helper()
	if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("error answer is not JSON: %s %q", hdr.Get("Content-Type"), body)
	}
	var e ErrorBody
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" || e.Code == "" {
		t.Fatalf("error answer %q is not {error, code}: %v", body, err)
	}
	return e.Code
}

// TestPprofOffIs404: without Pprof nothing is served under /debug/pprof,
// not even with the right token.
func TestPprofOffIs404(t *testing.T) {
	srv, _ := newPprofAPI(t, "tok", false)
	for _, p := range append(pprofPaths, "/debug/pprof") {
		code, hdr, body := get(t, http.MethodGet, srv.URL+p, "Bearer tok")
		if code != http.StatusNotFound || errorCode(t, hdr, body) != "not_found" {
			t.Errorf("%s with profiling off: %d %q, want 404 not_found", p, code, body)
		}
	}
	var routes []string
	_ = chi.Walk(New(Config{Token: "tok", Log: slog.New(slog.DiscardHandler)}).(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, "/debug") {
			routes = append(routes, method+" "+route)
		}
		return nil
	})
	if len(routes) != 0 {
		t.Fatalf("profiling off, yet the router has %v", routes)
	}
}

// TestPprofNeedsToken: every request under /debug/pprof, GET included, an
// unknown profile and the bare path too, answers 401 in the admin API's
// error shape without the right token, and the token never reaches the log.
func TestPprofNeedsToken(t *testing.T) {
	const token = "pprof-token-4711"
	srv, logs := newPprofAPI(t, token, true)
	wrong := []string{"", "Bearer", "Bearer ", "Bearer wrong-token-0815", token, "Basic cHByb2YtdG9rZW4tNDcxMTo=", "Bearer " + token + "x", "bearer " + token}
	paths := append(pprofPaths, "/debug/pprof", "/debug/pprof/nonexistent", "/debug/pprof/heap?debug=1")
	n := 0
	for _, p := range paths {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
			for _, auth := range wrong {
				start := time.Now()
				code, hdr, body := get(t, method, srv.URL+p, auth)
				n++
				if code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" {
					t.Fatalf("%s %s with %q: %d %q, want 401", method, p, auth, code, body)
				}
				if method != http.MethodHead && errorCode(t, hdr, body) != "unauthorized" {
					t.Fatalf("%s %s with %q: code %q", method, p, auth, body)
				}
				if d := time.Since(start); d > 500*time.Millisecond {
					t.Fatalf("%s %s with %q took %v: a refused profile must not run", method, p, auth, d)
				}
			}
		}
	}
	out := logs.String()
	if c := strings.Count(out, "admin request refused"); c != n {
		t.Errorf("%d refusals logged, want %d", c, n)
	}
	for _, secret := range []string{token, "wrong-token-0815", "cHByb2YtdG9rZW4tNDcxMTo="} {
		if strings.Contains(out, secret) {
			t.Errorf("the log contains a sent token %q", secret)
		}
	}
}

// TestPprofWithoutTokenRefusesAll: the admin package fails closed when
// profiling is on but no token is configured (serve refuses to start so).
func TestPprofWithoutTokenRefusesAll(t *testing.T) {
	srv, _ := newPprofAPI(t, "", true)
	for _, p := range pprofPaths {
		for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer x"} {
			if code, _, body := get(t, http.MethodGet, srv.URL+p, auth); code != http.StatusUnauthorized {
				t.Fatalf("%s with %q and no token configured: %d %q", p, auth, code, body)
			}
		}
	}
	// The mutating calls keep their own rule: no token, no check.
	if code, _, body := get(t, http.MethodPost, srv.URL+"/admin/cutover", ""); code != http.StatusOK {
		t.Fatalf("cutover without a configured token: %d %q", code, body)
	}
}

// TestPprofEveryRouteNeedsToken walks the router, so a profiling route
// added later (of any method) is covered too.
func TestPprofEveryRouteNeedsToken(t *testing.T) {
	const token = "walk-token-0042"
	logs := &testkit.Buffer{}
	h := New(Config{Token: token, Pprof: true, Log: slog.New(slog.NewJSONHandler(logs, nil))})
	var routes []string
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, "/debug/pprof") {
			routes = append(routes, method+" "+route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) < 12 {
		t.Fatalf("found only %v", routes)
	}
	for _, mr := range routes {
		method, route, _ := strings.Cut(mr, " ")
		for _, auth := range []string{"", "Bearer nope", token} {
			req := httptest.NewRequest(method, route+"?seconds=1", nil) // short, should the guard ever be missing
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s with %q: %d, want 401", mr, auth, rec.Code)
			}
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the log contains the token")
	}
	t.Logf("%d profiling routes, all 401 without the token: %v", len(routes), routes)
}

// TestPprofServesWithToken: with the token every endpoint answers, and a
// one-second CPU profile is a non-empty gzipped profile.
func TestPprofServesWithToken(t *testing.T) {
	const token = "serve-token-1234"
	srv, logs := newPprofAPI(t, token, true)
	auth := "Bearer " + token

	code, _, body := get(t, http.MethodGet, srv.URL+"/debug/pprof/", auth)
	if code != 200 || !bytes.Contains(body, []byte("heap")) || !bytes.Contains(body, []byte("goroutine")) {
		t.Fatalf("index: %d %.200q", code, body)
	}
	code, _, body = get(t, http.MethodGet, srv.URL+"/debug/pprof/heap?debug=1", auth)
	if code != 200 || !bytes.Contains(body, []byte("heap profile:")) {
		t.Fatalf("heap?debug=1: %d %.200q", code, body)
	}
	for _, p := range []string{"/debug/pprof/goroutine?debug=1", "/debug/pprof/allocs?debug=1", "/debug/pprof/block?debug=1",
		"/debug/pprof/mutex?debug=1", "/debug/pprof/threadcreate?debug=1", "/debug/pprof/cmdline", "/debug/pprof/symbol",
		"/debug/pprof/heap", "/debug/pprof/trace?seconds=0.1"} {
		if code, _, body := get(t, http.MethodGet, srv.URL+p, auth); code != 200 || len(body) == 0 {
			t.Errorf("%s: %d, %d bytes", p, code, len(body))
		}
	}
	code, hdr, _ := get(t, http.MethodGet, srv.URL+"/debug/pprof?x=1", auth)
	if code != http.StatusMovedPermanently || hdr.Get("Location") != "/debug/pprof/?x=1" {
		t.Errorf("bare /debug/pprof: %d to %q, want a redirect to /debug/pprof/", code, hdr.Get("Location"))
	}
	code, hdr, body = get(t, http.MethodGet, srv.URL+"/debug/pprof/nonexistent", auth)
	if code != http.StatusNotFound || errorCode(t, hdr, body) != "not_found" {
		t.Errorf("unknown profile with the token: %d %q", code, body)
	}

	start := time.Now()
	code, _, body = get(t, http.MethodGet, srv.URL+"/debug/pprof/profile?seconds=1", auth)
	took := time.Since(start)
	if code != 200 {
		t.Fatalf("profile: %d %q", code, body)
	}
	if took < time.Second {
		t.Errorf("a 1-second profile came back after %v", took)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("profile is not gzipped (%d bytes): %v", len(body), err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || len(raw) == 0 {
		t.Fatalf("profile: %d bytes after gunzip, %v", len(raw), err)
	}
	t.Logf("CPU profile: %d bytes gzipped, %d raw, in %v", len(body), len(raw), took.Round(time.Millisecond))

	if strings.Contains(logs.String(), token) {
		t.Error("the log contains the token")
	}
}
