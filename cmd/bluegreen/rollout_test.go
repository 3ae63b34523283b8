package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/rollout"
)

// canaryApp answers GET / with its colour after delay; every errEvery-th
// request (the first one included) is a 500. /health always passes.
func canaryApp(t *testing.T, color string, delay time.Duration, errEvery int64) *httptest.Server {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(app.ColorHeader, color)
		if r.URL.Path == "/health" {
			return
		}
		time.Sleep(delay)
		if errEvery > 0 && n.Add(1)%errEvery == 1 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, color)
	}))
	t.Cleanup(s.Close)
	return s
}

// canaryEnv is the environment of a proxy in front of blue and green on
// the state file path.
func canaryEnv(blue, green *httptest.Server, path string, extra ...string) []string {
	return append([]string{
		"BLUEGREEN_BLUE_URLS=" + blue.URL,
		"BLUEGREEN_GREEN_URLS=" + green.URL,
		"BLUEGREEN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + path,
		"BLUEGREEN_HEALTH_INTERVAL=50ms",
		"BLUEGREEN_HEALTH_RISE=1",
		"BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_DRAIN_TIMEOUT=2s",
		"BLUEGREEN_ROLLOUT_ANALYSIS_INTERVAL=500ms",
	}, extra...)
}

func startCanary(t *testing.T, env []string) *stack {
	t.Helper()
	st := &stack{t: t, logs: &testkit.Buffer{}}
	st.start(env)
	return st
}

// load sends requests from fresh clients (no rollout cookie: each one is a
// new client) until stop is called, and counts answers per colour and
// status.
type load struct {
	mu     sync.Mutex
	counts map[string]int // "green 500"
	stop   func()
}

func startLoad(t *testing.T, st *stack, workers int) *load {
	l := &load{counts: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, st.pub+"/", nil)
				res, err := st.httpClient.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				l.mu.Lock()
				l.counts[res.Header.Get(app.ColorHeader)+" "+strconv.Itoa(res.StatusCode)]++
				l.mu.Unlock()
			}
		})
	}
	var once sync.Once
	l.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(l.stop)
	return l
}

func (l *load) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.counts))
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// evaluations returns bluegreen_rollout_analysis_total summed over results.
func (st *stack) evaluations() (total float64, byResult map[string]float64) {
	st.t.Helper()
	res, err := http.Get(st.adm + "/metrics")
	if err != nil {
		st.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	byResult = map[string]float64{}
	for _, m := range regexp.MustCompile(`(?m)^bluegreen_rollout_analysis_total\{result="(\w+)"\} (\S+)$`).FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		byResult[m[1]] = v
		total += v
	}
	return total, byResult
}

func (st *stack) rolloutView() rollout.RolloutView {
	st.t.Helper()
	res, err := http.Get(st.adm + "/admin/rollout")
	if err != nil {
		st.t.Fatal(err)
	}
	defer res.Body.Close()
	var v rollout.RolloutView
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		st.t.Fatal(err)
	}
	return v
}

// runCLI runs a client command against the stack's admin API.
func (st *stack) runCLI(ctx context.Context, cmd string, args ...string) clientRun {
	var out, errOut bytes.Buffer
	o := defaultClientOptions()
	o.watchEvery = 100 * time.Millisecond
	getenv := func(k string) string {
		if k == envAdminURL {
			return st.adm
		}
		return ""
	}
	code := runClientWith(ctx, o, cmd, args, getenv, &out, &errOut)
	r := clientRun{code: code, stdout: out.String(), stderr: errOut.String()}
	st.t.Logf("bluegreen %s %q -> %d\nstdout:\n%sstderr:\n%s", cmd, args, code, r.stdout, r.stderr)
	return r
}

// A target that answers 5 % errors from its first request is aborted
// within two evaluations of the first step; `rollout --watch` exits 4.
func TestServeRolloutAbortsOnErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("serves traffic for seconds")
	}
	blue, green := canaryApp(t, "blue", 0, 0), canaryApp(t, "green", 0, 20)
	st := startCanary(t, canaryEnv(blue, green, filepath.Join(t.TempDir(), "state.json"), "BLUEGREEN_ROLLOUT_ANALYSIS_INTERVAL=1s"))
	l := startLoad(t, st, 8)
	st.eventually(func() bool { return sum(l.snapshot()) > 200 }, "traffic")
	before := l.snapshot()
	start := time.Now()
	r := st.runCLI(t.Context(), "rollout", "--to", "green", "--steps", "25,50,100", "--interval", "30s",
		"--min-requests", "10", "--max-error-ratio", "0.01", "--watch")
	took := time.Since(start)
	l.stop()
	if r.code != clientExitSwitchedOff || !strings.Contains(r.stderr, "aborted at 25%: green 5xx") {
		t.Fatalf("rollout --watch exit %d, stderr %q; want 4 and the evidence", r.code, r.stderr)
	}
	total, by := st.evaluations()
	if by["abort"] != 1 || total > 2 {
		t.Fatalf("evaluations %v: want the abort within 2", by)
	}
	v := st.rolloutView()
	if v.Phase != "aborted" || v.Active != "blue" || !regexp.MustCompile(`^green 5xx \d+\.\d% > 1% over \d+ requests$`).MatchString(v.Last.Ending) {
		t.Fatalf("after the abort: %+v last %+v", v, v.Last)
	}
	// What the users saw: the 500s green answered before the abort.
	after := l.snapshot()
	failed := after["green 500"] - before["green 500"]
	during := sum(after) - sum(before)
	t.Logf("aborted after %s and %v evaluation(s): %s; users saw %d failed of %d requests (bound 25%% × 5%% × %d = %.1f)",
		took.Round(time.Millisecond), total, v.Last.Ending, failed, during, during, 0.25*0.05*float64(during))
	// The abort routes everyone to blue at once.
	for range 50 {
		if c, code := st.colorOf("/"); c != "blue" || code != 200 {
			t.Fatalf("after the abort a request went to %s (%d)", c, code)
		}
	}
}

// A target three times slower than the baseline is aborted on max_p99_ratio.
func TestServeRolloutAbortsOnSlowTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("serves traffic for seconds")
	}
	// Delays well above what a loaded test machine adds to every request.
	blue, green := canaryApp(t, "blue", 100*time.Millisecond, 0), canaryApp(t, "green", 300*time.Millisecond, 0)
	st := startCanary(t, canaryEnv(blue, green, filepath.Join(t.TempDir(), "state.json")))
	l := startLoad(t, st, 8)
	code, m := st.post("/admin/rollout", `{"to":"green","steps":[50,100],"step_interval":"30s","min_requests":20,"max_p99_ratio":2}`)
	if code != 200 {
		t.Fatalf("start: %d %v", code, m)
	}
	st.eventually(func() bool { return st.rolloutView().Phase == "aborted" }, "abort on p99 ratio")
	l.stop()
	v := st.rolloutView()
	if !regexp.MustCompile(`^green p99 \d+ms > 2 × blue p99 \d+ms over \d+ requests$`).MatchString(v.Last.Ending) {
		t.Fatalf("ending %q", v.Last.Ending)
	}
	t.Logf("aborted: %s", v.Last.Ending)
}

// Without traffic a rollout holds, then pauses and says why; it never
// reaches 100 %.
func TestServeRolloutWithoutTrafficPauses(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for held intervals")
	}
	blue, green := canaryApp(t, "blue", 0, 0), canaryApp(t, "green", 0, 0)
	st := startCanary(t, canaryEnv(blue, green, filepath.Join(t.TempDir(), "state.json"), "BLUEGREEN_ROLLOUT_ANALYSIS_INTERVAL=100ms"))
	if r := st.runCLI(t.Context(), "rollout", "--steps", "5,100", "--interval", "300ms", "--min-requests", "10", "--max-held", "2"); r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	st.eventually(func() bool { return st.rolloutView().Phase == "paused" }, "pause")
	time.Sleep(time.Second)
	v := st.rolloutView()
	if v.Phase != "paused" || v.Active != "blue" || v.Weight != 5 || !strings.Contains(v.Rollout.PauseReason, "held 2 intervals of 300ms with 0 of 10 requests to green") {
		t.Fatalf("%+v %+v", v, v.Rollout)
	}
	_, by := st.evaluations()
	if by["pass"] != 0 {
		t.Fatalf("a step passed without traffic: %v", by)
	}
	r := st.runCLI(t.Context(), "rollout", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "paused") {
		t.Fatalf("status: %+v", r)
	}
}

// Traffic that stays within the limits takes the rollout to a cutover; a
// restart in the middle resumes at the stored step; an explicit cutover
// ends a rollout.
func TestServeRolloutCompletesAndSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("serves traffic for seconds")
	}
	blue, green := canaryApp(t, "blue", 0, 0), canaryApp(t, "green", 0, 0)
	env := canaryEnv(blue, green, filepath.Join(t.TempDir(), "state.json"), "BLUEGREEN_ROLLOUT_ANALYSIS_INTERVAL=100ms")
	st := startCanary(t, env)
	if r := st.runCLI(t.Context(), "rollout", "--steps", "10,30,100", "--interval", "1h"); r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if r := st.runCLI(t.Context(), "rollout", "promote"); r.code != 0 || !strings.Contains(r.stdout, "(30%)") {
		t.Fatalf("promote: %+v", r)
	}
	if err := st.stop(); err != nil {
		t.Fatal(err)
	}
	st = startCanary(t, env)
	if v := st.rolloutView(); v.Phase != "running" || v.Weight != 30 || v.StepNumber != 2 {
		t.Fatalf("after restart: %+v", v)
	}
	greens := 0
	for range 300 {
		if c, _ := st.colorOf("/"); c == "green" {
			greens++
		}
	}
	if greens < 50 || greens > 130 {
		t.Fatalf("%d of 300 new clients on green at 30%%", greens)
	}
	// An explicit cutover wins and ends the rollout.
	if code, m := st.post("/admin/cutover", `{"to":"green"}`); code != 200 {
		t.Fatalf("cutover: %d %v", code, m)
	}
	if v := st.rolloutView(); v.Phase != "superseded" || v.Active != "green" {
		t.Fatalf("after the cutover: %+v", v)
	}
	// A rollout back to blue with traffic completes by itself.
	l := startLoad(t, st, 4)
	r := st.runCLI(t.Context(), "rollout", "--to", "blue", "--steps", "20,100", "--interval", "300ms", "--min-requests", "10", "--watch")
	l.stop()
	if r.code != 0 || st.status().Active != "blue" {
		t.Fatalf("rollout --watch: exit %d, active %s", r.code, st.status().Active)
	}
}

func TestRolloutCLIUsage(t *testing.T) {
	env := map[string]string{envAdminURL: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, clientExitOK, "Usage: bluegreen rollout"},
		{[]string{"promote", "--help"}, clientExitOK, "--full"},
		{[]string{"--steps", "1,five,100"}, clientExitUsage, `"five" is not a whole percentage`},
		{[]string{"restart"}, clientExitUsage, "unknown rollout command"},
		{[]string{"status", "extra"}, clientExitUsage, "unexpected argument"},
		{[]string{"status"}, clientExitUnreachable, ""},
	} {
		r := runClientT(t, env, "rollout", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.out) {
			t.Errorf("rollout %q: exit %d, want %d with %q", tc.args, r.code, tc.code, tc.out)
		}
	}
}

func TestParseSteps(t *testing.T) {
	got, err := parseSteps(" 1, 5%,25,50 ,100")
	if err != nil || !slices.Equal(got, []int{1, 5, 25, 50, 100}) {
		t.Fatalf("%v %v", got, err)
	}
	if got, err := parseSteps(""); got != nil || err != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
}
