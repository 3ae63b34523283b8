package admin

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

func TestFmtHelpers(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "–", 250 * time.Microsecond: "250 µs", 12345 * time.Microsecond: "12.3 ms", 2500 * time.Millisecond: "2.50 s"} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if got := ago(now, now.Add(-90*time.Second)); got != "1m30s ago" {
		t.Errorf("ago = %q", got)
	}
	if fmtTime(time.Time{}) != "never" || fmtClock(now) != "12:00:00Z" {
		t.Error("time formats")
	}
}

// TestPageWithoutRecorder: /admin/stats is a 404 with a JSON reason when
// statistics are off; the page still renders, and what it shows from the
// state (a reason typed by someone) is escaped.
func TestPageWithoutRecorder(t *testing.T) {
	srv, fc := newAPI(t, "", true)
	fc.st.History = []state.Event{{Action: "cutover", From: "green", To: "blue", Trigger: "api", Reason: `<script>alert(1)</script>`, Generation: 1}}
	for path, want := range map[string]int{"/admin/stats": 404, "/": 200, "/ui/": 200, "/ui/nothing": 404} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d: %s", path, res.StatusCode, want, body)
		}
		if path == "/" {
			page := string(body)
			if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
				t.Error("the reason is not escaped")
			}
			if !strings.Contains(page, `id="active-color">BLUE<`) || !strings.Contains(page, "✓ healthy") || !strings.Contains(page, "status 503") {
				t.Error("page lacks the state")
			}
		}
	}
}

// TestPageRollout: the first paint shows the progressive rollout without
// JavaScript: none yet, then the running one's step, weights and verdict,
// then how it ended.
func TestPageRollout(t *testing.T) {
	srv := rolloutAPI(t, "s3cret", true)
	page := func() string {
		t.Helper()
		res, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("GET /: %d %s", res.StatusCode, body)
		}
		return string(body)
	}
	post := func(path, body string) {
		t.Helper()
		if code, m, _ := call(t, "POST", srv.URL+path, body, "Authorization", "Bearer s3cret"); code != 200 {
			t.Fatalf("POST %s: %d %v", path, code, m)
		}
	}
	check := func(p string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(p, w) {
				t.Errorf("page lacks %q", w)
			}
		}
	}
	check(page(), `class="phase ph-none">none<`, "No rollout has run", `id="ro-live" hidden`, `id="btn-ro-abort" type="button" class="danger" disabled`)

	post("/admin/rollout", `{"to":"green","steps":[10,50,100],"step_interval":"1m","max_p99":"500ms","reason":"release <1.4.3>"}`)
	p := page()
	check(p, `class="phase ph-running">running<`, "blue → green, started", "release &lt;1.4.3&gt;", `id="ro-step">1 of 3 (10 → 50 → 100 %)<`,
		`value="10"`, "green 10 % · blue 90 %", "waiting for traffic: 0 of 100 requests to green", "p99 ≤ 500ms",
		`<tr data-color="green"><td>green</td><td>target</td><td>10 %</td>`, `id="btn-ro-pause" type="button">`)
	if strings.Contains(p, `id="ro-live" hidden`) {
		t.Error("the running rollout's details are hidden")
	}

	post("/admin/rollout/pause", `{"reason":"lunch"}`)
	check(page(), `ph-paused">paused<`, "paused: paused by request: lunch", `id="btn-ro-resume" type="button">`, `id="btn-ro-pause" type="button" disabled`)

	post("/admin/rollout/abort", `{"reason":"bad build"}`)
	check(page(), `ph-aborted">aborted<`, "Last rollout blue → green: aborted at 10 % on", ": bad build", `id="ro-live" hidden`, "<td>abort</td>")
}

// TestRolloutCountsLine: the rollout panel says whose traffic the step's
// analysis counts, so an operator reading a fleet's leader knows the
// figures are the fleet's.
func TestRolloutCountsLine(t *testing.T) {
	for _, c := range []struct {
		v    rollout.RolloutView
		want string
	}{
		{rollout.RolloutView{}, "this replica's traffic"},
		{rollout.RolloutView{Replicas: 1}, "this replica's traffic"},
		{rollout.RolloutView{Replicas: 3}, "3 replicas' traffic, summed"},
		{rollout.RolloutView{Replicas: 2, FleetStale: "no fleet counts read for 3s"}, "2 replicas' traffic, summed (stale: no fleet counts read for 3s)"},
	} {
		if got := rolloutCounts(c.v); got != c.want {
			t.Errorf("%+v: %q, want %q", c.v, got, c.want)
		}
	}
}
