package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// fakeController records requests and answers with a preset error.
type fakeController struct {
	mu   sync.Mutex
	st   state.State
	err  error
	reqs []rollout.Request
}

func (f *fakeController) State() state.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeController) do(req rollout.Request, to string) (rollout.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	if f.err != nil {
		return rollout.Result{State: f.st}, f.err
	}
	f.st = state.State{Active: to, Previous: f.st.Active, Generation: f.st.Generation + 1,
		History: append(f.st.History, state.Event{To: to, Generation: f.st.Generation + 1, Reason: req.Reason})}
	return rollout.Result{Changed: true, State: f.st}, nil
}

func (f *fakeController) Cutover(ctx context.Context, req rollout.Request) (rollout.Result, error) {
	to := req.To
	if to == "" {
		to = "green"
	}
	return f.do(req, to)
}

func (f *fakeController) Rollback(ctx context.Context, req rollout.Request) (rollout.Result, error) {
	return f.do(req, "blue")
}

type fakeHealth map[string][]health.InstanceStatus

func (h fakeHealth) Healthy(color string) int {
	n := 0
	for _, i := range h[color] {
		if i.Healthy {
			n++
		}
	}
	return n
}

func (h fakeHealth) Instances(color string) []health.InstanceStatus { return h[color] }

func newAPI(t *testing.T, token string, ready bool) (*httptest.Server, *fakeController) {
	t.Helper()
	fc := &fakeController{st: state.State{Active: "blue", Generation: 1}}
	fh := fakeHealth{
		"blue":  {{URL: "http://b:1", Healthy: true, LastCheck: time.Unix(100, 0).UTC()}},
		"green": {{URL: "http://g:1", Healthy: false, LastError: "status 503"}},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "bluegreen_test_total", Help: "x"}))
	h := New(Config{
		Token: token, Controller: fc, Health: fh, Colors: [2]string{"blue", "green"},
		Applied:  func() (string, uint64) { return "blue", 1 },
		Ready:    func() (bool, string) { return ready, "not ready for a reason" },
		Gatherer: reg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Replica: "r1", Version: "v", LoopbackOnly: true,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, fc
}

func call(t *testing.T, method, url, body string, hdr ...string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(res.Body)
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("answer is not JSON: %q", b)
		}
	}
	return res.StatusCode, m, res.Header
}

func TestStatusShape(t *testing.T) {
	srv, _ := newAPI(t, "", true)
	code, m, _ := call(t, "GET", srv.URL+"/admin/status", "")
	if code != 200 || m["active"] != "blue" || m["generation"] != 1.0 || m["applied_generation"] != 1.0 || m["replica"] != "r1" {
		t.Fatalf("%d %v", code, m)
	}
	green := m["colors"].(map[string]any)["green"].(map[string]any)
	inst := green["instances"].([]any)[0].(map[string]any)
	if green["healthy"] != 0.0 || green["total"] != 1.0 || inst["last_error"] != "status 503" || inst["url"] != "http://g:1" {
		t.Fatalf("green %v", green)
	}
	if _, ok := m["changed"]; ok {
		t.Fatal("status carries changed")
	}
}

func TestSwitchErrorsMapToStatus(t *testing.T) {
	cases := []struct {
		err  error
		code int
		word string
	}{
		{fmt.Errorf("%w: purple", rollout.ErrInvalid), 400, "bad_request"},
		{fmt.Errorf("%w: green", rollout.ErrUnhealthy), 409, "unhealthy"},
		{fmt.Errorf("%w: gen", rollout.ErrConflict), 409, "conflict"},
		{rollout.ErrNoPrevious, 409, "no_previous"},
		{fmt.Errorf("%w: disk full", rollout.ErrStore), 503, "store_unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.word, func(t *testing.T) {
			srv, fc := newAPI(t, "", true)
			fc.err = tc.err
			for _, path := range []string{"/admin/cutover", "/admin/rollback"} {
				code, m, _ := call(t, "POST", srv.URL+path, "")
				if code != tc.code || m["code"] != tc.word || !strings.Contains(fmt.Sprint(m["error"]), tc.err.Error()) {
					t.Fatalf("%s: %d %v", path, code, m)
				}
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	srv, fc := newAPI(t, "", true)
	cases := []struct {
		name, method, path, body string
		code                     int
	}{
		{"not json", "POST", "/admin/cutover", "to=green", 400},
		{"null", "POST", "/admin/cutover", "null", 400},
		{"not an object", "POST", "/admin/rollback", `"green"`, 400},
		{"unknown field", "POST", "/admin/cutover", `{"colour":"green"}`, 400},
		{"trailing data", "POST", "/admin/cutover", `{"to":"green"} {}`, 400},
		{"wrong type", "POST", "/admin/cutover", `{"force":"yes"}`, 400},
		{"forged trigger", "POST", "/admin/cutover", `{"trigger":"auto-rollback"}`, 400},
		{"long reason", "POST", "/admin/rollback", `{"reason":"` + strings.Repeat("x", 2000) + `"}`, 400},
		{"too large", "POST", "/admin/cutover", `{"reason":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413},
		{"bad limit", "GET", "/admin/history?limit=0", "", 400},
		{"method", "GET", "/admin/cutover", "", 405},
		{"unknown path", "GET", "/admin/nope", "", 404},
		// Options go in the body: an ignored ?to=green would make the
		// cutover without a body flip to the other colour.
		{"query on cutover", "POST", "/admin/cutover?to=green", "", 400},
		{"query and body", "POST", "/admin/cutover?force", `{"to":"green"}`, 400},
		{"query on rollback", "POST", "/admin/rollback?reason=x", "", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, m, _ := call(t, tc.method, srv.URL+tc.path, tc.body)
			if code != tc.code || m["error"] == nil || m["error"] == "" {
				t.Fatalf("%d %v, want %d with a JSON reason", code, m, tc.code)
			}
		})
	}
	if len(fc.reqs) != 0 {
		t.Fatalf("bad requests reached the controller: %v", fc.reqs)
	}
	if _, m, _ := call(t, "POST", srv.URL+"/admin/cutover?to=green&dry=1", ""); !strings.Contains(fmt.Sprint(m["error"]), `"dry, to"`) {
		t.Fatalf("the refusal does not name the parameters: %v", m)
	}
	// A form (curl -d to=green) is told what to send, not that "to" is a
	// broken literal true.
	if _, m, _ := call(t, "POST", srv.URL+"/admin/cutover", "to=green"); !strings.Contains(fmt.Sprint(m["error"]), `want a JSON object such as {"to":"green"}, got "to=green"`) {
		t.Fatalf("the refusal of a form: %v", m)
	}
}

// A page on another site must not switch colours through the operator's
// browser: with no token set, a form posted to the loopback listener needs
// no body to flip. Browsers say where a request comes from; curl, the CLI
// and CI jobs say nothing and pass.
func TestCrossSiteSwitchRefused(t *testing.T) {
	srv, fc := newAPI(t, "", true)
	form := []string{"Content-Type", "application/x-www-form-urlencoded"}
	for _, hdr := range [][]string{
		{"Origin", "http://evil.example"},
		{"Origin", "null"},
		{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"},
		{"Sec-Fetch-Site", "same-site", "Origin", "http://other." + strings.TrimPrefix(srv.URL, "http://")},
	} {
		for _, path := range []string{"/admin/cutover", "/admin/rollback"} {
			code, m, _ := call(t, "POST", srv.URL+path, "", append(slices.Clone(form), hdr...)...)
			if code != 403 || m["code"] != "cross_origin" {
				t.Fatalf("POST %s with %q: %d %v, want 403 cross_origin", path, hdr, code, m)
			}
		}
	}
	if len(fc.reqs) != 0 {
		t.Fatalf("a cross-site request reached the controller: %v", fc.reqs)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/admin/status", "", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"); code != 200 {
		t.Fatalf("status refused to a cross-site read: %d", code)
	}
	// The status page's own fetch, and a client that is not a browser.
	if code, m, _ := call(t, "POST", srv.URL+"/admin/cutover", `{"to":"green"}`, "Origin", srv.URL, "Sec-Fetch-Site", "same-origin"); code != 200 {
		t.Fatalf("same-origin switch: %d %v", code, m)
	}
	if code, m, _ := call(t, "POST", srv.URL+"/admin/rollback", ""); code != 200 {
		t.Fatalf("switch without browser fields: %d %v", code, m)
	}
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	if code, m, _ := call(t, "POST", srv.URL+"/admin/cutover", "", "Host", "localhost"+port, "Origin", "http://localhost"+port, "Sec-Fetch-Site", "same-origin"); code != 200 {
		t.Fatalf("the status page opened at localhost: %d %v", code, m)
	}
	if len(fc.reqs) != 3 {
		t.Fatalf("%d switches reached the controller, want 3", len(fc.reqs))
	}
}

// TestRebindingPageCannotRead: on a loopback listener without a token, a
// page whose site name was made to resolve to 127.0.0.1 (DNS rebinding) is
// the listener's own origin to the browser, which sends it no
// Sec-Fetch-Site (the name is not a trustworthy origin) and no Origin on a
// GET: every request naming a host that is not a loopback name is refused,
// reads and switches alike, the status page included. Loopback names
// pass, and the unspecified addresses (curl http://0.0.0.0:8081); with a
// token any name does.
func TestRebindingPageCannotRead(t *testing.T) {
	srv, fc := newAPI(t, "", true)
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	paths := []string{"/admin/status", "/admin/history", "/metrics", "/healthz", "/"}
	for _, path := range paths {
		for _, host := range []string{"evil.example" + port, "evil.example", "127.0.0.1.evil.example" + port, "localhost.evil.example" + port} {
			if code, m, _ := call(t, "GET", srv.URL+path, "", "Host", host); code != 403 || m["code"] != "foreign_host" {
				t.Fatalf("GET %s with Host %s: %d %v, want 403 foreign_host", path, host, code, m)
			}
		}
		for _, host := range []string{"localhost" + port, "LOCALHOST.", "app.localhost" + port, "127.0.0.2" + port, "[::1]" + port, "0.0.0.0" + port, "[::]" + port} {
			if code, _, _ := call(t, "GET", srv.URL+path, "", "Host", host); code != 200 {
				t.Fatalf("GET %s with Host %s: %d", path, host, code)
			}
		}
	}
	for _, hdr := range [][]string{
		{"Host", "evil.example" + port, "Origin", "http://evil.example" + port},
		{"Host", "evil.example" + port},
	} {
		if code, m, _ := call(t, "POST", srv.URL+"/admin/cutover", "", hdr...); code != 403 || m["code"] != "foreign_host" {
			t.Fatalf("POST /admin/cutover with %q: %d %v, want 403 foreign_host", hdr, code, m)
		}
	}
	if len(fc.reqs) != 0 {
		t.Fatalf("a request through a foreign name reached the controller: %v", fc.reqs)
	}
	withToken, _ := newAPI(t, "tok", true)
	for _, path := range paths {
		if code, _, _ := call(t, "GET", withToken.URL+path, "", "Host", "ops.example"); code != 200 {
			t.Fatalf("GET %s through another name with a token set: %d", path, code)
		}
	}
}

// Behind a reverse proxy that passes its own name as Host, the status page
// works on a loopback listener once a token is set: a rebinding page would
// have no token to send.
func TestBrowserThroughAnotherNameWithToken(t *testing.T) {
	srv, fc := newAPI(t, "tok", true)
	hdr := []string{"Host", "ops.example", "Origin", "https://ops.example", "Sec-Fetch-Site", "same-origin"}
	if code, m, _ := call(t, "POST", srv.URL+"/admin/cutover", "", append(slices.Clone(hdr), "Authorization", "Bearer tok")...); code != 200 {
		t.Fatalf("with the token: %d %v", code, m)
	}
	if code, m, _ := call(t, "POST", srv.URL+"/admin/cutover", "", hdr...); code != 401 {
		t.Fatalf("without it: %d %v", code, m)
	}
	if len(fc.reqs) != 1 {
		t.Fatalf("%d switches, want 1", len(fc.reqs))
	}
}

func TestLoopbackHost(t *testing.T) {
	for h, want := range map[string]bool{
		"127.0.0.1:8081": true, "localhost:8081": true, "LOCALHOST": true, "[::1]:8081": true, "127.9.9.9": true, "localhost.:1": true,
		"evil.example:8081": false, "10.0.0.1:8081": false, "localhost.evil.example": false, "": false, "[::2]:1": false,
	} {
		if LoopbackHost(h) != want {
			t.Errorf("LoopbackHost(%q) = %v", h, !want)
		}
	}
}

func TestSwitchBodyPassedOn(t *testing.T) {
	srv, fc := newAPI(t, "", true)
	code, m, _ := call(t, "POST", srv.URL+"/admin/cutover", `{"to":"green","force":true,"reason":"r","generation":1,"trigger":"cli"}`)
	if code != 200 || m["changed"] != true || m["active"] != "green" {
		t.Fatalf("%d %v", code, m)
	}
	r := fc.reqs[0]
	if r.To != "green" || !r.Force || r.Reason != "r" || r.Generation == nil || *r.Generation != 1 || r.Trigger != "cli" {
		t.Fatalf("request %+v", r)
	}
}

func TestTokenOnMutationsOnly(t *testing.T) {
	srv, fc := newAPI(t, "tok", true)
	for _, path := range []string{"/admin/cutover", "/admin/rollback"} {
		for _, auth := range []string{"", "Bearer", "Bearer nope", "Basic dG9rOg==", "tok", "Bearer tokx"} {
			code, m, hdr := call(t, "POST", srv.URL+path, "", "Authorization", auth)
			if code != 401 || m["code"] != "unauthorized" || hdr.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s with %q: %d %v", path, auth, code, m)
			}
		}
	}
	if len(fc.reqs) != 0 {
		t.Fatal("an unauthorised call reached the controller")
	}
	if code, _, _ := call(t, "GET", srv.URL+"/admin/status", ""); code != 200 {
		t.Fatal("status needs no token")
	}
	if code, _, _ := call(t, "POST", srv.URL+"/admin/cutover", "", "Authorization", "Bearer tok"); code != 200 {
		t.Fatal("right token refused")
	}
}

func TestProbesAndMetrics(t *testing.T) {
	srv, _ := newAPI(t, "", false)
	if code, m, _ := call(t, "GET", srv.URL+"/readyz", ""); code != 503 || m["reason"] != "not ready for a reason" {
		t.Fatalf("readyz %d %v", code, m)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/healthz", ""); code != 200 {
		t.Fatal("healthz")
	}
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "bluegreen_test_total 0") {
		t.Fatalf("metrics %q", b)
	}
	srv2, _ := newAPI(t, "", true)
	if code, m, _ := call(t, "GET", srv2.URL+"/readyz", ""); code != 200 || m["ready"] != true {
		t.Fatalf("readyz %d %v", code, m)
	}
}

func TestHistoryNewestFirst(t *testing.T) {
	srv, _ := newAPI(t, "", true)
	for i := range 3 {
		call(t, "POST", srv.URL+"/admin/cutover", fmt.Sprintf(`{"reason":"r%d"}`, i))
	}
	_, m, _ := call(t, "GET", srv.URL+"/admin/history?limit=2", "")
	h := m["history"].([]any)
	if len(h) != 2 || h[0].(map[string]any)["reason"] != "r2" || h[1].(map[string]any)["reason"] != "r1" {
		t.Fatalf("history %v", h)
	}
}
