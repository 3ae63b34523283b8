package health

import (
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, true)
	name := b.srv.URL
	c := NewChecker("blue", []*url.URL{b.URL(t)}, Config{Rise: 2, Fall: 2}, nil, nil, m, nil, nil)

	check := func(step string, up, pass, fail float64) {
		t.Helper()
		if got := testutil.ToFloat64(m.up.WithLabelValues("blue", name)); got != up {
			t.Errorf("%s: backend_up = %v, want %v", step, got, up)
		}
		if got := testutil.ToFloat64(m.checks.WithLabelValues("blue", name, "pass")); got != pass {
			t.Errorf("%s: checks pass = %v, want %v", step, got, pass)
		}
		if got := testutil.ToFloat64(m.checks.WithLabelValues("blue", name, "fail")); got != fail {
			t.Errorf("%s: checks fail = %v, want %v", step, got, fail)
		}
	}

	check("before the first probe", 0, 0, 0)
	c.CheckOnce(t.Context())
	check("after a pass", 1, 1, 0)
	b.healthy.Store(false)
	c.CheckOnce(t.Context())
	check("after one failure (fall 2)", 1, 1, 1)
	c.CheckOnce(t.Context())
	check("after two failures", 0, 1, 2)

	want := `
# HELP bluegreen_backend_up Whether a backend instance is healthy (1) or not (0) according to active health checks.
# TYPE bluegreen_backend_up gauge
bluegreen_backend_up{color="blue",instance="` + name + `"} 0
# HELP bluegreen_health_checks_total Active health check probes of backend instances, by result (pass or fail).
# TYPE bluegreen_health_checks_total counter
bluegreen_health_checks_total{color="blue",instance="` + name + `",result="fail"} 2
bluegreen_health_checks_total{color="blue",instance="` + name + `",result="pass"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "bluegreen_backend_up", "bluegreen_health_checks_total"); err != nil {
		t.Error(err)
	}
}

func TestNewMetrics(t *testing.T) {
	t.Run("nil registerer", func(t *testing.T) {
		if _, err := NewMetrics(nil); err == nil {
			t.Error("NewMetrics(nil) succeeded")
		}
	})
	t.Run("twice on one registry shares the series", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m1, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := NewMetrics(reg)
		if err != nil {
			t.Fatalf("second NewMetrics: %v", err)
		}
		m1.up.WithLabelValues("blue", "http://a").Set(1)
		if got := testutil.ToFloat64(m2.up.WithLabelValues("blue", "http://a")); got != 1 {
			t.Errorf("second Metrics sees %v, want 1", got)
		}
	})
	t.Run("conflicting collector", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "bluegreen_backend_up", Help: "other"}))
		if _, err := NewMetrics(reg); err == nil {
			t.Error("NewMetrics succeeded over a conflicting collector")
		}
	})
	t.Run("nil metrics record nothing", func(t *testing.T) {
		b := newBackend(t, true)
		var m *Metrics
		c := NewChecker("blue", []*url.URL{b.URL(t)}, Config{}, nil, nil, m, nil, nil)
		c.CheckOnce(t.Context())
		if c.Healthy() != 1 {
			t.Error("not healthy")
		}
	})
}

func TestMetricsPerColor(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	blue, green := newBackend(t, true), newBackend(t, false)
	cb := NewChecker("blue", []*url.URL{blue.URL(t)}, Config{}, nil, nil, m, nil, nil)
	cg := NewChecker("green", []*url.URL{green.URL(t)}, Config{}, nil, nil, m, nil, nil)
	cb.CheckOnce(t.Context())
	cg.CheckOnce(t.Context())
	if got := testutil.ToFloat64(m.up.WithLabelValues("blue", blue.srv.URL)); got != 1 {
		t.Errorf("blue backend_up = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.up.WithLabelValues("green", green.srv.URL)); got != 0 {
		t.Errorf("green backend_up = %v, want 0", got)
	}
	if got := testutil.CollectAndCount(m.checks); got != 4 {
		t.Errorf("%d health_checks_total series, want 4 (2 instances x pass/fail)", got)
	}
}
