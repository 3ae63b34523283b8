package certs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the TLS and certificate series. Create them once per
// Registerer with NewMetrics.
type Metrics struct {
	handshakes *prometheus.CounterVec
	expiry     *prometheus.GaugeVec
	orders     *prometheus.CounterVec
	reloads    *prometheus.CounterVec
}

// Handshake results (the result label of bluegreen_tls_handshakes_total).
const (
	ResultOK          = "ok"             // the handshake completed
	ResultPlainHTTP   = "plaintext_http" // a plain HTTP request on the TLS port (answered 400)
	ResultUnknownName = "unknown_name"   // no certificate for the server name and no default
	ResultClosed      = "client_closed"  // the client hung up or timed out mid-handshake
	ResultFailed      = "failed"         // anything else: version, cipher or curve mismatch, bad alert
)

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_tls_handshakes_total",
			Help: "TLS handshakes on the TLS listener by result: ok, plaintext_http, unknown_name, client_closed, failed.",
		}, []string{"result"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bluegreen_tls_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of each served certificate (Unix seconds), by its first name.",
		}, []string{"name"}),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_acme_orders_total",
			Help: "ACME certificate orders by result: obtained, renewed, failed (each failed attempt counts).",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_tls_certificate_reloads_total",
			Help: "Certificate file pairs (re)loaded by result: ok, or error (the previous pair stays in use).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.handshakes, m.expiry, m.orders, m.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{ResultOK, ResultPlainHTTP, ResultUnknownName, ResultClosed, ResultFailed} {
		m.handshakes.WithLabelValues(r)
	}
	for _, r := range []string{"obtained", "renewed", "failed"} {
		m.orders.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	return m, nil
}
