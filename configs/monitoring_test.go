package configs

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// TestMonitoringEndToEnd runs the real programs: two demo apps (blue and
// green), two bluegreen replicas in front of them, and the prometheus server
// with the shipped prometheus.yml (targets swapped to loopback, scrape and
// evaluation interval shortened to 1s) and the shipped alerts.yml. It drives
// traffic, a cutover, an auto-rollback, a flapping backend, a 5xx burst and
// finally an outage of the active colour; replica b never switches, so the
// replicas disagree on the state generation, and a third target that does
// not answer plays a replica that is down.
//
// At that point every alert's condition holds, so the test waits until
// Prometheus's own evaluation of alerts.yml shows every alert in ALERTS
// (pending or firing), and then asks the HTTP API for every alert expression
// and every dashboard expression: each must parse and return data. Alert
// expressions are queried as written, comparison included: they return data
// because the scenario made them true, not because a comparison was removed.
// Panel queries run as instant queries; annotation queries run as range
// queries over the test, with the annotation's step, as Grafana runs them.
func TestMonitoringEndToEnd(t *testing.T) {
	promBin := lookPrometheus(t)
	bin := buildBinaries(t)
	start := time.Now()

	blue := demoApp(t, bin, "blue")
	green := demoApp(t, bin, "green")
	a := startProxy(t, bin, "bluegreen-a", blue, green)
	b := startProxy(t, bin, "bluegreen-b", blue, green)
	down := loopback(freePort(t)) // a replica that does not answer
	prom := startPrometheus(t, promBin, []string{a.target, b.target, down})
	d, _ := loadDashboard(t)
	switches, rollbacks := findAnnotation(t, d, "Switches"), findAnnotation(t, d, "Auto-rollbacks")

	// Background traffic keeps every rate window of the queries filled.
	startTraffic(t, a.public, 100*time.Millisecond)

	// Blue is live: successes and a few 503s from the app.
	for range 20 {
		expectColor(t, a.public+"/", http.StatusOK, "blue")
	}
	for range 5 {
		expectColor(t, a.public+"/status/503", http.StatusServiceUnavailable, "blue")
	}
	waitProm(t, prom, "both replicas scraped", `count(bluegreen_state_generation)`, func(v float64) bool { return v == 2 })
	waitProm(t, prom, "Prometheus scraping itself on the port it picked", `up{job="prometheus"}`, func(v float64) bool { return v == 1 })

	// Replica b, which has not proxied a request yet, runs out of
	// descriptors: a request it cannot open an instance connection for
	// gets 503, its own fault.
	outOfDescriptors(t, b)
	waitProm(t, prom, "the local error counted",
		`sum(bluegreen_local_errors_total{kind="fds"})`, func(v float64) bool { return v >= 1 })

	// A progressive rollout to green whose clients get 503s from green: its
	// own analysis aborts it.
	abortRollout(t, a)
	waitProm(t, prom, "the rollout abort counted",
		`sum(bluegreen_rollout_analysis_total{result="abort"})`, func(v float64) bool { return v >= 1 })

	// Cutover to green through the admin API.
	cut := a.cutover(t, "green", "monitoring test")
	if cut.Active != "green" {
		t.Fatalf("cutover: active %q, want green", cut.Active)
	}
	t.Logf("cutover to green at %s, generation %d", cut.ChangedAt.Format(time.RFC3339Nano), cut.Generation)
	for range 20 {
		expectColor(t, a.public+"/", http.StatusOK, "green")
	}
	for range 3 {
		expectColor(t, a.public+"/status/503", http.StatusServiceUnavailable, "green")
	}
	// Green stays live until the Switches annotation, at its own step, shows
	// the cutover: a switch undone within one step would not be drawn.
	// A minute: on a loaded machine scrapes (1 s, timing out at 1 s) can
	// lag; the failure says which events were drawn.
	waitFor(t, time.Minute, "the Switches annotation to show the cutover", func() (bool, error) {
		times, err := annotationEvents(prom, switches, start)
		if err == nil && !containsTime(times, cut.ChangedAt) {
			err = fmt.Errorf("events at %v, none at %s", times, cut.ChangedAt.Format(time.RFC3339Nano))
		}
		return err == nil, err
	})

	// Green fails its health checks: the proxy rolls back to blue by itself.
	mustDo(t, http.MethodPost, green+"/health/fail", "", http.StatusOK)
	var rb admin.Status
	waitFor(t, 20*time.Second, "the auto-rollback to blue", func() (bool, error) {
		var err error
		rb, err = a.status()
		return err == nil && rb.Active == "blue", err
	})
	t.Logf("auto-rollback to blue at %s, generation %d", rb.ChangedAt.Format(time.RFC3339Nano), rb.Generation)
	expectColor(t, a.public+"/", http.StatusOK, "blue")
	waitProm(t, prom, "the auto-rollback counted",
		`sum(bluegreen_cutovers_total{trigger="auto-rollback",result="success"})`, func(v float64) bool { return v >= 1 })

	// Green, now idle, flaps: each change must be scraped to count.
	greenUp := fmt.Sprintf(`bluegreen_backend_up{color="green",instance=%q}`, a.target)
	for i := 0; ; i++ {
		v, err := prom.queryValue(`max(changes(bluegreen_backend_up{color="green"}[10m]))`)
		if err != nil {
			t.Fatal(err)
		}
		if v > 4 {
			t.Logf("green changed health %g times", v)
			break
		}
		if i == 5 {
			t.Fatalf("green changed health only %g times after %d flaps", v, i)
		}
		mustDo(t, http.MethodPost, green+"/health/recover", "", http.StatusOK)
		waitProm(t, prom, "green up", greenUp, func(v float64) bool { return v == 1 })
		mustDo(t, http.MethodPost, green+"/health/fail", "", http.StatusOK)
		waitProm(t, prom, "green down", greenUp, func(v float64) bool { return v == 0 })
	}

	// A burst of 5xx on the live colour.
	for range 60 {
		expectColor(t, a.public+"/status/503", http.StatusServiceUnavailable, "blue")
	}

	// Blue goes down too while green is down: no rollback is possible, live
	// traffic gets 503 from the proxy.
	waitFor(t, 10*time.Second, "green unhealthy on both replicas", func() (bool, error) {
		for _, p := range []proxy{a, b} {
			st, err := p.status()
			if err != nil || st.Colors["green"].Healthy != 0 {
				return false, err
			}
		}
		return true, nil
	})
	mustDo(t, http.MethodPost, blue+"/health/fail", "", http.StatusOK)
	waitFor(t, 10*time.Second, "blue unhealthy and still active", func() (bool, error) {
		st, err := a.status()
		return err == nil && st.Active == "blue" && st.Colors["blue"].Healthy == 0, err
	})
	if st, err := b.status(); err != nil || st.Generation == rb.Generation {
		t.Fatalf("replica b should lag behind a (generation %d): %+v, %v", rb.Generation, st, err)
	}

	// Every rule of the shipped file, as Prometheus loaded it.
	rules := loadedRules(t, prom)
	waitFor(t, 60*time.Second, "every alert pending or firing in Prometheus", func() (bool, error) {
		res, err := prom.query(`count by (alertname, alertstate) (ALERTS)`)
		if err != nil {
			return false, err
		}
		seen := map[string]bool{}
		for _, s := range res {
			seen[s.Labels["alertname"]] = true
		}
		for _, r := range rules {
			if !seen[r.Name] {
				return false, fmt.Errorf("%s not in ALERTS yet", r.Name)
			}
		}
		return true, nil
	})
	if res, err := prom.query(`ALERTS`); err == nil {
		for _, s := range res {
			t.Logf("ALERTS %s", s)
		}
	}

	t.Run("alert expressions", func(t *testing.T) {
		for _, r := range rules {
			if r.Health != "ok" {
				t.Errorf("%s: rule health %q: %s", r.Name, r.Health, r.LastError)
			}
			res, err := prom.query(r.Query)
			if err != nil {
				t.Errorf("%s: %v\n  expr: %s", r.Name, err, r.Query)
				continue
			}
			logResult(t, "alert "+r.Name, r.Query, res)
			if len(res) == 0 {
				t.Errorf("%s: no data\n  expr: %s", r.Name, r.Query)
			}
		}
	})

	t.Run("dashboard panels", func(t *testing.T) {
		n := 0
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				n++
				expr, err := expandExpr(tg.Expr, "")
				if err != nil {
					t.Errorf("panel %q: %v", p.Title, err)
					continue
				}
				res, err := prom.query(expr)
				if err != nil {
					t.Errorf("panel %q %s: %v\n  expr: %s", p.Title, tg.RefID, err, expr)
					continue
				}
				logResult(t, fmt.Sprintf("panel %q %s", p.Title, tg.RefID), expr, res)
				if !hasFinite(res) {
					t.Errorf("panel %q %s: no data (or only NaN)\n  expr: %s", p.Title, tg.RefID, expr)
				}
				for _, s := range res {
					for _, l := range legendLabels(tg.LegendFormat) {
						if s.Labels[l] == "" {
							t.Errorf("panel %q %s: legend %q uses label %q, missing from %s", p.Title, tg.RefID, tg.LegendFormat, l, labelString(s.Labels))
						}
					}
				}
			}
		}
		if n == 0 {
			t.Fatal("the dashboard has no queries")
		}
	})

	t.Run("dashboard annotations", func(t *testing.T) {
		for _, an := range d.Annotations.List {
			if an.Expr == "" {
				continue
			}
			step := annotationStep(t, an)
			// An event shows at the first point of the step grid after it
			// was scraped: the query must reach a full step past the last
			// switch (the test can get here sooner on a quick run).
			if wait := time.Until(rb.ChangedAt.Add(step + 2*time.Second)); wait > 0 {
				time.Sleep(wait)
			}
			expr, err := expandExpr(an.Expr, strconv.Itoa(int(step.Seconds()))+"s")
			if err != nil {
				t.Fatal(err)
			}
			res, err := prom.queryRange(expr, start, time.Now(), step)
			if err != nil {
				t.Errorf("annotation %q: %v\n  expr: %s", an.Name, err, expr)
				continue
			}
			events := eventsOf(an, res)
			var shown []string
			for _, e := range events {
				shown = append(shown, e.UTC().Format(time.RFC3339Nano))
			}
			t.Logf("annotation %q (range query, step %s)\n  expr: %s\n  events: %s", an.Name, step, expr, strings.Join(shown, ", "))
			for _, s := range res {
				t.Logf("  %s", s)
			}
			if len(events) == 0 {
				t.Errorf("annotation %q: no events\n  expr: %s", an.Name, expr)
			}
		}
		// The events are the right ones.
		ev, err := annotationEvents(prom, switches, start)
		if err != nil {
			t.Fatal(err)
		}
		if !containsTime(ev, cut.ChangedAt) || !containsTime(ev, rb.ChangedAt) {
			t.Errorf("Switches annotation: events %v, want the cutover %s and the rollback %s", ev, cut.ChangedAt, rb.ChangedAt)
		}
		ev, err = annotationEvents(prom, rollbacks, start)
		if err != nil {
			t.Fatal(err)
		}
		step := annotationStep(t, rollbacks)
		if !slices.ContainsFunc(ev, func(e time.Time) bool {
			return !e.Before(rb.ChangedAt.Truncate(time.Second)) && e.Before(rb.ChangedAt.Add(2*step+2*time.Second))
		}) {
			t.Errorf("Auto-rollbacks annotation: events %v, want one just after the rollback at %s", ev, rb.ChangedAt)
		}
	})
}

// startPrometheus runs the prometheus server with the shipped prometheus.yml
// and alerts.yml. Only the targets, the intervals (1s, so the test is quick)
// and the path of alerts.yml (absolute, since the config is written to a
// temporary directory) differ; the scrape and relabelling settings and the
// rules are the shipped ones. Prometheus binds a port of its own choosing
// and reports it; its self-scrape target is then set to that port and the
// configuration reloaded.
func startPrometheus(t *testing.T, bin string, proxyTargets []string) promClient {
	t.Helper()
	rules, err := filepath.Abs(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(proxyTargets))
	for i, tg := range proxyTargets {
		quoted[i] = strconv.Quote(tg)
	}
	cfg := readFileString(t, prometheusConfigFile)
	cfg = replaceOnce(t, cfg, "scrape_interval: 5s", "scrape_interval: 1s")
	cfg = replaceOnce(t, cfg, "evaluation_interval: 5s", "evaluation_interval: 1s")
	cfg = replaceOnce(t, cfg, "- alerts.yml", "- "+strconv.Quote(rules))
	cfg = replaceOnce(t, cfg, "['bluegreen:8081']", "["+strings.Join(quoted, ", ")+"]")

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	writeConfig := func(self string) {
		t.Helper()
		c := replaceOnce(t, cfg, "['localhost:9090']", "["+strconv.Quote(self)+"]")
		if err := os.WriteFile(cfgPath, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("127.0.0.1:1") // nothing listens there; set below, once the port is known
	p := testkit.Start(t, "prometheus", bin, nil,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:0",
		"--web.enable-lifecycle", // POST /-/reload
		"--log.format=json",
	)
	addr := testkit.Addr(p.WaitLog(t, 60*time.Second, "Listening on"), "address")
	c := promClient{base: "http://" + addr}
	waitHTTP200(t, c.base+"/-/ready")
	writeConfig(addr)
	mustDo(t, http.MethodPost, c.base+"/-/reload", "", http.StatusOK) // answers once the reload is done
	return c
}

// rule is an alerting rule as Prometheus reports it in /api/v1/rules.
type rule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// loadedRules returns the alerting rules Prometheus loaded, and checks that
// they are exactly the alerts of the shipped alerts.yml.
func loadedRules(t *testing.T, prom promClient) []rule {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				File  string `json:"file"`
				Rules []rule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal(mustDo(t, http.MethodGet, prom.base+"/api/v1/rules", "", http.StatusOK), &r); err != nil {
		t.Fatal(err)
	}
	var rules []rule
	var names []string
	for _, g := range r.Data.Groups {
		for _, ru := range g.Rules {
			if ru.Type != "alerting" {
				continue
			}
			rules = append(rules, ru)
			names = append(names, ru.Name)
		}
	}
	var want []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllStringSubmatch(readFileString(t, alertRulesFile), -1) {
		want = append(want, m[1])
	}
	slices.Sort(names)
	slices.Sort(want)
	if len(want) == 0 || !slices.Equal(names, want) {
		t.Fatalf("Prometheus loaded alerts %v, %s defines %v", names, alertRulesFile, want)
	}
	return rules
}

// expectColor GETs url and checks the status and the colour that answered.
func expectColor(t *testing.T, url string, wantCode int, wantColor string) {
	t.Helper()
	code, color, body, err := httpDo(http.MethodGet, url, "")
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != wantCode || color != wantColor {
		t.Fatalf("GET %s: status %d from %q, want %d from %q: %.200s", url, code, color, wantCode, wantColor, body)
	}
}

// waitProm waits until the instant query expr returns one value that ok
// accepts.
func waitProm(t *testing.T, prom promClient, what, expr string, ok func(float64) bool) {
	t.Helper()
	waitFor(t, 30*time.Second, what+" in Prometheus ("+expr+")", func() (bool, error) {
		v, err := prom.queryValue(expr)
		return err == nil && ok(v), err
	})
}

func findAnnotation(t *testing.T, d dashboard, name string) annotation {
	t.Helper()
	for _, a := range d.Annotations.List {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("%s has no annotation %q", dashboardFile, name)
	return annotation{}
}

// annotationStep is stepOf that fails the test on a malformed step.
func annotationStep(t *testing.T, a annotation) time.Duration {
	t.Helper()
	if a.Step == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(a.Step)
	if err != nil || d <= 0 {
		t.Fatalf("annotation %q: bad step %q", a.Name, a.Step)
	}
	return d
}

// annotationEvents runs an annotation query over [start, now] and returns
// the times of the events Grafana would draw.
func annotationEvents(prom promClient, a annotation, start time.Time) ([]time.Time, error) {
	step := stepOf(a)
	expr, err := expandExpr(a.Expr, strconv.Itoa(int(step.Seconds()))+"s")
	if err != nil {
		return nil, err
	}
	res, err := prom.queryRange(expr, start, time.Now(), step)
	if err != nil {
		return nil, err
	}
	return eventsOf(a, res), nil
}

// eventsOf turns the result of an annotation query into event times the way
// Grafana's Prometheus data source does: every point with a value above 0 is
// an event at its time or, with useValueForTime, at its value in
// milliseconds; points a step apart or less merge into one (its start).
func eventsOf(a annotation, res []promSample) []time.Time {
	var out []time.Time
	for _, s := range res {
		var last time.Time
		for i, v := range s.Values {
			if math.IsNaN(v) || v <= 0 {
				continue
			}
			ts := time.UnixMilli(int64(s.Times[i] * 1000))
			if a.UseValueForTime {
				ts = time.UnixMilli(int64(v))
			}
			if !last.IsZero() && !ts.After(last.Add(stepOf(a))) {
				last = ts
				continue
			}
			last = ts
			out = append(out, ts)
		}
	}
	slices.SortFunc(out, func(x, y time.Time) int { return x.Compare(y) })
	return slices.CompactFunc(out, func(x, y time.Time) bool { return x.Equal(y) })
}

// stepOf is the step of an annotation query: its step field, or Grafana's
// default of 60s.
func stepOf(a annotation) time.Duration {
	if d, err := time.ParseDuration(a.Step); err == nil && d > 0 {
		return d
	}
	return time.Minute
}

// containsTime reports whether events has want, to the millisecond.
func containsTime(events []time.Time, want time.Time) bool {
	w := want.UnixMilli()
	return slices.ContainsFunc(events, func(e time.Time) bool {
		d := e.UnixMilli() - w
		return d >= -1 && d <= 1
	})
}

// logResult logs an expression and what it returned, one line per series.
func logResult(t *testing.T, what, expr string, res []promSample) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n  expr: %s", what, expr)
	if len(res) == 0 {
		b.WriteString("\n  (no data)")
	}
	for _, s := range res {
		fmt.Fprintf(&b, "\n  %s", s)
	}
	t.Log(b.String())
}
