package rollout

import (
	"fmt"

	"github.com/cryoprotect/bluegreen/state"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the control plane's series. A nil *Metrics records nothing.
type Metrics struct {
	cutovers   *prometheus.CounterVec
	lastSwitch prometheus.Gauge
	active     *prometheus.GaugeVec
	generation prometheus.Gauge

	rolloutWeight *prometheus.GaugeVec
	rolloutStep   prometheus.Gauge
	analysis      *prometheus.CounterVec
}

// NewMetrics creates the series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		cutovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_cutovers_total",
			Help: "Switch requests by source colour, target colour, trigger (api, cli, auto-rollback) and result (success, noop, rejected, error).",
		}, []string{"from", "to", "trigger", "result"}),
		lastSwitch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bluegreen_last_cutover_timestamp_seconds",
			Help: "Unix time of the last change of the active colour.",
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bluegreen_active_color",
			Help: "1 for the colour that receives live traffic, 0 for the other.",
		}, []string{"color"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bluegreen_state_generation",
			Help: "Generation of the state this proxy has applied.",
		}),
		rolloutWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bluegreen_rollout_weight",
			Help: "Percentage of clients each colour receives (100 and 0 outside a progressive rollout).",
		}, []string{"color"}),
		rolloutStep: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bluegreen_rollout_step",
			Help: "1-based step of the progressive rollout in progress; 0 when none runs.",
		}),
		analysis: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bluegreen_rollout_analysis_total",
			Help: "Rollout step evaluations by result (pass, continue, hold, paused, abort) on the replica that runs them.",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.cutovers, m.lastSwitch, m.active, m.generation, m.rolloutWeight, m.rolloutStep, m.analysis} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("rollout metrics: %w", err)
		}
	}
	return m, nil
}

// prepare creates the successful-switch series at zero for every pair of
// colours and every trigger, so increase() sees the first switch of each.
func (m *Metrics) prepare(colors [2]string) {
	if m == nil {
		return
	}
	for _, from := range colors {
		to := colors[0]
		if from == to {
			to = colors[1]
		}
		for _, trig := range []string{state.TriggerAPI, state.TriggerCLI, state.TriggerAutoRollback} {
			m.cutovers.WithLabelValues(from, to, trig, resultSuccess)
		}
	}
	for _, r := range []string{analysisPass, analysisContinue, analysisHold, analysisPaused, analysisAbort} {
		m.analysis.WithLabelValues(r)
	}
}

func (m *Metrics) analysed(result string) {
	if m == nil {
		return
	}
	m.analysis.WithLabelValues(result).Inc()
}

func (m *Metrics) count(from, to, trigger, result string) {
	if m == nil {
		return
	}
	m.cutovers.WithLabelValues(from, to, trigger, result).Inc()
}

// applied reports st, routed with weight percent of the clients on the
// idle colour (Controller.routedWeight).
func (m *Metrics) applied(st state.State, colors [2]string, weight int) {
	if m == nil {
		return
	}
	for _, c := range colors {
		v := 0.0
		if c == st.Active {
			v = 1
		}
		m.active.WithLabelValues(c).Set(v)
	}
	m.generation.Set(float64(st.Generation))
	w, step := weight, 0
	if r := st.Rollout; r != nil {
		step = r.Step + 1
	}
	for _, c := range colors {
		v := float64(w)
		if c == st.Active {
			v = float64(100 - w)
		}
		m.rolloutWeight.WithLabelValues(c).Set(v)
	}
	m.rolloutStep.Set(float64(step))
	if !st.ChangedAt.IsZero() {
		m.lastSwitch.Set(float64(st.ChangedAt.UnixNano()) / 1e9)
	}
}
