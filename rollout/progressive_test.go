package rollout_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeStats is a settable per-colour window.
type fakeStats struct {
	mu sync.Mutex
	w  map[string][3]int64 // requests, instance errors, p99 in ns
}

func (s *fakeStats) Set(color string, requests, errs int64, p99 time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		s.w = map[string][3]int64{}
	}
	s.w[color] = [3]int64{requests, errs, int64(p99)}
}

func (s *fakeStats) Window(color string, since time.Time) (int64, int64, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.w[color]
	return w[0], w[1], time.Duration(w[2])
}

// weighted records SetActiveWeighted calls.
type weighted struct {
	mu    sync.Mutex
	calls []string // "color@gen/weight"
	last  int
}

func (r *weighted) SetActive(color string, gen uint64) error {
	return r.SetActiveWeighted(color, gen, 0)
}

func (r *weighted) SetActiveWeighted(color string, gen uint64, weight int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, color+"/"+strconv.Itoa(weight))
	r.last = weight
	return nil
}

// Last is the weight of the last call.
func (r *weighted) Last() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func (r *weighted) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type renv struct {
	ctl    *rollout.Controller
	stats  *fakeStats
	router *weighted
	health *fakeHealth
	clock  *fakeClock
	reg    *prometheus.Registry
	path   string
	leader *leaderFlag
}

type leaderFlag struct {
	mu sync.Mutex
	v  bool
}

func (l *leaderFlag) IsLeader() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.v }
func (l *leaderFlag) Set(v bool)     { l.mu.Lock(); defer l.mu.Unlock(); l.v = v }

// newRenv starts a controller with a weighing router and settable stats
// on the state file at path (blue active when the file is new).
func newRenv(t *testing.T, path string) *renv {
	t.Helper()
	file, err := state.NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = file.Close() })
	e := &renv{stats: &fakeStats{}, router: &weighted{}, health: newFakeHealth(), clock: &fakeClock{now: t0}, reg: prometheus.NewRegistry(), path: path, leader: &leaderFlag{v: true}}
	m, err := rollout.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Stats, cfg.Leadership = e.stats, e.leader
	e.ctl, err = rollout.New(cfg, file, e.router, e.health, m, testLogger(t), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *renv) start(t *testing.T, req rollout.RolloutRequest) rollout.RolloutView {
	t.Helper()
	v, err := e.ctl.StartRollout(t.Context(), req)
	if err != nil {
		t.Fatalf("StartRollout: %v", err)
	}
	return v
}

func (e *renv) eval(t *testing.T) rollout.RolloutView {
	t.Helper()
	e.ctl.EvaluateRollout(t.Context())
	return e.ctl.RolloutStatus()
}

func stdRequest() rollout.RolloutRequest {
	return rollout.RolloutRequest{To: green, Steps: []int{1, 5, 25, 50, 100}, StepInterval: time.Minute, MinRequests: 100, MaxErrorRatio: 0.01, MaxP99: 500 * time.Millisecond, MaxP99Ratio: 1.5}
}

func TestRolloutStepsToCutover(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	v := e.start(t, stdRequest())
	if v.Phase != rollout.PhaseRunning || v.Weight != 1 || v.StepNumber != 1 || v.Generation != 2 {
		t.Fatalf("after start: %+v", v)
	}
	assertMetric(t, e.reg, 1, "bluegreen_rollout_weight", "color", green)
	assertMetric(t, e.reg, 99, "bluegreen_rollout_weight", "color", blue)
	e.stats.Set(green, 500, 1, 40*time.Millisecond)
	e.stats.Set(blue, 5000, 3, 35*time.Millisecond)
	// Within the interval the step holds its weight whatever the counts.
	e.clock.Advance(30 * time.Second)
	if v := e.eval(t); v.Weight != 1 || !strings.HasPrefix(v.Verdict, "passing so far") {
		t.Fatalf("mid-step: weight %d verdict %q", v.Weight, v.Verdict)
	}
	for _, want := range []int{5, 25, 50} {
		e.clock.Advance(time.Minute)
		if v := e.eval(t); v.Weight != want {
			t.Fatalf("weight %d, want %d (%+v)", v.Weight, want, v)
		}
	}
	e.clock.Advance(time.Minute)
	v = e.eval(t)
	st := e.ctl.State()
	if v.Phase != state.OutcomeCompleted || st.Active != green || st.Previous != blue || st.Rollout != nil {
		t.Fatalf("after the last step: phase %q, state %+v", v.Phase, st)
	}
	last := st.History[len(st.History)-1]
	if last.Action != state.ActionCutover || last.Trigger != state.TriggerRollout || last.To != green || last.Generation != st.Generation {
		t.Fatalf("last event %+v", last)
	}
	if got, want := e.router.Calls(), []string{"blue/0", "blue/1", "blue/5", "blue/25", "blue/50", "green/0"}; !slices.Equal(got, want) {
		t.Fatalf("routing %v, want %v", got, want)
	}
	assertMetric(t, e.reg, 4, "bluegreen_rollout_analysis_total", "result", "pass")
	assertMetric(t, e.reg, 0, "bluegreen_rollout_step")
	assertMetric(t, e.reg, 100, "bluegreen_rollout_weight", "color", green)
	assertMetric(t, e.reg, 1, "bluegreen_cutovers_total", "from", blue, "to", green, "trigger", "rollout", "result", "success")
}

func TestRolloutStartRefused(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	for name, tc := range map[string]struct {
		req  rollout.RolloutRequest
		want error
	}{
		"unknown colour":    {rollout.RolloutRequest{To: "red"}, rollout.ErrInvalid},
		"already active":    {rollout.RolloutRequest{To: blue}, rollout.ErrInvalid},
		"steps not rising":  {rollout.RolloutRequest{To: green, Steps: []int{5, 5, 100}}, rollout.ErrInvalid},
		"last step not 100": {rollout.RolloutRequest{To: green, Steps: []int{1, 50}}, rollout.ErrInvalid},
		"ratio above 1":     {rollout.RolloutRequest{To: green, MaxErrorRatio: 2}, rollout.ErrInvalid},
		"bad trigger":       {rollout.RolloutRequest{To: green, Trigger: "slo-abort"}, rollout.ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := e.ctl.StartRollout(t.Context(), tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	e.health.Set(green, 0)
	if _, err := e.ctl.StartRollout(t.Context(), rollout.RolloutRequest{To: green}); !errors.Is(err, rollout.ErrUnhealthy) {
		t.Fatalf("unhealthy target: err = %v", err)
	}
	e.health.Set(green, 2)
	e.start(t, rollout.RolloutRequest{To: green})
	if _, err := e.ctl.StartRollout(t.Context(), rollout.RolloutRequest{To: green}); !errors.Is(err, rollout.ErrRolloutRunning) {
		t.Fatalf("second rollout: err = %v", err)
	}
	e2 := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	for name, f := range map[string]func(context.Context, rollout.RolloutAction) (rollout.RolloutView, error){
		"promote": e2.ctl.Promote, "pause": e2.ctl.Pause, "resume": e2.ctl.Resume, "abort": e2.ctl.Abort,
	} {
		if _, err := f(t.Context(), rollout.RolloutAction{}); !errors.Is(err, rollout.ErrNoRollout) {
			t.Errorf("%s without a rollout: err = %v", name, err)
		}
	}
}

func TestRolloutAbortOnErrors(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	e.start(t, stdRequest())
	// Not enough evidence yet: no verdict either way.
	e.stats.Set(green, 40, 2, 10*time.Millisecond)
	e.clock.Advance(10 * time.Second)
	if v := e.eval(t); v.Phase != rollout.PhaseRunning {
		t.Fatalf("aborted on 40 requests: %+v", v)
	}
	e.stats.Set(green, 812, 34, 10*time.Millisecond)
	e.clock.Advance(10 * time.Second)
	v := e.eval(t)
	st := e.ctl.State()
	if v.Phase != state.OutcomeAborted || st.Rollout != nil || st.Active != blue || e.router.last != 0 {
		t.Fatalf("not aborted: %+v", v)
	}
	last := st.History[len(st.History)-1]
	if last.Action != state.ActionAbort || last.Trigger != state.TriggerSLOAbort || last.Reason != "green 5xx 4.2% > 1% over 812 requests" {
		t.Fatalf("last event %+v", last)
	}
	assertMetric(t, e.reg, 1, "bluegreen_rollout_analysis_total", "result", "abort")
	assertMetric(t, e.reg, 0, "bluegreen_rollout_weight", "color", green)
}

func TestRolloutAbortOnP99(t *testing.T) {
	for name, tc := range map[string]struct {
		green, blue time.Duration
		want        string
	}{
		"ratio":    {300 * time.Millisecond, 100 * time.Millisecond, "green p99 300ms > 1.5 × blue p99 100ms over 200 requests"},
		"absolute": {600 * time.Millisecond, 550 * time.Millisecond, "green p99 600ms > 500ms over 200 requests"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
			e.start(t, stdRequest())
			e.stats.Set(green, 200, 0, tc.green)
			e.stats.Set(blue, 20000, 0, tc.blue)
			e.clock.Advance(10 * time.Second)
			e.eval(t)
			st := e.ctl.State()
			if st.Rollout != nil || st.LastRollout.Ending != tc.want {
				t.Fatalf("rollout %+v, last %+v; want ending %q", st.Rollout, st.LastRollout, tc.want)
			}
		})
	}
}

func TestRolloutNoTrafficHoldsThenPauses(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	req := stdRequest()
	req.MaxHeld = 2
	e.start(t, req)
	e.stats.Set(green, 3, 0, time.Millisecond)
	for range 20 {
		e.clock.Advance(30 * time.Second)
		e.eval(t)
	}
	v := e.ctl.RolloutStatus()
	if v.Phase != rollout.PhasePaused || v.Weight != 1 || e.ctl.State().Active != blue {
		t.Fatalf("after 10 minutes without traffic: %+v", v)
	}
	if want := "step 1 (1%) held 2 intervals of 1m0s with 3 of 100 requests to green"; v.Rollout.PauseReason != want {
		t.Fatalf("pause reason %q, want %q", v.Rollout.PauseReason, want)
	}
	assertMetric(t, e.reg, 3, "bluegreen_rollout_analysis_total", "result", "hold") // evaluations at 1m, 1m30s, 2m
	// Resume starts a fresh window; with traffic it advances.
	if _, err := e.ctl.Resume(t.Context(), rollout.RolloutAction{}); err != nil {
		t.Fatal(err)
	}
	e.stats.Set(green, 300, 0, time.Millisecond)
	e.clock.Advance(time.Minute)
	if v := e.eval(t); v.Weight != 5 || v.Phase != rollout.PhaseRunning {
		t.Fatalf("after resume: %+v", v)
	}
}

func TestRolloutRestartResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	e := newRenv(t, path)
	e.start(t, stdRequest())
	if _, err := e.ctl.Promote(t.Context(), rollout.RolloutAction{}); err != nil {
		t.Fatal(err)
	}
	e2 := newRenv(t, path)
	v := e2.ctl.RolloutStatus()
	if v.Phase != rollout.PhaseRunning || v.Weight != 5 || v.StepNumber != 2 {
		t.Fatalf("after restart: %+v", v)
	}
	if got := e2.router.Calls(); !slices.Equal(got, []string{"blue/5"}) {
		t.Fatalf("restarted routing %v", got)
	}
	assertMetric(t, e2.reg, 2, "bluegreen_rollout_step")
}

func TestCutoverDuringRolloutEndsIt(t *testing.T) {
	for _, to := range []string{green, ""} {
		e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
		e.start(t, stdRequest())
		res, err := e.ctl.Cutover(t.Context(), rollout.Request{To: to, Reason: "ship it"})
		if err != nil || !res.Changed {
			t.Fatalf("cutover: %v", err)
		}
		st := e.ctl.State()
		if st.Rollout != nil || st.LastRollout.Outcome != state.OutcomeSuperseded || st.Active != green || e.router.last != 0 {
			t.Fatalf("state %+v last %+v", st, st.LastRollout)
		}
		if !strings.Contains(st.LastRollout.Ending, "cutover to green by api") {
			t.Fatalf("ending %q", st.LastRollout.Ending)
		}
		// The next rollout goes the other way.
		e.start(t, rollout.RolloutRequest{To: blue})
		if _, err := e.ctl.Rollback(t.Context(), rollout.Request{}); err != nil {
			t.Fatal(err)
		}
		if st := e.ctl.State(); st.Rollout != nil || st.Active != blue || st.LastRollout.To != blue {
			t.Fatalf("rollback did not end it: %+v", st)
		}
	}
}

func TestRolloutActions(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	e.start(t, stdRequest())
	if v, _ := e.ctl.Pause(t.Context(), rollout.RolloutAction{Reason: "lunch"}); v.Phase != rollout.PhasePaused || v.Rollout.PauseReason != "paused by request: lunch" {
		t.Fatalf("pause: %+v", v)
	}
	// Paused: a passing step does not advance; a breach still aborts.
	e.stats.Set(green, 500, 0, time.Millisecond)
	e.clock.Advance(2 * time.Minute)
	if v := e.eval(t); v.Weight != 1 {
		t.Fatalf("paused rollout advanced: %+v", v)
	}
	if v, err := e.ctl.Promote(t.Context(), rollout.RolloutAction{}); err != nil || v.Weight != 5 || v.Phase != rollout.PhaseRunning {
		t.Fatalf("promote: %+v %v", v, err)
	}
	if v, err := e.ctl.Abort(t.Context(), rollout.RolloutAction{Reason: "wrong build", Trigger: state.TriggerCLI}); err != nil || v.Phase != state.OutcomeAborted {
		t.Fatalf("abort: %+v %v", v, err)
	}
	last := e.ctl.State().History[len(e.ctl.State().History)-1]
	if last.Action != state.ActionAbort || last.Trigger != state.TriggerCLI || last.Reason != "wrong build" {
		t.Fatalf("abort event %+v", last)
	}
	e.start(t, stdRequest())
	if v, err := e.ctl.Promote(t.Context(), rollout.RolloutAction{Full: true}); err != nil || v.Phase != state.OutcomeCompleted || v.Active != green {
		t.Fatalf("full promote: %+v %v", v, err)
	}
}

func TestRolloutOnlyLeaderEvaluates(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	e.start(t, stdRequest())
	e.leader.Set(false)
	e.stats.Set(green, 1000, 500, time.Millisecond)
	e.clock.Advance(time.Minute)
	if v := e.eval(t); v.Phase != rollout.PhaseRunning {
		t.Fatalf("a follower acted: %+v", v)
	}
	e.leader.Set(true)
	if v := e.eval(t); v.Phase != state.OutcomeAborted {
		t.Fatalf("the leader did not abort: %+v", v)
	}
}

func TestRolloutTargetUnhealthyAborts(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	e.start(t, stdRequest())
	e.health.Set(green, 0)
	if v := e.eval(t); v.Phase != state.OutcomeAborted || v.Last.Ending != "green has no healthy instance" {
		t.Fatalf("%+v", v)
	}
}

// The cutover at the end of a rollout is watched by auto-rollback as any
// cutover.
func TestAutoRollbackAfterRolloutCompletes(t *testing.T) {
	e := newRenv(t, filepath.Join(t.TempDir(), "state.json"))
	e.start(t, stdRequest())
	if v, err := e.ctl.Promote(t.Context(), rollout.RolloutAction{Full: true}); err != nil || v.Active != green {
		t.Fatalf("full promote: %+v %v", v, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); e.ctl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.health.Set(green, 0)
	e.ctl.HealthChanged()
	waitFor(t, "auto-rollback", func() bool { return e.ctl.State().Active == blue })
	last := e.ctl.State().History[len(e.ctl.State().History)-1]
	if last.Action != state.ActionRollback || last.Trigger != state.TriggerAutoRollback {
		t.Fatalf("last event %+v", last)
	}
}
