package adminclient

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
)

func testOptions() Options {
	return Options{RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, RequestTimeout: 5 * time.Second}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestHealthURLFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string // "" for an error
	}{
		{nil, "http://127.0.0.1:8081"},
		{map[string]string{EnvListen: "127.0.0.1:9001"}, "http://127.0.0.1:9001"},
		{map[string]string{EnvListen: ":9001"}, "http://127.0.0.1:9001"},
		{map[string]string{EnvListen: "0.0.0.0:9001"}, "http://127.0.0.1:9001"},
		{map[string]string{EnvListen: "[::]:9001"}, "http://[::1]:9001"},
		{map[string]string{EnvListen: "[::1]:9001"}, "http://[::1]:9001"},
		{map[string]string{EnvListen: "admin.local:9001"}, "http://admin.local:9001"},
		{map[string]string{EnvListen: "0.0.0.0:9001", EnvURL: "http://10.1.2.3:7000"}, "http://10.1.2.3:7000"},
		{map[string]string{EnvListen: "9001"}, ""},
		{map[string]string{EnvListen: "0.0.0.0:"}, ""},
		{map[string]string{EnvURL: "ftp://x"}, ""},
	} {
		u, err := HealthURLFromEnv(envOf(tc.env))
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%v: got %s, want an error", tc.env, u)
		case tc.want == "":
			if !strings.Contains(err.Error(), "BLUEGREEN_ADMIN_") {
				t.Errorf("%v: error %q does not name the variable", tc.env, err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case u.String() != tc.want:
			t.Errorf("%v: got %s, want %s", tc.env, u, tc.want)
		}
	}
}

func TestTokenFromEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := TokenFromEnv(envOf(map[string]string{EnvTokenFile: path})); err != nil || tok != "from-file" {
		t.Errorf("file: %q %v", tok, err)
	}
	if tok, err := TokenFromEnv(envOf(map[string]string{EnvToken: "env"})); err != nil || tok != "env" {
		t.Errorf("env: %q %v", tok, err)
	}
	if _, err := TokenFromEnv(envOf(map[string]string{EnvToken: "secret", EnvTokenFile: path})); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("both set: %v", err)
	}
}

// TestClientCalls drives every call against a server that answers 503
// twice before each answer: reads and switches are retried, the token goes
// on POST only, refusals are *APIError and exit 1.
func TestClientCalls(t *testing.T) {
	var calls, authGets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%3 != 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodGet && r.Header.Get("Authorization") != "" {
			authGets.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "GET /admin/status":
			w.Write([]byte(`{"active":"blue","generation":4,"colors":{"blue":{"healthy":1,"total":1}}}`))
		case "GET /admin/history":
			if r.URL.Query().Get("limit") != "1" {
				t.Errorf("history query %q", r.URL.RawQuery)
			}
			w.Write([]byte(`{"history":[{"action":"cutover","from":"green","to":"blue","generation":4}]}`))
		case "POST /admin/cutover":
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			var req admin.SwitchRequest
			json.NewDecoder(r.Body).Decode(&req)
			w.Write([]byte(`{"active":"` + req.To + `","generation":5}`))
		case "POST /admin/rollback":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":"no previous colour","code":"no_previous"}`))
		case "GET /metrics":
			w.Write([]byte("bluegreen_state_generation 5\n"))
		}
	}))
	defer srv.Close()
	c := New(mustURL(t, srv.URL), "tok", testOptions())
	defer c.Close()
	ctx := t.Context()

	st, _, err := c.Status(ctx)
	if err != nil || st.Active != "blue" || st.Generation != 4 {
		t.Fatalf("status: %+v %v", st, err)
	}
	h, _, err := c.History(ctx, 1)
	if err != nil || len(h) != 1 || h[0].To != "blue" {
		t.Fatalf("history: %+v %v", h, err)
	}
	st, _, err = c.Cutover(ctx, admin.SwitchRequest{To: "green"})
	if err != nil || st.Active != "green" {
		t.Fatalf("cutover: %+v %v", st, err)
	}
	_, _, err = c.Rollback(ctx, admin.SwitchRequest{To: "blue"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Body.Code != "no_previous" || ExitCode(err) != ExitFailed {
		t.Fatalf("rollback: %v (exit %d)", err, ExitCode(err))
	}
	if m, err := c.Metrics(ctx); err != nil || !strings.Contains(string(m), "bluegreen_state_generation 5") {
		t.Fatalf("metrics: %q %v", m, err)
	}
	if n := calls.Load(); n != 15 {
		t.Errorf("%d requests, want 15 (two retries of each of 5 calls)", n)
	}
	if authGets.Load() != 0 {
		t.Error("the token was sent on a GET")
	}
}

func TestClientUnreachableAndCanceled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := mustURL(t, "http://"+ln.Addr().String())
	ln.Close() // nothing listens there now: every attempt is refused
	c := New(base, "", testOptions())
	_, _, err = c.Status(t.Context())
	var ue *UnreachableError
	if !errors.As(err, &ue) || ExitCode(err) != ExitUnreachable || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("status against a closed port: %v (exit %d)", err, ExitCode(err))
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := c.Status(ctx); !errors.Is(err, context.Canceled) || ExitCode(err) != ExitFailed {
		t.Fatalf("canceled: %v", err)
	}
}

func TestProbe(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"ready":false,"reason":"blue has no\nhealthy instance"}`))
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	base := mustURL(t, srv.URL)
	err := Probe(t.Context(), base, ReadyPath, 2*time.Second)
	var pe *ProbeError
	if !errors.As(err, &pe) || err.Error() != "/readyz answered 503 Service Unavailable: blue has no healthy instance" {
		t.Fatalf("not ready: %v", err)
	}
	if err := Probe(t.Context(), base, LivePath, 2*time.Second); err != nil {
		t.Fatalf("live: %v", err)
	}
	ready.Store(true)
	if err := Probe(t.Context(), base, ReadyPath, 2*time.Second); err != nil {
		t.Fatalf("ready: %v", err)
	}
}
