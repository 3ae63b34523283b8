package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/state"
)

// stack is a real proxy (serve) in front of real demo apps, on loopback.
type stack struct {
	t          *testing.T
	blue       []*httptest.Server
	green      []*httptest.Server
	apps       map[string][]*app.App
	pub, adm   string
	statePath  string
	stop       func() error
	logs       *testkit.Buffer
	httpClient *http.Client
	// entered receives the colour of every /slow request an app starts.
	entered chan string
}

func newApps(t *testing.T, color string, n int, entered chan<- string) ([]*httptest.Server, []*app.App) {
	var srvs []*httptest.Server
	var apps []*app.App
	for i := range n {
		a := app.New(app.Config{Color: color, Version: fmt.Sprintf("v%d", i), StreamInterval: 10 * time.Millisecond}, nil)
		h := http.Handler(a)
		if entered != nil {
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					select {
					case entered <- color:
					default:
					}
				}
				a.ServeHTTP(w, r)
			})
		}
		s := httptest.NewUnstartedServer(h)
		s.Config.RegisterOnShutdown(a.CloseStreams)
		s.Start()
		t.Cleanup(func() { a.CloseStreams(); s.Close() })
		srvs = append(srvs, s)
		apps = append(apps, a)
	}
	return srvs, apps
}

func urls(srvs []*httptest.Server) string {
	var u []string
	for _, s := range srvs {
		u = append(u, s.URL)
	}
	return strings.Join(u, ",")
}

// An instance listed in both colours is served, with a warning at start-up
// that names it; distinct colours get none.
func TestInstanceInBothColoursIsWarnedOf(t *testing.T) {
	st := startStack(t, 1, 1)
	if strings.Contains(st.logs.String(), "listed in both colours") {
		t.Fatalf("warned of distinct colours:\n%s", st.logs.String())
	}
	// A second proxy over the first one's apps: blue's instance in green too.
	both := startStack(t, 1, 1, "BLUEGREEN_BLUE_URLS="+urls(st.blue), "BLUEGREEN_GREEN_URLS="+urls(st.blue)+","+urls(st.green))
	line := grep(both.logs.String(), "listed in both colours")
	if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, st.blue[0].URL) || strings.Contains(line, st.green[0].URL) {
		t.Fatalf("warning %q, want one naming %s only", line, st.blue[0].URL)
	}
	res, err := http.Get(both.pub + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("not served: %d", res.StatusCode)
	}
}

// startStack starts serve with fast health checks; extra overrides env.
func startStack(t *testing.T, nBlue, nGreen int, extra ...string) *stack {
	t.Helper()
	st := &stack{t: t, apps: map[string][]*app.App{}, logs: &testkit.Buffer{}, entered: make(chan string, 16)}
	var ba, ga []*app.App
	st.blue, ba = newApps(t, "blue", nBlue, st.entered)
	st.green, ga = newApps(t, "green", nGreen, st.entered)
	st.apps["blue"], st.apps["green"] = ba, ga
	st.statePath = filepath.Join(t.TempDir(), "state.json")
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + urls(st.blue),
		"BLUEGREEN_GREEN_URLS=" + urls(st.green),
		"BLUEGREEN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + st.statePath,
		"BLUEGREEN_HEALTH_INTERVAL=50ms",
		"BLUEGREEN_HEALTH_TIMEOUT=2s",
		"BLUEGREEN_HEALTH_RISE=1",
		"BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_DRAIN_TIMEOUT=2s",
		"BLUEGREEN_SHUTDOWN_DELAY=0s",
	}
	st.start(append(env, extra...))
	return st
}

func (st *stack) start(env []string) {
	t := st.t
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, envPrefix+"STATE_CACHE=") }) {
		// A fleet replica keeps a local copy of the state; never in the
		// package directory.
		env = append(slices.Clone(env), envPrefix+"STATE_CACHE="+filepath.Join(t.TempDir(), "state-cache.json"))
	}
	cfg, err := loadConfig(env, os.Hostname)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(st.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, "test", func(a addrs) { ready <- a }) }()
	select {
	case a := <-ready:
		st.pub, st.adm = "http://"+a.public, "http://"+a.admin
	case err := <-done:
		cancel()
		t.Fatalf("serve ended before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("serve not ready after 10s")
	}
	var once sync.Once
	var stopErr error
	st.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(15 * time.Second):
				stopErr = errors.New("serve did not stop within 15s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = st.stop() })
	st.httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 10 * time.Second}
	t.Cleanup(st.httpClient.CloseIdleConnections)
	st.waitReady()
}

func (st *stack) waitReady() {
	st.t.Helper()
	st.eventually(func() bool {
		res, err := http.Get(st.adm + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}, "proxy ready")
}

func (st *stack) eventually(cond func() bool, what string) {
	st.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			st.t.Fatalf("timed out waiting for: %s\nlogs:\n%s", what, st.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (st *stack) status() admin.Status {
	st.t.Helper()
	res, err := http.Get(st.adm + "/admin/status")
	if err != nil {
		st.t.Fatal(err)
	}
	defer res.Body.Close()
	var s admin.Status
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		st.t.Fatal(err)
	}
	return s
}

func (st *stack) post(path, body string, hdr ...string) (int, map[string]any) {
	st.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, st.adm+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		st.t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

// colorOf asks the proxy and returns the colour that answered.
func (st *stack) colorOf(path string, hdr ...string) (string, int) {
	st.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, st.pub+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := st.httpClient.Do(req)
	if err != nil {
		st.t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.Header.Get(app.ColorHeader), res.StatusCode
}

func TestServeRoutesAndPreview(t *testing.T) {
	st := startStack(t, 2, 1)
	if c, code := st.colorOf("/"); c != "blue" || code != 200 {
		t.Fatalf("got %s %d", c, code)
	}
	if c, _ := st.colorOf("/", "X-Bluegreen-Preview", "1"); c != "green" {
		t.Fatalf("preview got %s", c)
	}
	s := st.status()
	if s.Active != "blue" || s.Generation != 1 || s.AppliedGeneration != 1 {
		t.Fatalf("status %+v", s)
	}
	if b := s.Colors["blue"]; b.Healthy != 2 || b.Total != 2 || len(b.Instances) != 2 || b.Instances[0].LastCheck.IsZero() {
		t.Fatalf("blue status %+v", b)
	}
	// The idle colour breaks: preview gets 503, live traffic is untouched.
	st.apps["green"][0].SetHealthy(false)
	st.eventually(func() bool { return st.status().Colors["green"].Healthy == 0 }, "green unhealthy")
	if g := st.status().Colors["green"].Instances[0]; g.LastError == "" {
		t.Fatalf("no last_error for a failing instance: %+v", g)
	}
	// The checker publishes the state a moment before the pool hears of
	// it: wait for the data plane, then check it never falls over to blue.
	st.eventually(func() bool {
		c, code := st.colorOf("/", "X-Bluegreen-Preview", "1")
		if code == 200 && c != "green" {
			t.Fatalf("preview of the idle colour answered by %s", c)
		}
		return code == http.StatusServiceUnavailable
	}, "preview of an unhealthy colour to answer 503")
	if c, code := st.colorOf("/"); c != "blue" || code != 200 {
		t.Fatalf("live traffic %s %d", c, code)
	}
}

func TestServeCutoverAPI(t *testing.T) {
	st := startStack(t, 1, 1)
	cases := []struct {
		name       string
		path, body string
		wantCode   int
		wantActive string
	}{
		{"flip with no body", "/admin/cutover", "", 200, "green"},
		{"same colour is no change", "/admin/cutover", `{"to":"green"}`, 200, "green"},
		{"unknown colour", "/admin/cutover", `{"to":"purple"}`, 400, "green"},
		{"bad json", "/admin/cutover", `{"to":`, 400, "green"},
		{"unknown field", "/admin/cutover", `{"colour":"blue"}`, 400, "green"},
		{"stale generation", "/admin/cutover", `{"to":"blue","generation":1}`, 409, "green"},
		{"matching generation", "/admin/cutover", `{"to":"blue","generation":2,"reason":"back"}`, 200, "blue"},
		{"rollback", "/admin/rollback", `{"reason":"undo"}`, 200, "green"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := st.post(tc.path, tc.body)
			if code != tc.wantCode {
				t.Fatalf("code %d, want %d: %v", code, tc.wantCode, body)
			}
			if code >= 400 && (body["error"] == nil || body["error"] == "") {
				t.Fatalf("error answer without a reason: %v", body)
			}
			if a := st.status().Active; a != tc.wantActive {
				t.Fatalf("active %s, want %s", a, tc.wantActive)
			}
			if c, _ := st.colorOf("/"); c != tc.wantActive {
				t.Fatalf("traffic goes to %s, want %s", c, tc.wantActive)
			}
		})
	}
	if _, body := st.post("/admin/cutover", `{"to":"green"}`); body["changed"] != false {
		t.Fatalf("repeated cutover: changed=%v", body["changed"])
	}
	// Unhealthy target: 409 unless forced.
	st.apps["blue"][0].SetHealthy(false)
	st.eventually(func() bool { return st.status().Colors["blue"].Healthy == 0 }, "blue unhealthy")
	if code, body := st.post("/admin/cutover", `{"to":"blue"}`); code != 409 || !strings.Contains(fmt.Sprint(body["error"]), "healthy") {
		t.Fatalf("cutover to unhealthy: %d %v", code, body)
	}
	if code, _ := st.post("/admin/cutover", `{"to":"blue","force":true,"reason":"operator knows"}`); code != 200 {
		t.Fatalf("forced cutover: %d", code)
	}
	// History, newest first, with trigger and reason.
	res, err := http.Get(st.adm + "/admin/history")
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ History []state.Event }
	json.NewDecoder(res.Body).Decode(&h)
	res.Body.Close()
	if len(h.History) != 4 || h.History[0].Reason != "operator knows" || !h.History[0].Forced || h.History[1].Action != "rollback" || h.History[1].Trigger != "api" {
		t.Fatalf("history %+v", h.History)
	}
}

func TestServeAdminTokenRequired(t *testing.T) {
	st := startStack(t, 1, 1, "BLUEGREEN_ADMIN_TOKEN=s3cret-token")
	for _, path := range []string{"/admin/cutover", "/admin/rollback"} {
		for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret-token"}} {
			code, body := st.post(path, "", hdr...)
			if code != 401 || body["error"] == nil {
				t.Fatalf("%s with %v: %d %v", path, hdr, code, body)
			}
		}
	}
	if st.status().Generation != 1 {
		t.Fatal("a refused call changed the state")
	}
	if code, _ := st.post("/admin/cutover", "", "Authorization", "Bearer s3cret-token"); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	if strings.Contains(st.logs.String(), "s3cret-token") {
		t.Fatal("the token appears in the logs")
	}
	res, _ := http.Get(st.adm + "/metrics")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(b), "s3cret-token") {
		t.Fatal("the token appears in the metrics")
	}
}

// TestServeZeroFailedRequestsAcrossCutovers: 64 keep-alive clients, 50
// cutovers through the admin API. No request fails; every request sent after
// a cutover answer arrived is served by the new colour; a request held in
// flight on the old colour across a cutover completes there.
func TestServeZeroFailedRequestsAcrossCutovers(t *testing.T) {
	t.Run("fast path", func(t *testing.T) { testZeroFailedAcrossCutovers(t) })
	t.Run("net/http", func(t *testing.T) { testZeroFailedAcrossCutovers(t, "BLUEGREEN_FAST_PATH=false") })
}

func testZeroFailedAcrossCutovers(t *testing.T, extra ...string) {
	st := startStack(t, 2, 2, extra...)
	// started counts cutovers sent, done those answered; even = blue, odd =
	// green. A request sent after cutover k was answered must get colour k,
	// unless another cutover started while it ran.
	var started, done atomic.Int64
	colorOf := func(g int64) string { return [2]string{"blue", "green"}[g%2] }
	var wrong atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	load := testkit.StartLoad(ctx, 64, 0, func(int, int64) error {
		before := done.Load()
		h, err := testkit.Get(st.httpClient, st.pub+"/")
		if err != nil {
			return err
		}
		if c := h.Get(app.ColorHeader); c != colorOf(before) && started.Load() == before {
			wrong.Add(1)
		}
		return nil
	})
	// One request held in flight on blue across the first cutover.
	held := make(chan string, 1)
	go func() {
		res, err := st.httpClient.Get(st.pub + "/slow?d=300ms")
		if err != nil {
			held <- "error: " + err.Error()
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		held <- res.Header.Get(app.ColorHeader)
	}()
	if c := <-st.entered; c != "blue" {
		t.Fatalf("held request reached %s", c)
	}
	cutovers := int64(50)
	if testing.Short() {
		cutovers = 10 // the quick tier: the same checks, fewer switches
	}
	for i := range cutovers {
		started.Store(i + 1)
		code, body := st.post("/admin/cutover", fmt.Sprintf(`{"to":%q}`, colorOf(i+1)))
		if code != 200 {
			t.Fatalf("cutover %d: %d %v", i, code, body)
		}
		done.Store(i + 1)
		time.Sleep(10 * time.Millisecond) // pacing, so traffic flows between switches
	}
	cancel()
	load.Wait()
	if c := <-held; c != "blue" {
		t.Fatalf("request in flight across the cutover finished on %q, want blue", c)
	}
	t.Logf("%d requests, %d failed, %d on the wrong colour, across %d cutovers", load.Sent.Load(), load.Failed.Load(), wrong.Load(), cutovers)
	if load.Failed.Load() != 0 || wrong.Load() != 0 {
		t.Fatalf("%d failed (first: %v), %d wrong colour\n%s", load.Failed.Load(), load.FirstErr(), wrong.Load(), grep(st.logs.String(), "WARN"))
	}
	if s := st.status(); s.Generation != uint64(cutovers)+1 || s.Active != "blue" {
		t.Fatalf("status after %d cutovers: %+v", cutovers, s)
	}
}

func TestServeAutoRollback(t *testing.T) {
	st := startStack(t, 1, 2, "BLUEGREEN_ROLLBACK_WINDOW=1m")
	if code, _ := st.post("/admin/cutover", `{"reason":"release v2"}`); code != 200 {
		t.Fatal("cutover failed")
	}
	// One green instance failing is not enough: the other still serves.
	st.apps["green"][0].SetHealthy(false)
	st.eventually(func() bool { return st.status().Colors["green"].Healthy == 1 }, "one green down")
	if a := st.status().Active; a != "green" {
		t.Fatalf("rolled back with a healthy green instance left: %s", a)
	}
	st.apps["green"][1].SetHealthy(false)
	st.eventually(func() bool { return st.status().Active == "blue" }, "auto-rollback to blue")
	if c, _ := st.colorOf("/"); c != "blue" {
		t.Fatalf("traffic on %s after rollback", c)
	}
	s := st.status()
	res, _ := http.Get(st.adm + "/admin/history?limit=1")
	var h struct{ History []state.Event }
	json.NewDecoder(res.Body).Decode(&h)
	res.Body.Close()
	if len(h.History) != 1 || h.History[0].Trigger != "auto-rollback" || h.History[0].To != "blue" || s.Generation != 3 {
		t.Fatalf("history %+v gen %d", h.History, s.Generation)
	}
	if !strings.Contains(st.logs.String(), `"trigger":"auto-rollback"`) {
		t.Fatal("no log line for the auto-rollback")
	}
	res, _ = http.Get(st.adm + "/metrics")
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `bluegreen_cutovers_total{from="green",result="success",to="blue",trigger="auto-rollback"} 1`) {
		t.Fatalf("auto-rollback not counted:\n%s", grep(string(b), "cutovers_total"))
	}
}

func grep(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestServeStateSurvivesRestart(t *testing.T) {
	st := startStack(t, 1, 1)
	st.post("/admin/cutover", `{"reason":"r1"}`)
	st.post("/admin/cutover", `{"to":"blue","reason":"r2"}`)
	st.post("/admin/cutover", `{"to":"green","reason":"r3"}`)
	if err := st.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + urls(st.blue), "BLUEGREEN_GREEN_URLS=" + urls(st.green),
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + st.statePath, "BLUEGREEN_HEALTH_INTERVAL=50ms",
		"BLUEGREEN_INITIAL_COLOR=blue",
	}
	st.start(env)
	s := st.status()
	if s.Active != "green" || s.Previous != "blue" || s.Generation != 4 {
		t.Fatalf("after restart %+v", s)
	}
	if c, _ := st.colorOf("/"); c != "green" {
		t.Fatalf("traffic on %s", c)
	}
	res, _ := http.Get(st.adm + "/admin/history")
	var h struct{ History []state.Event }
	json.NewDecoder(res.Body).Decode(&h)
	res.Body.Close()
	if len(h.History) != 3 || h.History[0].Reason != "r3" || h.History[2].Reason != "r1" {
		t.Fatalf("history after restart %+v", h.History)
	}
}

// TestServeStateWriteFailure fills the state directory (a tiny tmpfs): the
// cutover answers 503 and neither the file nor the live routing changes.
func TestServeStateWriteFailure(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root to mount a full tmpfs; CI must run this test as root")
		}
		t.Skip("needs root to mount a full tmpfs; CI runs as root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	st := startStack(t, 1, 1, "BLUEGREEN_STATE=file:"+filepath.Join(dir, "state.json"))
	before, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Fill the file system.
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	filler.Write(make([]byte, 64<<10))
	filler.Close()

	code, body := st.post("/admin/cutover", `{"reason":"x"}`)
	if code != http.StatusServiceUnavailable || body["error"] == nil {
		t.Fatalf("cutover on a full disk: %d %v", code, body)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if !bytes.Equal(before, after) {
		t.Fatal("state file changed")
	}
	if s := st.status(); s.Active != "blue" || s.Generation != 1 {
		t.Fatalf("status changed: %+v", s)
	}
	if c, _ := st.colorOf("/"); c != "blue" {
		t.Fatalf("routing changed to %s", c)
	}
	os.Remove(filepath.Join(dir, "filler"))
	if code, _ := st.post("/admin/cutover", ""); code != 200 {
		t.Fatalf("cutover after space came back: %d", code)
	}
}

func TestServeReadyzWaitsForFirstProbe(t *testing.T) {
	release := make(chan struct{})
	slowHealth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			<-release
		}
		w.Header().Set(app.ColorHeader, "blue")
	}))
	defer slowHealth.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	green, _ := newApps(t, "green", 1, nil)
	cfg, err := loadConfig([]string{
		"BLUEGREEN_BLUE_URLS=" + slowHealth.URL, "BLUEGREEN_GREEN_URLS=" + green[0].URL,
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + filepath.Join(t.TempDir(), "s.json"),
		"BLUEGREEN_HEALTH_TIMEOUT=5s", "BLUEGREEN_SHUTDOWN_DELAY=0s",
	}, os.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test", func(a addrs) { ready <- a })
	}()
	a := <-ready
	res, err := http.Get("http://" + a.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 503 || !strings.Contains(string(b), "first health checks") {
		t.Fatalf("readyz before the first probe: %d %s", res.StatusCode, b)
	}
	res, _ = http.Get("http://" + a.public + "/")
	res.Body.Close()
	if res.StatusCode != 503 {
		t.Fatalf("traffic before the first probe: %d", res.StatusCode)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + a.admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestServeGracefulShutdown: a request in flight when the context ends (the
// SIGTERM path) completes; readyz turns 503 meanwhile; serve returns nil.
func TestServeGracefulShutdown(t *testing.T) {
	st := startStack(t, 1, 1)
	got := make(chan string, 1)
	go func() {
		res, err := st.httpClient.Get(st.pub + "/slow?d=500ms")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- fmt.Sprintf("%d %s", res.StatusCode, b)
	}()
	if c := <-st.entered; c != "blue" {
		t.Fatalf("request reached %s", c)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- st.stop() }()
	// While draining, readiness is refused (or the listener is already gone).
	st.eventually(func() bool {
		res, err := http.Get(st.adm + "/readyz")
		if err != nil {
			return true
		}
		res.Body.Close()
		return res.StatusCode == 503
	}, "readyz 503 during shutdown")
	if r := <-got; !strings.HasPrefix(r, "200 color=blue") {
		t.Fatalf("in-flight request during shutdown: %s", r)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	if _, err := http.Get(st.pub + "/"); err == nil {
		t.Fatal("public listener still accepting after shutdown")
	}
}

func TestServeCorruptStateStopsStartup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.WriteFile(path, []byte(`{"format":1,"active":"gre`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve"}, []string{
		"BLUEGREEN_BLUE_URLS=http://127.0.0.1:1", "BLUEGREEN_GREEN_URLS=http://127.0.0.1:2",
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + path, "BLUEGREEN_LOG_FORMAT=json",
	}, io.Discard, &stderr)
	if code != exitConfig || !strings.Contains(stderr.String(), path) ||
		!strings.Contains(stderr.String(), "move it away to start afresh at BLUEGREEN_INITIAL_COLOR") {
		t.Fatalf("exit %d, stderr %q: want 2, the file named and what to do", code, stderr.String())
	}
	b, _ := os.ReadFile(path)
	if string(b) != `{"format":1,"active":"gre` {
		t.Fatal("the corrupt file was overwritten")
	}
}
