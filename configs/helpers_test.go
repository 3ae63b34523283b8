package configs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/internal/adminclient"
	"github.com/cryoprotect/bluegreen/internal/certs/certtest"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// Paths of the shipped files, relative to this package.
const (
	prometheusConfigFile = "prometheus/prometheus.yml"
	alertRulesFile       = "prometheus/alerts.yml"
	alertTestsFile       = "prometheus/alerts_test.yml"
	dashboardFile        = "grafana/dashboards/bluegreen.json"
	datasourceFile       = "grafana/provisioning/datasources/prometheus.yml"
	dashboardProvFile    = "grafana/provisioning/dashboards/bluegreen.yml"
	readmeFile           = "README.md"
)

// httpClient is the client of every test request; no request may hang a test.
var httpClient = &http.Client{Timeout: 5 * time.Second}

// builds holds the programs built for this test binary.
var builds testkit.Builds

func TestMain(m *testing.M) {
	code := m.Run()
	builds.Cleanup()
	os.Exit(code)
}

// binaries are the programs under test, built from this module.
type binaries struct{ proxy, demo string }

// buildBinaries builds cmd/bluegreen and cmd/demo-app (once per test
// binary); it skips the test under -short.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	return binaries{proxy: builds.Path(t, "../cmd/bluegreen"), demo: builds.Path(t, "../cmd/demo-app")}
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now: an
// address that refuses connections. It is never handed to a process to
// bind; bluegreen, demo-app and prometheus bind port 0 and report their
// address on a log line.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// waitFor polls cond every 100 ms until it returns true, and fails the test
// when timeout passes first, with the last error cond returned.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpDo does one request and returns its status code, the value of
// X-Deployment-Color and the body.
func httpDo(method, rawURL, body string) (int, string, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, rawURL, r)
	if err != nil {
		return 0, "", nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header.Get("X-Deployment-Color"), b, err
}

// mustDo is httpDo that fails the test on a transport error or an
// unexpected status.
func mustDo(t *testing.T, method, rawURL, body string, wantStatus int) []byte {
	t.Helper()
	code, _, b, err := httpDo(method, rawURL, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	if code != wantStatus {
		t.Fatalf("%s %s: status %d, want %d: %s", method, rawURL, code, wantStatus, b)
	}
	return b
}

// waitHTTP200 waits until GET rawURL answers 200.
func waitHTTP200(t *testing.T, rawURL string) {
	t.Helper()
	testkit.WaitHTTP(t, 30*time.Second, rawURL, http.StatusOK)
}

// demoApp starts a demo app of the given colour on a free loopback port and
// returns its base URL once it answers.
func demoApp(t *testing.T, bin binaries, color string) string {
	t.Helper()
	p := testkit.Start(t, "demo-app-"+color, bin.demo, []string{
		"DEPLOYMENT_COLOR=" + color, "APP_VERSION=test-" + color,
		"PORT=0", "LISTEN_ADDR=127.0.0.1",
	})
	base := "http://" + testkit.Addr(p.WaitLog(t, 30*time.Second, "listening"), "addr")
	waitHTTP200(t, base+"/health")
	return base
}

// proxy is one running bluegreen process.
type proxy struct {
	public string // base URL of the public listener
	admin  string // base URL of the admin listener
	target string // host:port of the admin listener, the scrape target
	api    *adminclient.Client
	pid    int
}

// startProxy starts bluegreen in front of the blue and green URLs with fast
// health checks and its own state file, and waits until it is ready.
func startProxy(t *testing.T, bin binaries, name, blue, green string) proxy {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state.json")
	// A TLS listener whose certificate expires in 10 days: the TLS panels
	// get data and BlueGreenCertificateExpiresSoon fires.
	ca := certtest.NewCA(t)
	certPEM, keyPEM := ca.Leaf(t, time.Now().Add(-time.Hour), time.Now().Add(10*24*time.Hour), name+".test")
	certFile, keyFile := filepath.Join(t.TempDir(), "tls.crt"), filepath.Join(t.TempDir(), "tls.key")
	certtest.WriteAtomic(t, certFile, certPEM)
	certtest.WriteAtomic(t, keyFile, keyPEM)
	proc := testkit.Start(t, name, bin.proxy, []string{
		"BLUEGREEN_TLS_LISTEN=127.0.0.1:0",
		"BLUEGREEN_TLS_CERT_FILE=" + certFile,
		"BLUEGREEN_TLS_KEY_FILE=" + keyFile,
		"BLUEGREEN_BLUE_URLS=" + blue,
		"BLUEGREEN_GREEN_URLS=" + green,
		"BLUEGREEN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + state,
		"BLUEGREEN_HEALTH_INTERVAL=200ms",
		"BLUEGREEN_HEALTH_TIMEOUT=150ms",
		"BLUEGREEN_HEALTH_RISE=1",
		"BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_DRAIN_TIMEOUT=2s",
		"BLUEGREEN_REPLICA_ID=" + name,
		"BLUEGREEN_LOG_FORMAT=json",
		"BLUEGREEN_ROLLOUT_ANALYSIS_INTERVAL=500ms",
	}, "serve")
	ready := proc.WaitLog(t, 30*time.Second, "bluegreen serving")
	pub, adm := testkit.Addr(ready, "listen"), testkit.Addr(ready, "admin")
	p := proxy{public: "http://" + pub, admin: "http://" + adm, target: adm, pid: proc.Cmd.Process.Pid}
	p.api = adminclient.New(&url.URL{Scheme: "http", Host: p.target}, "", adminclient.Options{RequestTimeout: 5 * time.Second})
	t.Cleanup(p.api.Close)
	waitHTTP200(t, p.admin+"/readyz")
	return p
}

// outOfDescriptors leaves p without a free descriptor and sends it a
// request, which needs a new connection to an instance: 503. The
// descriptors come back when it returns.
func outOfDescriptors(t *testing.T, p proxy) {
	t.Helper()
	conns := testkit.ExhaustFDs(t, p.pid, strings.TrimPrefix(p.public, "http://"), 6)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if code := testkit.RawGet(t, conns[0]); code != http.StatusServiceUnavailable {
		t.Fatalf("a request without a descriptor for its instance connection: %d, want 503", code)
	}
}

// status is the proxy's GET /admin/status.
func (p proxy) status() (admin.Status, error) {
	st, _, err := p.api.Status(context.Background())
	return st, err
}

// cutover switches the proxy to the colour to through its admin API, and
// fails the test when the switch is refused.
func (p proxy) cutover(t *testing.T, to, reason string) admin.Status {
	t.Helper()
	st, _, err := p.api.Cutover(t.Context(), admin.SwitchRequest{To: to, Reason: reason})
	if err != nil {
		t.Fatalf("cutover to %s: %v", to, err)
	}
	return st
}

// promSample is one series of a query result with its values: one for an
// instant query, one per step for a range query.
type promSample struct {
	Labels map[string]string
	Times  []float64
	Values []float64
}

func (s promSample) String() string {
	return labelString(s.Labels) + " " + formatValues(s.Values)
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func formatValues(vs []float64) string {
	if len(vs) == 1 {
		return "= " + formatValue(vs[0])
	}
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = formatValue(v)
	}
	return "= [" + strings.Join(parts, " ") + "]"
}

// formatValue prints v with 6 significant digits, or to the millisecond when
// it is a Unix time (in seconds or milliseconds).
func formatValue(v float64) string {
	if math.Abs(v) >= 1e6 && !math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// promClient queries Prometheus's HTTP API.
type promClient struct{ base string }

// query runs an instant query; a query that does not parse or fails is an
// error.
func (c promClient) query(expr string) ([]promSample, error) {
	return c.get("/api/v1/query", url.Values{"query": {expr}})
}

// queryRange runs a range query from start to end, with both aligned to step
// as Grafana does.
func (c promClient) queryRange(expr string, start, end time.Time, step time.Duration) ([]promSample, error) {
	s := start.Truncate(step)
	e := end.Truncate(step)
	return c.get("/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(s.Unix(), 10)},
		"end":   {strconv.FormatInt(e.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	})
}

func (c promClient) get(path string, params url.Values) ([]promSample, error) {
	code, _, body, err := httpDo(http.MethodGet, c.base+path+"?"+params.Encode(), "")
	if err != nil {
		return nil, err
	}
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("status %d, undecodable answer %.200q: %w", code, body, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("status %d: %s: %s", code, r.ErrorType, r.Error)
	}
	var out []promSample
	switch r.Data.ResultType {
	case "vector":
		var v []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		for _, s := range v {
			ts, val, err := parsePoint(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, promSample{Labels: s.Metric, Times: []float64{ts}, Values: []float64{val}})
		}
	case "matrix":
		var m []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		if err := json.Unmarshal(r.Data.Result, &m); err != nil {
			return nil, err
		}
		for _, s := range m {
			ps := promSample{Labels: s.Metric}
			for _, p := range s.Values {
				ts, val, err := parsePoint(p)
				if err != nil {
					return nil, err
				}
				ps.Times = append(ps.Times, ts)
				ps.Values = append(ps.Values, val)
			}
			out = append(out, ps)
		}
	case "scalar":
		var p [2]any
		if err := json.Unmarshal(r.Data.Result, &p); err != nil {
			return nil, err
		}
		ts, val, err := parsePoint(p)
		if err != nil {
			return nil, err
		}
		out = append(out, promSample{Labels: map[string]string{}, Times: []float64{ts}, Values: []float64{val}})
	default:
		return nil, fmt.Errorf("unexpected result type %q", r.Data.ResultType)
	}
	return out, nil
}

// parsePoint decodes a [timestamp, "value"] pair of the HTTP API.
func parsePoint(p [2]any) (float64, float64, error) {
	ts, ok := p[0].(float64)
	s, ok2 := p[1].(string)
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("bad sample %v", p)
	}
	v, err := strconv.ParseFloat(s, 64)
	return ts, v, err
}

// queryValue returns the single value of an instant query, or an error when
// the result is not exactly one sample.
func (c promClient) queryValue(expr string) (float64, error) {
	res, err := c.query(expr)
	if err != nil {
		return 0, err
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("%s: %d series, want 1", expr, len(res))
	}
	return res[0].Values[0], nil
}

// hasFinite reports whether any value of the result is a number (not NaN,
// not infinite).
func hasFinite(res []promSample) bool {
	for _, s := range res {
		for _, v := range s.Values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				return true
			}
		}
	}
	return false
}

// trafficLoop sends GET / through the proxy every interval until stopped,
// so that every rate window of the queries has requests in it.
type trafficLoop struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func startTraffic(t *testing.T, proxyURL string, every time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &trafficLoop{stop: cancel}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _, _, _ = httpDo(http.MethodGet, proxyURL+"/", "")
			}
		}
	}()
	t.Cleanup(func() { l.stop(); l.wg.Wait() })
}

// metricNameRE matches the bluegreen metric names in an expression or file.
var metricNameRE = regexp.MustCompile(`\bbluegreen_[a-zA-Z0-9_:]+`)

// dashboard is the part of the dashboard JSON the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Annotations   struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type annotation struct {
	Name            string          `json:"name"`
	Enable          bool            `json:"enable"`
	Datasource      *datasourceRef  `json:"datasource"`
	Expr            string          `json:"expr"`
	Step            string          `json:"step"`
	UseValueForTime bool            `json:"useValueForTime"`
	TitleFormat     string          `json:"titleFormat"`
	Filter          json.RawMessage `json:"filter"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Datasource   *datasourceRef `json:"datasource"`
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
		RefID        string         `json:"refId"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Mappings []struct {
				Type    string          `json:"type"`
				Options json.RawMessage `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []panel `json:"panels"` // of a collapsed row
}

// allPanels returns the panels, those inside rows included.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func loadDashboard(t *testing.T) (dashboard, []byte) {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d, raw
}

// grafanaVars are the values the tests give Grafana's built-in variables:
// what Grafana would use for a short range with a 1 s scrape interval.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"${__rate_interval}", "1m",
	"$__interval", "15s",
	"${__interval}", "15s",
	"$__range", "1h",
	"${__range}", "1h",
)

// expandExpr substitutes Grafana's variables in expr; interval, when not
// empty, replaces $__interval (an annotation's step).
func expandExpr(expr, interval string) (string, error) {
	if interval != "" {
		expr = strings.NewReplacer("${__interval}", interval, "$__interval", interval).Replace(expr)
	}
	expr = grafanaVars.Replace(expr)
	if strings.Contains(expr, "$") {
		return "", fmt.Errorf("unknown variable left in %q", expr)
	}
	return expr, nil
}

// legendLabels are the label names a legend format such as "{{color}}
// {{backend}}" refers to.
func legendLabels(format string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`).FindAllStringSubmatch(format, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// readFileString reads one of the shipped files.
func readFileString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replaceOnce replaces old by new in s and fails the test unless old occurs
// exactly once: the test must not silently drift from the shipped file.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%s: want exactly one %q, found %d", prometheusConfigFile, old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// lookPrometheus finds the prometheus server, or skips the test (fails it
// when the CI variable is set); it skips the test under -short.
func lookPrometheus(t *testing.T) string {
	t.Helper()
	testkit.SkipIfShort(t, "start Prometheus")
	return testkit.LookTool(t, "prometheus", "Debian: apt-get install prometheus")
}
