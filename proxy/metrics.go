package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/internal/localfault"
)

// Metrics are the data plane's Prometheus series. Create them once with
// NewMetrics on the registry the process owns; a nil *Metrics disables them.
type Metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	inflight       *prometheus.GaugeVec
	upstreamErrors *prometheus.CounterVec
	draining       *prometheus.GaugeVec
	retries        *prometheus.CounterVec
	ejections      *prometheus.CounterVec
	clientErrors   [len(clientKinds)]prometheus.Counter
	localErrors    [len(localfault.Kinds)]prometheus.Counter
}

// DurationBuckets are the request_duration_seconds buckets: finer than the
// client default at the low end, where a proxy's latency lives.
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics creates the data-plane series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_requests_total",
			Help: "Requests proxied, by colour, status code and method.",
		}, []string{"color", "code", "method"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bluegreen_request_duration_seconds",
			Help:    "Time from receiving a request to finishing its response, by colour. Upgraded connections and event streams are not observed.",
			Buckets: DurationBuckets,
		}, []string{"color"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bluegreen_inflight_requests",
			Help: "Requests being served now, by colour.",
		}, []string{"color"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_upstream_errors_total",
			Help: "Failed attempts to get a response from an instance, and answers it broke off after their head, by kind: dial, timeout, reset, other.",
		}, []string{"color", "instance", "kind"}),
		draining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bluegreen_draining_connections",
			Help: "Long-lived connections (upgrades, event streams) on a colour that is no longer active, waiting to be closed.",
		}, []string{"color"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_upstream_retries_total",
			Help: "Requests sent a second time, to another instance of the colour when there is one, after a failure that made it safe: refused connection, or a reset before any response byte of an idempotent request without a body.",
		}, []string{"color"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_outlier_ejections_total",
			Help: "Times passive outlier detection took an instance out of balancing after consecutive failures.",
		}, []string{"color", "instance"}),
	}
	clientErrors := kindCounters(m.clientErrors[:], clientKinds[:], "bluegreen_client_errors_total",
		"Requests that failed by the client's doing, by kind: malformed (a malformed or unsupported request or body: 400, 431 or 501), timeout (the client stopped sending its body, 408), gone (the client left before its answer, 499). Never counted against an instance.")
	localErrors := kindCounters(m.localErrors[:], localfault.Kinds[:], "bluegreen_local_errors_total",
		"Requests that failed for want of a resource of the proxy's own, answered 503, by kind: fds (the descriptor limit), ports (no local port to connect from), memory (kernel buffers). Never counted against an instance or a client.")
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inflight, m.upstreamErrors, m.draining, m.retries, m.ejections, clientErrors, localErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy metrics: %w", err)
		}
	}
	return m, nil
}

// methods are the method label values; anything else counts as OTHER so a
// client cannot grow the number of series.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"}

func methodIndex(m string) int {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodDelete:
		return 4
	case http.MethodPatch:
		return 5
	case http.MethodOptions:
		return 6
	}
	return 7
}

const maxCode = 600

type counterRef struct{ c prometheus.Counter }

// colorMetrics holds the children of one colour, resolved once. Request
// counters for each (method, code) pair are resolved on first use and cached
// in atomics, so the request path does no map work after warm-up.
type colorMetrics struct {
	vec      *prometheus.CounterVec
	color    string
	codes    [len(methods)][maxCode]atomic.Pointer[counterRef]
	duration prometheus.Observer
	inflight prometheus.Gauge
	draining prometheus.Gauge
	errs     *prometheus.CounterVec
	retries  prometheus.Counter
	ejects   *prometheus.CounterVec
}

func (m *Metrics) forColor(color string) *colorMetrics {
	if m == nil {
		return nil
	}
	return &colorMetrics{
		vec:      m.requests,
		color:    color,
		duration: m.duration.WithLabelValues(color),
		inflight: m.inflight.WithLabelValues(color),
		draining: m.draining.WithLabelValues(color),
		errs:     m.upstreamErrors,
		retries:  m.retries.WithLabelValues(color),
		ejects:   m.ejections,
	}
}

func (cm *colorMetrics) count(method string, code int) {
	if cm == nil {
		return
	}
	if code < 100 || code >= maxCode {
		code = 0
	}
	mi := methodIndex(method)
	slot := &cm.codes[mi][code]
	ref := slot.Load()
	if ref == nil {
		ref = &counterRef{c: cm.vec.WithLabelValues(cm.color, strconv.Itoa(code), methods[mi])}
		slot.Store(ref)
	}
	ref.c.Inc()
}

// Error kinds of bluegreen_upstream_errors_total.
const (
	KindDial    = "dial"
	KindTimeout = "timeout"
	KindReset   = "reset"
	KindOther   = "other"
)

var kinds = [...]string{KindDial, KindTimeout, KindReset, KindOther}

// upstreamErrorCounters are one instance's error counters, resolved at
// construction so every series exists from the start (at zero).
type upstreamErrorCounters [len(kinds)]prometheus.Counter

func (cm *colorMetrics) forInstance(instance string) *upstreamErrorCounters {
	if cm == nil {
		return nil
	}
	var u upstreamErrorCounters
	for i, k := range kinds {
		u[i] = cm.errs.WithLabelValues(cm.color, instance, k)
	}
	return &u
}

func (u *upstreamErrorCounters) inc(kind string) {
	if u == nil {
		return
	}
	for i, k := range kinds {
		if k == kind {
			u[i].Inc()
			return
		}
	}
}

// drainingGauge is the colour's draining gauge, or nil without metrics.
func (cm *colorMetrics) drainingGauge() prometheus.Gauge {
	if cm == nil {
		return nil
	}
	return cm.draining
}

func (cm *colorMetrics) retried() {
	if cm != nil {
		cm.retries.Inc()
	}
}

// ejectionCounter is an instance's outlier_ejections_total child, created at
// zero; nil without metrics.
func (cm *colorMetrics) ejectionCounter(instance string) prometheus.Counter {
	if cm == nil {
		return nil
	}
	return cm.ejects.WithLabelValues(cm.color, instance)
}

// clientError counts a request that failed by the client's doing.
func (m *Metrics) clientError(kind string) {
	if m != nil {
		incKind(m.clientErrors[:], clientKinds[:], kind)
	}
}

// localError counts a request that failed for want of a resource of the
// proxy's own.
func (m *Metrics) localError(kind string) {
	if m != nil {
		incKind(m.localErrors[:], localfault.Kinds[:], kind)
	}
}

// kindCounters creates the counter vector name, labelled by kind, and
// fills counters[i] with its series of kinds[i], so that every kind is
// exported from zero.
func kindCounters(counters []prometheus.Counter, kinds []string, name, help string) *prometheus.CounterVec {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"kind"})
	for i, k := range kinds {
		counters[i] = vec.WithLabelValues(k)
	}
	return vec
}

// incKind increments the counter of kind: counters[i] counts kinds[i].
func incKind(counters []prometheus.Counter, kinds []string, kind string) {
	for i, k := range kinds {
		if k == kind {
			counters[i].Inc()
			return
		}
	}
}
