package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cryoprotect/bluegreen/state"
)

// Errors of the progressive rollout calls. The admin API maps both to 409.
var (
	ErrRolloutRunning = errors.New("a rollout is already in progress")
	ErrNoRollout      = errors.New("no rollout in progress")
)

// Stats reads the data plane's own counters of one colour since a time:
// the requests it answered, those that failed because of an instance (5xx
// from an instance, or a 502/504 the proxy attributes to one; never a
// client fault), and the 99th percentile of their latency. It must be cheap
// and safe for concurrent use. proxy/stats implements it.
type Stats interface {
	Window(color string, since time.Time) (requests, instanceErrors int64, p99 time.Duration)
}

// WeightedRouter is a Router that can also send a share of the clients to
// the idle colour. weight is the percentage (0–100) of clients, chosen by a
// stable hash of their key, that go to the colour that is not active. One
// call changes both at once, so no request ever sees a half-applied state.
type WeightedRouter interface {
	SetActiveWeighted(color string, generation uint64, weight int) error
}

// Rollout defaults (see RolloutRequest).
var (
	DefaultSteps = []int{1, 5, 25, 50, 100}
)

const (
	DefaultStepInterval  = time.Minute
	DefaultMinRequests   = 100
	DefaultMaxErrorRatio = 0.01
	DefaultMaxHeld       = 3
	// MaxAnalysisEvery is the longest time between two evaluations.
	MaxAnalysisEvery = 10 * time.Second
)

// RolloutRequest asks for a progressive rollout to To. Zero fields take the
// defaults: steps 1,5,25,50,100; one minute per step; 100 requests to the
// target before a step can pass; 1 % instance-caused errors; no p99 limits;
// pause after 3 intervals held for want of traffic.
type RolloutRequest struct {
	To            string
	Steps         []int // strictly increasing percentages in 1..100, ending with 100
	StepInterval  time.Duration
	MinRequests   int64
	MaxErrorRatio float64
	MaxP99        time.Duration // 0: no absolute limit
	MaxP99Ratio   float64       // 0: no limit against the baseline's p99
	MaxHeld       int
	Reason        string
	Trigger       string // api (default) or cli
}

// RolloutAction asks to promote, pause, resume or abort a rollout.
type RolloutAction struct {
	Full    bool   // promote: straight to 100 %
	Reason  string // recorded with a pause or an abort
	Trigger string // api (default) or cli
}

// Window is one colour's counters over the current step's window.
type Window struct {
	Requests       int64   `json:"requests"`
	InstanceErrors int64   `json:"instance_errors"`
	ErrorRatio     float64 `json:"error_ratio"`
	P99            string  `json:"p99"`
	P99Seconds     float64 `json:"p99_seconds"`
}

// RolloutView is the answer of GET /admin/rollout.
type RolloutView struct {
	// Phase is running, paused, or, when none runs, the outcome of the last
	// one (completed, aborted, superseded); none when there never was one.
	Phase      string         `json:"phase"`
	Active     string         `json:"active"`
	Generation uint64         `json:"generation"`
	Rollout    *state.Rollout `json:"rollout,omitempty"`
	Last       *state.Rollout `json:"last,omitempty"`
	// The rest is set while a rollout runs.
	StepNumber int               `json:"step_number,omitempty"` // 1-based
	Weight     int               `json:"weight"`
	TimeInStep string            `json:"time_in_step,omitempty"`
	Colors     map[string]Window `json:"colors,omitempty"`
	Verdict    string            `json:"verdict,omitempty"`
	Leader     bool              `json:"leader"`
	// In a fleet (Config.Fleet), Colors are the fleet's totals: this
	// replica's live counts plus the others' last publications. Replicas
	// is how many replicas contributed, FleetStale why the totals are too
	// old for a step to pass (empty when fresh).
	Replicas   int    `json:"replicas,omitempty"`
	FleetStale string `json:"fleet_stale,omitempty"`
	// Held: this replica, cut off from the fleet (Config.HoldAfter),
	// routes none of its traffic by Weight until it is back.
	Held bool `json:"held,omitempty"`
}

// Phases of RolloutView.
const (
	PhaseNone    = "none"
	PhaseRunning = "running"
	PhasePaused  = "paused"
)

// normalise fills in defaults and checks a request.
func (c *Controller) normalise(req RolloutRequest) (RolloutRequest, error) {
	if !slices.Contains(c.cfg.Colors[:], req.To) {
		return req, fmt.Errorf("%w: unknown colour %q: expected %q or %q", ErrInvalid, req.To, c.cfg.Colors[0], c.cfg.Colors[1])
	}
	if len(req.Steps) == 0 {
		req.Steps = slices.Clone(DefaultSteps)
	}
	prev := 0
	for _, s := range req.Steps {
		if s <= prev || s > 100 {
			return req, fmt.Errorf("%w: steps must be strictly increasing percentages between 1 and 100, got %v", ErrInvalid, req.Steps)
		}
		prev = s
	}
	if prev != 100 {
		return req, fmt.Errorf("%w: the last step must be 100, got %v", ErrInvalid, req.Steps)
	}
	switch {
	case req.StepInterval < 0 || req.MinRequests < 0 || req.MaxP99 < 0 || req.MaxHeld < 0:
		return req, fmt.Errorf("%w: step_interval, min_requests, max_p99 and max_held must not be negative", ErrInvalid)
	case req.MaxErrorRatio < 0 || req.MaxErrorRatio > 1:
		return req, fmt.Errorf("%w: max_error_ratio must be between 0 and 1, got %v", ErrInvalid, req.MaxErrorRatio)
	case req.MaxP99Ratio < 0 || (req.MaxP99Ratio > 0 && req.MaxP99Ratio < 1):
		return req, fmt.Errorf("%w: max_p99_ratio must be 0 (off) or at least 1, got %v", ErrInvalid, req.MaxP99Ratio)
	}
	if req.StepInterval == 0 {
		req.StepInterval = DefaultStepInterval
	}
	if req.MinRequests == 0 {
		req.MinRequests = DefaultMinRequests
	}
	if req.MaxErrorRatio == 0 {
		req.MaxErrorRatio = DefaultMaxErrorRatio
	}
	if req.MaxHeld == 0 {
		req.MaxHeld = DefaultMaxHeld
	}
	switch req.Trigger {
	case "":
		req.Trigger = state.TriggerAPI
	case state.TriggerAPI, state.TriggerCLI:
	default:
		return req, fmt.Errorf("%w: unknown trigger %q: expected %q or %q", ErrInvalid, req.Trigger, state.TriggerAPI, state.TriggerCLI)
	}
	return req, nil
}

func actionTrigger(t string) (string, error) {
	switch t {
	case "":
		return state.TriggerAPI, nil
	case state.TriggerAPI, state.TriggerCLI:
		return t, nil
	}
	return "", fmt.Errorf("%w: unknown trigger %q: expected %q or %q", ErrInvalid, t, state.TriggerAPI, state.TriggerCLI)
}

// StartRollout begins a progressive rollout to req.To at its first step.
// It fails with ErrRolloutRunning when one runs, ErrUnhealthy when the
// target has no healthy instance, ErrConflict when another writer changed
// the state first, ErrInvalid for a bad request.
func (c *Controller) StartRollout(ctx context.Context, req RolloutRequest) (RolloutView, error) {
	req, err := c.normalise(req)
	if err != nil {
		return c.RolloutStatus(), err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.cur
	switch {
	case cur.Rollout != nil:
		return c.viewLocked(), fmt.Errorf("%w: to %s at %d%%", ErrRolloutRunning, cur.Rollout.To, cur.Rollout.Weight)
	case req.To == cur.Active:
		return c.viewLocked(), fmt.Errorf("%w: %s is already active", ErrInvalid, req.To)
	case c.health.Healthy(req.To) == 0:
		return c.viewLocked(), fmt.Errorf("%w: %s", ErrUnhealthy, req.To)
	}
	now := c.now().UTC()
	r := &state.Rollout{
		To: req.To, From: cur.Active, Steps: slices.Clone(req.Steps), Step: 0, Weight: req.Steps[0],
		StartedAt: now, StepStartedAt: now, Reason: req.Reason, Trigger: req.Trigger,
		StepInterval: state.Duration(req.StepInterval), MinRequests: req.MinRequests,
		MaxErrorRatio: req.MaxErrorRatio, MaxP99: state.Duration(req.MaxP99), MaxP99Ratio: req.MaxP99Ratio,
		MaxHeld: req.MaxHeld,
	}
	next := cur
	next.Generation++
	next.Rollout = r
	if r.Weight == 100 {
		// A single step of 100 is a cutover.
		if err := c.completeLocked(ctx, r, "single step of 100%"); err != nil {
			return c.viewLocked(), err
		}
		return c.viewLocked(), nil
	}
	if err := c.storeLocked(ctx, next); err != nil {
		return c.viewLocked(), err
	}
	c.log.Warn("rollout started", "to", r.To, "steps", r.Steps, "weight", r.Weight, "step_interval", req.StepInterval.String(), "trigger", r.Trigger, "reason", r.Reason, "generation", next.Generation)
	return c.viewLocked(), nil
}

// act runs one operator action on the running rollout: the trigger is
// checked, then do runs under the lock; ErrNoRollout when none runs.
func (c *Controller) act(a RolloutAction, do func(r *state.Rollout, trigger string) error) (RolloutView, error) {
	trig, err := actionTrigger(a.Trigger)
	if err != nil {
		return c.RolloutStatus(), err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.cur.Rollout
	if r == nil {
		return c.viewLocked(), ErrNoRollout
	}
	err = do(r, trig)
	return c.viewLocked(), err
}

// withReason appends an operator's reason to what happened.
func withReason(what, reason string) string {
	if reason == "" {
		return what
	}
	return what + ": " + reason
}

// Promote moves a rollout to its next step at once (a.Full: to 100 %),
// whatever the analysis says, and resumes it if it was paused. Reaching 100
// is the cutover.
func (c *Controller) Promote(ctx context.Context, a RolloutAction) (RolloutView, error) {
	return c.act(a, func(r *state.Rollout, _ string) error {
		step := r.Step + 1
		if a.Full {
			step = len(r.Steps) - 1
		}
		return c.stepLocked(ctx, step, withReason("promoted", a.Reason))
	})
}

// Pause stops a rollout from advancing; the weight stays and the analysis
// still aborts on a breach.
func (c *Controller) Pause(ctx context.Context, a RolloutAction) (RolloutView, error) {
	return c.act(a, func(*state.Rollout, string) error {
		return c.pauseLocked(ctx, withReason("paused by request", a.Reason))
	})
}

// Resume lets a paused rollout advance again; the current step's window
// starts afresh.
func (c *Controller) Resume(ctx context.Context, a RolloutAction) (RolloutView, error) {
	return c.act(a, func(r *state.Rollout, _ string) error {
		if !r.Paused {
			return nil
		}
		nr := r.Clone()
		nr.Paused, nr.PauseReason, nr.StepStartedAt = false, "", c.now().UTC()
		next := c.cur
		next.Generation++
		next.Rollout = nr
		if err := c.storeLocked(ctx, next); err != nil {
			return err
		}
		c.log.Warn("rollout resumed", "to", nr.To, "weight", nr.Weight)
		return nil
	})
}

// Abort ends a rollout: every client goes back to the active colour at
// once. The history records it with the trigger and reason.
func (c *Controller) Abort(ctx context.Context, a RolloutAction) (RolloutView, error) {
	return c.act(a, func(_ *state.Rollout, trigger string) error {
		reason := a.Reason
		if reason == "" {
			reason = "aborted by request"
		}
		return c.abortLocked(ctx, trigger, reason)
	})
}

// storeLocked stores next by compare-and-swap on the current generation
// and applies it.
func (c *Controller) storeLocked(ctx context.Context, next state.State) error {
	if err := c.store.CompareAndSwap(ctx, c.cur.Generation, next); err != nil {
		if errors.Is(err, state.ErrConflict) {
			c.log.Warn("rollout change lost a race with another writer", "err", err)
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
		c.log.Error("rollout change not stored; routing unchanged", "err", err)
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	c.applyLocked(next)
	return nil
}

// appendEvent returns hist with ev added, trimmed to the history limit.
func (c *Controller) appendEvent(hist []state.Event, ev state.Event) []state.Event {
	if len(hist) >= c.cfg.HistoryLimit {
		hist = hist[len(hist)-c.cfg.HistoryLimit+1:]
	}
	return append(slices.Clip(hist), ev)
}

// ended returns r marked as ended now with an outcome.
func (c *Controller) ended(r *state.Rollout, outcome, why string) *state.Rollout {
	e := r.Clone()
	e.Outcome, e.EndedAt, e.Ending = outcome, c.now().UTC(), why
	return e
}

func (c *Controller) abortLocked(ctx context.Context, trigger, reason string) error {
	cur := c.cur
	r := cur.Rollout
	now := c.now().UTC()
	next := cur
	next.Generation++
	next.Rollout = nil
	next.LastRollout = c.ended(r, state.OutcomeAborted, reason)
	next.History = c.appendEvent(cur.History, state.Event{
		Time: now, Action: state.ActionAbort, From: r.To, To: cur.Active,
		Trigger: trigger, Reason: reason, Generation: next.Generation,
	})
	if err := c.storeLocked(ctx, next); err != nil {
		return err
	}
	c.log.Error("rollout aborted", "to", r.To, "weight", r.Weight, "trigger", trigger, "reason", reason, "generation", next.Generation)
	return nil
}

func (c *Controller) pauseLocked(ctx context.Context, why string) error {
	r := c.cur.Rollout
	if r.Paused && r.PauseReason == why {
		return nil
	}
	nr := r.Clone()
	nr.Paused, nr.PauseReason = true, why
	next := c.cur
	next.Generation++
	next.Rollout = nr
	if err := c.storeLocked(ctx, next); err != nil {
		return err
	}
	c.log.Warn("rollout paused", "to", nr.To, "weight", nr.Weight, "reason", why)
	return nil
}

// stepLocked moves the rollout to step (an index); the last step is the
// cutover.
func (c *Controller) stepLocked(ctx context.Context, step int, why string) error {
	r := c.cur.Rollout
	if step >= len(r.Steps)-1 {
		step = len(r.Steps) - 1
	}
	if r.Steps[step] >= 100 {
		if c.health.Healthy(r.To) == 0 {
			return fmt.Errorf("%w: %s", ErrUnhealthy, r.To)
		}
		return c.completeLocked(ctx, r, why)
	}
	nr := r.Clone()
	nr.Step, nr.Weight = step, r.Steps[step]
	nr.StepStartedAt, nr.Paused, nr.PauseReason = c.now().UTC(), false, ""
	next := c.cur
	next.Generation++
	next.Rollout = nr
	if err := c.storeLocked(ctx, next); err != nil {
		return err
	}
	c.log.Warn("rollout step", "to", nr.To, "step", step+1, "weight", nr.Weight, "why", why, "generation", next.Generation)
	return nil
}

// completeLocked is the last step: a cutover to the target, recorded in
// history with the trigger rollout.
func (c *Controller) completeLocked(ctx context.Context, r *state.Rollout, why string) error {
	cur := c.cur
	now := c.now().UTC()
	next := state.State{
		Active: r.To, Previous: cur.Active, Generation: cur.Generation + 1, ChangedAt: now,
		LastRollout: c.ended(r, state.OutcomeCompleted, why),
	}
	reason := fmt.Sprintf("rollout reached 100%% (%s)", why)
	if r.Reason != "" {
		reason = r.Reason + ": " + reason
	}
	next.History = c.appendEvent(cur.History, state.Event{
		Time: now, Action: state.ActionCutover, From: cur.Active, To: r.To,
		Trigger: state.TriggerRollout, Reason: reason, Generation: next.Generation,
	})
	if err := c.storeLocked(ctx, next); err != nil {
		c.metrics.count(cur.Active, r.To, state.TriggerRollout, resultError)
		return err
	}
	c.metrics.count(cur.Active, r.To, state.TriggerRollout, resultSuccess)
	c.log.Warn("cutover", "from", cur.Active, "to", r.To, "trigger", state.TriggerRollout, "reason", reason, "generation", next.Generation)
	return nil
}

// analysis is what the data plane says about the current step.
type analysis struct {
	target, base     Window
	tReq, tErr       int64
	tP99, bP99       time.Duration
	bReq             int64
	breach           string // set: abort with this evidence
	enough           bool   // the target served MinRequests in the window
	inStep, interval time.Duration
	replicas         int    // fleet: replicas whose counts are in the sums
	stale            string // fleet: why the sums cannot pass a step
}

func window(req, errs int64, p99 time.Duration) Window {
	w := Window{Requests: req, InstanceErrors: errs, P99: p99.String(), P99Seconds: p99.Seconds()}
	if req > 0 {
		w.ErrorRatio = float64(errs) / float64(req)
	}
	return w
}

func pct(v float64) string { return strconv.FormatFloat(v*100, 'f', -1, 64) + "%" }

func (c *Controller) analyse(r *state.Rollout, now time.Time) analysis {
	var a analysis
	a.inStep, a.interval = now.Sub(r.StepStartedAt), time.Duration(r.StepInterval)
	if c.cfg.Stats == nil {
		return a
	}
	var bErr int64
	if c.cfg.Fleet != nil {
		t, b := c.ownCounts(r.To, r.StepStartedAt), c.ownCounts(r.From, r.StepStartedAt)
		a.replicas, a.stale = c.fleetCounts(r, now, &t, &b)
		a.tReq, a.tErr, a.tP99 = t.requests, t.errs, t.hist.Quantile(0.99)
		a.bReq, bErr, a.bP99 = b.requests, b.errs, b.hist.Quantile(0.99)
	} else {
		a.tReq, a.tErr, a.tP99 = c.cfg.Stats.Window(r.To, r.StepStartedAt)
		a.bReq, bErr, a.bP99 = c.cfg.Stats.Window(r.From, r.StepStartedAt)
	}
	a.target, a.base = window(a.tReq, a.tErr, a.tP99), window(a.bReq, bErr, a.bP99)
	a.enough = a.tReq >= r.MinRequests
	if !a.enough {
		return a // no verdict on too little evidence
	}
	ratio := a.target.ErrorRatio
	switch {
	case ratio > r.MaxErrorRatio:
		a.breach = fmt.Sprintf("%s 5xx %s > %s over %d requests", r.To, strconv.FormatFloat(ratio*100, 'f', 1, 64)+"%", pct(r.MaxErrorRatio), a.tReq)
	case r.MaxP99 > 0 && a.tP99 > time.Duration(r.MaxP99):
		a.breach = fmt.Sprintf("%s p99 %s > %s over %d requests", r.To, a.tP99.Round(time.Millisecond), time.Duration(r.MaxP99), a.tReq)
	case r.MaxP99Ratio > 0 && a.bReq >= r.MinRequests && a.bP99 > 0 && float64(a.tP99) > r.MaxP99Ratio*float64(a.bP99):
		a.breach = fmt.Sprintf("%s p99 %s > %s × %s p99 %s over %d requests", r.To, a.tP99.Round(time.Millisecond),
			strconv.FormatFloat(r.MaxP99Ratio, 'f', -1, 64), r.From, a.bP99.Round(time.Millisecond), a.tReq)
	}
	return a
}

// verdict says in words where the current step stands.
func (a analysis) verdict(r *state.Rollout) string {
	switch {
	case a.breach != "":
		return "breach: " + a.breach
	case r.Paused:
		return "paused: " + r.PauseReason
	case a.stale != "" && a.inStep >= a.interval:
		return "waiting for fresh fleet counts: " + a.stale
	case !a.enough:
		return fmt.Sprintf("waiting for traffic: %d of %d requests to %s", a.tReq, r.MinRequests, r.To)
	case a.inStep < a.interval:
		return fmt.Sprintf("passing so far; step ends in %s", (a.interval - a.inStep).Round(time.Millisecond))
	}
	return "passed"
}

// Analysis results counted in bluegreen_rollout_analysis_total.
const (
	analysisPass     = "pass"     // the step passed; the rollout advanced
	analysisContinue = "continue" // within the step, nothing wrong so far
	analysisHold     = "hold"     // the step ended without enough traffic
	analysisAbort    = "abort"    // a breach: aborted
	analysisPaused   = "paused"   // nothing wrong, but paused: no advance
)

// EvaluateRollout runs the analysis of the current step once: it aborts on a
// breach or when the target lost every healthy instance, advances a step
// that passed, holds a step without enough traffic and pauses the rollout
// after MaxHeld held intervals. Only the leader evaluates. Run calls it
// every AnalysisEvery; tests may call it directly.
func (c *Controller) EvaluateRollout(ctx context.Context) {
	if !c.leads() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.cur.Rollout
	if r == nil {
		return
	}
	if healthy, probed := c.inspect(r.To); healthy == 0 && probed {
		c.metrics.analysed(analysisAbort)
		if err := c.abortLocked(ctx, state.TriggerSLOAbort, r.To+" has no healthy instance"); err != nil {
			c.log.Error("rollout abort failed", "err", err)
		}
		return
	}
	now := c.now()
	a := c.analyse(r, now)
	switch {
	case a.breach != "":
		c.metrics.analysed(analysisAbort)
		if err := c.abortLocked(ctx, state.TriggerSLOAbort, a.breach); err != nil {
			c.log.Error("rollout abort failed", "err", err)
		}
	case r.Paused:
		c.metrics.analysed(analysisPaused)
	case a.inStep < a.interval:
		c.metrics.analysed(analysisContinue)
	case a.stale != "":
		// Counts too old to judge the step on: it neither passes nor
		// counts as held until they are read again.
		c.metrics.analysed(analysisContinue)
		c.log.Debug("rollout step not judged: fleet counts are stale", "to", r.To, "weight", r.Weight, "why", a.stale)
	case !a.enough:
		c.metrics.analysed(analysisHold)
		held := int(a.inStep / a.interval)
		c.log.Info("rollout step held: not enough traffic", "to", r.To, "weight", r.Weight, "requests", a.tReq, "min_requests", r.MinRequests, "held_intervals", held)
		if held >= r.MaxHeld {
			why := fmt.Sprintf("step %d (%d%%) held %d intervals of %s with %d of %d requests to %s", r.Step+1, r.Weight, held, a.interval, a.tReq, r.MinRequests, r.To)
			if err := c.pauseLocked(ctx, why); err != nil {
				c.log.Error("rollout pause failed", "err", err)
			}
		}
	default:
		c.metrics.analysed(analysisPass)
		why := fmt.Sprintf("step %d (%d%%) passed: %d requests, %s errors, p99 %s", r.Step+1, r.Weight, a.tReq, pct(a.target.ErrorRatio), a.tP99.Round(time.Millisecond))
		if err := c.stepLocked(ctx, r.Step+1, why); err != nil {
			c.log.Error("rollout advance failed", "err", err)
		}
	}
}

// RolloutStatus describes the rollout in progress, or the last one.
func (c *Controller) RolloutStatus() RolloutView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewLocked()
}

func (c *Controller) viewLocked() RolloutView {
	cur := c.cur
	v := RolloutView{Phase: PhaseNone, Active: cur.Active, Generation: cur.Generation, Rollout: cur.Rollout.Clone(), Last: cur.LastRollout.Clone(), Leader: c.leads()}
	r := cur.Rollout
	if r == nil {
		if l := cur.LastRollout; l != nil {
			v.Phase = l.Outcome
		}
		return v
	}
	v.Phase = PhaseRunning
	if r.Paused {
		v.Phase = PhasePaused
	}
	now := c.now()
	a := c.analyse(r, now)
	v.StepNumber, v.Weight = r.Step+1, r.Weight
	v.TimeInStep = a.inStep.Round(time.Millisecond).String()
	v.Colors = map[string]Window{r.To: a.target, r.From: a.base}
	v.Verdict = a.verdict(r)
	v.Replicas, v.FleetStale = a.replicas, a.stale
	v.Held = c.held
	return v
}

// weightOf is the share of clients on the idle colour in st.
func weightOf(st state.State) int {
	if st.Rollout == nil {
		return 0
	}
	return st.Rollout.Weight
}

// endRollout is what a cutover or rollback does to a rollout in progress:
// it ends it as superseded.
func (c *Controller) endRollout(cur state.State, action, to, trigger string) *state.Rollout {
	if cur.Rollout == nil {
		return cur.LastRollout
	}
	return c.ended(cur.Rollout, state.OutcomeSuperseded, strings.Join([]string{action, "to", to, "by", trigger}, " "))
}
