package health

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the health checker's Prometheus collectors:
//
//	bluegreen_backend_up{color,instance}                 gauge, 1 healthy, 0 not
//	bluegreen_health_checks_total{color,instance,result} counter, result "pass" or "fail"
//
// One Metrics serves the checkers of every colour. A nil *Metrics is valid
// everywhere and records nothing. Safe for concurrent use.
type Metrics struct {
	up     *prometheus.GaugeVec
	checks *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them on reg, which should be
// a private registry (prometheus.NewRegistry), never the global one. Calling it
// again with the same reg returns collectors that share the series already
// registered there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("health: metrics: nil Registerer")
	}
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bluegreen_backend_up",
		Help: "Whether a backend instance is healthy (1) or not (0) according to active health checks.",
	}, []string{"color", "instance"})
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bluegreen_health_checks_total",
		Help: "Active health check probes of backend instances, by result (pass or fail).",
	}, []string{"color", "instance", "result"})

	var err error
	if up, err = register(reg, up); err != nil {
		return nil, fmt.Errorf("health: register bluegreen_backend_up: %w", err)
	}
	if checks, err = register(reg, checks); err != nil {
		return nil, fmt.Errorf("health: register bluegreen_health_checks_total: %w", err)
	}
	return &Metrics{up: up, checks: checks}, nil
}

// register registers c on reg; when an equal collector is registered already,
// it returns that one instead.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	var zero T
	return zero, err
}

// instanceMetrics are the pre-resolved series of one instance. The zero value
// records nothing.
type instanceMetrics struct {
	up   prometheus.Gauge
	pass prometheus.Counter
	fail prometheus.Counter
}

// forInstance resolves the series of one instance and creates them at zero,
// so they exist before the first probe.
func (m *Metrics) forInstance(color, instance string) instanceMetrics {
	if m == nil {
		return instanceMetrics{}
	}
	im := instanceMetrics{
		up:   m.up.WithLabelValues(color, instance),
		pass: m.checks.WithLabelValues(color, instance, "pass"),
		fail: m.checks.WithLabelValues(color, instance, "fail"),
	}
	im.up.Set(0)
	return im
}

func (im instanceMetrics) probed(pass bool) {
	switch {
	case im.pass == nil:
	case pass:
		im.pass.Inc()
	default:
		im.fail.Inc()
	}
}

func (im instanceMetrics) setUp(up bool) {
	if im.up == nil {
		return
	}
	if up {
		im.up.Set(1)
	} else {
		im.up.Set(0)
	}
}
