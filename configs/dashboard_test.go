package configs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// wantDashboardMetrics are the series the dashboard must chart: every
// bluegreen metric of the design.
var wantDashboardMetrics = []string{
	"bluegreen_requests_total",
	"bluegreen_request_duration_seconds_bucket",
	"bluegreen_inflight_requests",
	"bluegreen_draining_connections",
	"bluegreen_active_color",
	"bluegreen_backend_up",
	"bluegreen_health_checks_total",
	"bluegreen_upstream_errors_total",
	"bluegreen_cutovers_total",
	"bluegreen_last_cutover_timestamp_seconds",
	"bluegreen_state_generation",
}

// TestDashboardStructure checks what Grafana needs to import the dashboard
// anywhere: a Prometheus data source variable used by every query and no
// hard-coded data source, annotations shown on every panel, a sane layout,
// and a README that describes every panel and alert. Grafana itself does not
// run in this test; Prometheus answers the queries in TestMonitoringEndToEnd.
func TestDashboardStructure(t *testing.T) {
	d, raw := loadDashboard(t)
	want := datasourceRef{Type: "prometheus", UID: "${datasource}"}

	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set for provisioning and links", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want 36 or later (data source references as objects)", d.SchemaVersion)
	}
	var hasVar bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			hasVar = v.Type == "datasource" && v.Query == "prometheus"
		}
	}
	if !hasVar {
		t.Error(`no template variable "datasource" of type datasource with query "prometheus"`)
	}

	// No data source uid but the variable; no legacy string data sources.
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				p := path + "." + k
				if s, ok := x.(string); ok && (k == "uid" && p != ".uid" || k == "datasource") && s != "${datasource}" {
					t.Errorf("%s = %q: hard-coded data source (want ${datasource})", p, s)
				}
				walk(p, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	walk("", tree)

	ids := map[int]bool{}
	var cells [][4]int
	used := map[string]bool{}
	var quantiles []string
	var healthPanel, colourStat bool
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, g)
		}
		for _, c := range cells {
			if g.X < c[0]+c[2] && c[0] < g.X+g.W && g.Y < c[1]+c[3] && c[1] < g.Y+g.H {
				t.Errorf("panel %q overlaps another panel at %v", p.Title, c)
			}
		}
		cells = append(cells, [4]int{g.X, g.Y, g.W, g.H})
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || *p.Datasource != want {
			t.Errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, want)
		}
		if p.Description == "" {
			t.Errorf("panel %q: no description", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || *tg.Datasource != want {
				t.Errorf("panel %q %s: datasource %+v, want %+v", p.Title, tg.RefID, tg.Datasource, want)
			}
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: query %q with empty or duplicate refId %q", p.Title, tg.Expr, tg.RefID)
			}
			refs[tg.RefID] = true
			for _, m := range metricNameRE.FindAllString(tg.Expr, -1) {
				used[m] = true
			}
			if m := regexp.MustCompile(`histogram_quantile\(([0-9.]+),`).FindStringSubmatch(tg.Expr); m != nil {
				quantiles = append(quantiles, m[1])
			}
			if strings.Contains(tg.Expr, "bluegreen_backend_up") && (p.Type == "state-timeline" || p.Type == "table") {
				healthPanel = true
			}
			if strings.Contains(tg.Expr, "bluegreen_active_color") && p.Type == "stat" && mapsColours(t, p) {
				colourStat = true
			}
		}
	}
	slices.Sort(quantiles)
	if !slices.Equal(quantiles, []string{"0.5", "0.95", "0.99"}) {
		t.Errorf("latency quantiles %v, want 0.5, 0.95 and 0.99", quantiles)
	}
	if !healthPanel {
		t.Error("no state timeline or table of bluegreen_backend_up")
	}
	if !colourStat {
		t.Error("no stat of bluegreen_active_color with a colour value mapping")
	}

	var annotations int
	for _, a := range d.Annotations.List {
		if a.Datasource == nil || *a.Datasource != want {
			t.Errorf("annotation %q: datasource %+v, want %+v", a.Name, a.Datasource, want)
		}
		if !a.Enable || a.Expr == "" {
			t.Errorf("annotation %q: disabled or without a query", a.Name)
		}
		if len(a.Filter) > 0 && string(a.Filter) != "null" {
			t.Errorf("annotation %q: filter %s; annotations must show on every panel", a.Name, a.Filter)
		}
		for _, m := range metricNameRE.FindAllString(a.Expr, -1) {
			used[m] = true
		}
		annotations++
	}
	if annotations < 2 {
		t.Errorf("%d annotation queries, want switches and auto-rollbacks", annotations)
	}
	for _, m := range wantDashboardMetrics {
		if !used[m] {
			t.Errorf("the dashboard does not chart %s", m)
		}
	}

	// Provisioning and documentation agree with the files.
	ds := readFileString(t, datasourceFile)
	for _, s := range []string{"type: prometheus", "url: http://prometheus:9090"} {
		if !strings.Contains(ds, s) {
			t.Errorf("%s: no %q", datasourceFile, s)
		}
	}
	m := regexp.MustCompile(`(?m)^\s*path:\s*(\S+)`).FindStringSubmatch(readFileString(t, dashboardProvFile))
	readme := readFileString(t, readmeFile)
	if m == nil {
		t.Errorf("%s: no options.path", dashboardProvFile)
	} else if !strings.Contains(readme, m[1]) {
		t.Errorf("%s does not document the dashboard mount path %s", readmeFile, m[1])
	}
	for _, p := range d.allPanels() {
		if p.Type != "row" && !strings.Contains(readme, p.Title) {
			t.Errorf("%s does not describe panel %q", readmeFile, p.Title)
		}
	}
	for _, a := range d.Annotations.List {
		if !strings.Contains(readme, a.Name) {
			t.Errorf("%s does not describe annotation %q", readmeFile, a.Name)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllStringSubmatch(readFileString(t, alertRulesFile), -1) {
		if !strings.Contains(readme, m[1]) {
			t.Errorf("%s does not describe alert %s", readmeFile, m[1])
		}
	}
}

// TestDashboardMetricNames fails when the dashboard, the alert rules or
// their unit tests name a bluegreen metric that the proxy does not expose.
// It runs the real proxy in front of two demo apps, sends a request and
// makes a cutover (so that the series created on first use exist), and reads
// the metric families from its /metrics.
func TestDashboardMetricNames(t *testing.T) {
	bin := buildBinaries(t)
	blue := demoApp(t, bin, "blue")
	green := demoApp(t, bin, "green")
	p := startProxy(t, bin, "bluegreen", blue, green)
	expectColor(t, p.public+"/", http.StatusOK, "blue")
	p.cutover(t, "green", "")
	expectColor(t, p.public+"/", http.StatusOK, "green")

	exposed := exposedNames(t, mustDo(t, http.MethodGet, p.admin+"/metrics", "", http.StatusOK))
	var names []string
	for n := range exposed {
		if strings.HasPrefix(n, "bluegreen_") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	t.Logf("the proxy exposes: %s", strings.Join(names, " "))
	if len(names) == 0 {
		t.Fatal("the proxy exposes no bluegreen_ metric")
	}

	d, _ := loadDashboard(t)
	uses := map[string][]string{} // metric -> where
	add := func(where, text string) {
		for _, m := range metricNameRE.FindAllString(text, -1) {
			if !slices.Contains(uses[m], where) {
				uses[m] = append(uses[m], where)
			}
		}
	}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("%s panel %q", dashboardFile, p.Title), tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		add(fmt.Sprintf("%s annotation %q", dashboardFile, a.Name), a.Expr)
	}
	add(alertRulesFile, readFileString(t, alertRulesFile))
	add(alertTestsFile, readFileString(t, alertTestsFile))
	if len(uses) == 0 {
		t.Fatal("found no bluegreen_ metric in the dashboard and rules")
	}
	for m, where := range uses {
		if !exposed[m] {
			t.Errorf("%s uses %s, which the proxy does not expose", strings.Join(where, ", "), m)
		}
	}
}

// exposedNames returns the sample names of a text exposition: the family
// names of its TYPE lines; for a histogram only its _bucket, _sum and _count
// series, for a summary its _sum and _count as well.
func exposedNames(t *testing.T, body []byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		name, typ := f[2], f[3]
		switch typ {
		case "histogram":
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case "summary":
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			out[name] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// mapsColours reports whether a panel maps values to the texts blue and
// green, shown in those colours.
func mapsColours(t *testing.T, p panel) bool {
	t.Helper()
	found := map[string]bool{}
	for _, m := range p.FieldConfig.Defaults.Mappings {
		if m.Type != "value" {
			continue
		}
		var opts map[string]struct {
			Text  string `json:"text"`
			Color string `json:"color"`
		}
		if err := json.Unmarshal(m.Options, &opts); err != nil {
			t.Errorf("panel %q: value mapping: %v", p.Title, err)
			return false
		}
		for _, o := range opts {
			if o.Text == o.Color {
				found[o.Text] = true
			}
		}
	}
	return found["blue"] && found["green"]
}
