package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNewRejectsBadConfig(t *testing.T) {
	store, err := state.NewFileStore(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	type args struct {
		cfg    rollout.Config
		store  state.Store
		router rollout.Router
		hv     rollout.HealthView
		log    *slog.Logger
	}
	tests := []struct {
		name   string
		mutate func(*args)
	}{
		{"same colour twice", func(a *args) { a.cfg.Colors = [2]string{blue, blue} }},
		{"first colour empty", func(a *args) { a.cfg.Colors = [2]string{"", green}; a.cfg.InitialColor = green }},
		{"second colour empty", func(a *args) { a.cfg.Colors = [2]string{blue, ""} }},
		{"initial colour unknown", func(a *args) { a.cfg.InitialColor = "red" }},
		{"initial colour empty", func(a *args) { a.cfg.InitialColor = "" }},
		{"no store", func(a *args) { a.store = nil }},
		{"no router", func(a *args) { a.router = nil }},
		{"no health view", func(a *args) { a.hv = nil }},
		{"no logger", func(a *args) { a.log = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := args{cfg: testConfig(), store: store, router: &fakeRouter{}, hv: newFakeHealth(), log: testLogger(t)}
			tt.mutate(&a)
			c, err := rollout.New(a.cfg, a.store, a.router, a.hv, nil, a.log, nil)
			if err == nil || c != nil {
				t.Fatalf("New = %v, %v; want an error", c, err)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	// No metrics, no clock: the wall clock is used and nothing is recorded.
	path := filepath.Join(t.TempDir(), "state.json")
	store, err := state.NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	router := &fakeRouter{}
	c, err := rollout.New(testConfig(), store, router, newFakeHealth(), nil, testLogger(t), nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	before := time.Now()
	if err := c.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	after := time.Now()
	if at := c.State().ChangedAt; at.Before(before.Add(-time.Second)) || at.After(after.Add(time.Second)) {
		t.Errorf("ChangedAt = %v, want the wall clock (between %v and %v)", at, before, after)
	}
	if _, err := c.Cutover(t.Context(), rollout.Request{}); err != nil {
		t.Fatalf("Cutover without metrics: %v", err)
	}
	if _, err := c.Rollback(t.Context(), rollout.Request{}); err != nil {
		t.Fatalf("Rollback without metrics: %v", err)
	}
	if _, err := c.Cutover(t.Context(), rollout.Request{To: "red"}); !errors.Is(err, rollout.ErrInvalid) {
		t.Fatalf("Cutover to red without metrics = %v, want ErrInvalid", err)
	}
	if got := c.State(); got.Active != blue || got.Generation != 3 {
		t.Errorf("state = %s at %d, want blue at 3", got.Active, got.Generation)
	}
}

func TestNewMetricsRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := rollout.NewMetrics(reg); err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	if _, err := rollout.NewMetrics(reg); err == nil {
		t.Fatal("second NewMetrics on the same registry succeeded, want a duplicate registration error")
	}
}

func TestInitEmptyStore(t *testing.T) {
	for _, initial := range colors {
		t.Run(initial, func(t *testing.T) {
			cfg := testConfig()
			cfg.InitialColor = initial
			e := newEnv(t, cfg)
			if err := e.ctl.Init(t.Context()); err != nil {
				t.Fatalf("Init: %v", err)
			}
			want := state.State{Active: initial, Generation: 1, ChangedAt: t0}
			if got := e.ctl.State(); !equalState(got, want) {
				t.Errorf("State() = %+v, want %+v", got, want)
			}
			if got := e.stored(t); !equalState(got, want) {
				t.Errorf("stored state = %+v, want %+v", got, want)
			}
			e.assertRoutes(t, route{initial, 1})
		})
	}
}

func TestInitAppliesStoredState(t *testing.T) {
	e := newEnv(t, testConfig()) // initial colour blue
	stored := state.State{
		Active: green, Previous: blue, Generation: 7, ChangedAt: t0.Add(-time.Hour),
		History: []state.Event{{Time: t0.Add(-time.Hour), Action: state.ActionCutover, From: blue, To: green, Trigger: state.TriggerCLI, Reason: "release 42", Generation: 7}},
	}
	writeState(t, e.path, stored)
	before := e.fileBytes(t)

	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if got := e.ctl.State(); !equalState(got, stored) {
		t.Errorf("State() = %+v, want the stored %+v", got, stored)
	}
	e.assertRoutes(t, route{green, 7})
	e.assertFile(t, before)
	if n := e.store.CASCalls(); n != 0 {
		t.Errorf("Init wrote the store %d times, want 0", n)
	}
}

func TestInitSurvivesRestart(t *testing.T) {
	first := startedEnv(t, testConfig())
	want := first.cutover(t, rollout.Request{Reason: "release 2"})

	// A new process on the same file, configured with the same initial
	// colour, must come back on green, not on blue.
	second := newEnvAt(t, testConfig(), first.path)
	if err := second.ctl.Init(t.Context()); err != nil {
		t.Fatalf("Init after restart: %v", err)
	}
	got := second.ctl.State()
	if !equalState(got, want) {
		t.Errorf("state after restart = %+v, want %+v", got, want)
	}
	second.assertRoutes(t, route{green, 2})
	if len(got.History) != 1 || got.History[0].Reason != "release 2" {
		t.Errorf("history after restart = %+v, want the one cutover", got.History)
	}

	// And it carries on from there.
	st := second.rollback(t, rollout.Request{})
	if st.Active != blue || st.Generation != 3 || len(st.History) != 2 {
		t.Errorf("rollback after restart = %+v, want blue at 3 with 2 events", st)
	}
}

func TestInitRejectsBadStoredState(t *testing.T) {
	valid := state.State{Active: green, Generation: 3, ChangedAt: t0}
	encode := func(st state.State) []byte {
		data, err := state.Encode(st)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		return data
	}
	tests := []struct {
		name     string
		data     []byte
		wantPath bool     // the error names the state file
		want     []string // substrings of the error
	}{
		{name: "garbage", data: []byte("this is not JSON{"), wantPath: true, want: []string{"corrupt"}},
		{name: "truncated", data: encode(valid)[:20], wantPath: true, want: []string{"corrupt"}},
		{name: "empty file", data: []byte{}, wantPath: true},
		{name: "unknown format", data: []byte(`{"format":99,"active":"green","generation":3,"changed_at":"2025-01-01T00:00:00Z","history":[]}`), wantPath: true, want: []string{"format"}},
		{name: "unknown active colour", data: encode(state.State{Active: "red", Generation: 3, ChangedAt: t0}), want: []string{`"red"`}},
		{name: "unknown previous colour", data: encode(state.State{Active: green, Previous: "red", Generation: 3, ChangedAt: t0}), want: []string{`"red"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testConfig())
			if err := os.WriteFile(e.path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			err := e.ctl.Init(t.Context())
			if err == nil {
				t.Fatal("Init succeeded, want an error")
			}
			if errors.Is(err, state.ErrNotFound) {
				t.Errorf("Init error %v wraps ErrNotFound: a bad file must not pass for an empty store", err)
			}
			if tt.wantPath && !strings.Contains(err.Error(), e.path) {
				t.Errorf("Init error %q does not name the state file %s", err, e.path)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Init error %q does not mention %q", err, s)
				}
			}
			e.assertRoutes(t)
			e.assertFile(t, tt.data)
			if got := e.ctl.State(); got.Generation != 0 || got.Active != "" {
				t.Errorf("State() after a failed Init = %+v, want the zero state", got)
			}
			assertMetric(t, e.reg, 0, "bluegreen_state_generation")
			if _, ok := metric(t, e.reg, "bluegreen_active_color", "color", blue); ok {
				t.Error("active_color reported after a failed Init")
			}
		})
	}
}

func TestInitLosesInitialisationRace(t *testing.T) {
	// Another replica initialises the store between our Load and our
	// compare-and-swap: we must use its state, not ours.
	e := newEnv(t, testConfig()) // initial colour blue
	theirs := state.State{Active: green, Generation: 1, ChangedAt: t0.Add(-time.Minute)}
	e.store.beforeCAS = func() { writeState(t, e.path, theirs) }

	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if got := e.ctl.State(); !equalState(got, theirs) {
		t.Errorf("State() = %+v, want the other replica's %+v", got, theirs)
	}
	e.assertRoutes(t, route{green, 1})
}

func TestInitStoreFailure(t *testing.T) {
	e := newEnv(t, testConfig())
	disk := errors.New("disk full")
	e.store.failCAS(disk)
	err := e.ctl.Init(t.Context())
	if !errors.Is(err, disk) {
		t.Fatalf("Init = %v, want the store error", err)
	}
	e.assertRoutes(t)
	e.assertFile(t, nil)
}

func TestInitRouterFailure(t *testing.T) {
	e := newEnv(t, testConfig())
	e.router.err = errors.New("no such pool")
	if err := e.ctl.Init(t.Context()); err == nil || !strings.Contains(err.Error(), "no such pool") {
		t.Fatalf("Init = %v, want the router's error", err)
	}
	if got := e.ctl.State(); got.Generation != 0 {
		t.Errorf("State() = %+v after a failed apply, want the zero state", got)
	}
}

func TestCutoverFlipsToTheOtherColour(t *testing.T) {
	e := startedEnv(t, testConfig())
	steps := []struct{ from, to string }{{blue, green}, {green, blue}, {blue, green}}
	for i, s := range steps {
		gen := uint64(i + 2)
		e.clock.Advance(time.Minute)
		res, err := e.ctl.Cutover(t.Context(), rollout.Request{})
		if err != nil {
			t.Fatalf("cutover %d: %v", i, err)
		}
		want := state.State{Active: s.to, Previous: s.from, Generation: gen, ChangedAt: e.clock.Now(), History: res.State.History}
		if !res.Changed || !equalState(res.State, want) {
			t.Errorf("cutover %d = %+v, want changed %+v", i, res, want)
		}
		if got := e.ctl.State(); !equalState(got, res.State) {
			t.Errorf("State() = %+v, want the result %+v", got, res.State)
		}
		if got := e.stored(t); !equalState(got, res.State) {
			t.Errorf("stored = %+v, want the result %+v", got, res.State)
		}
		last := res.State.History[len(res.State.History)-1]
		wantEv := state.Event{Time: e.clock.Now(), Action: state.ActionCutover, From: s.from, To: s.to, Trigger: state.TriggerAPI, Generation: gen}
		if !equalEvent(last, wantEv) {
			t.Errorf("cutover %d event = %+v, want %+v", i, last, wantEv)
		}
		if len(res.State.History) != i+1 {
			t.Errorf("cutover %d: %d events, want %d", i, len(res.State.History), i+1)
		}
	}
	e.assertRoutes(t, route{blue, 1}, route{green, 2}, route{blue, 3}, route{green, 4})
}

func TestCutoverExplicitTarget(t *testing.T) {
	e := startedEnv(t, testConfig())
	st := e.cutover(t, rollout.Request{To: green})
	if st.Active != green || st.Previous != blue || st.Generation != 2 {
		t.Errorf("Cutover to green = %+v", st)
	}
}

func TestCutoverToActiveIsNoop(t *testing.T) {
	e := startedEnv(t, testConfig())
	before := e.fileBytes(t)
	for _, req := range []rollout.Request{
		{To: blue},
		{To: blue, Force: true},
		{To: blue, Generation: new(uint64(1))},
	} {
		res, err := e.ctl.Cutover(t.Context(), req)
		if err != nil {
			t.Fatalf("Cutover(%+v): %v", req, err)
		}
		if res.Changed || res.State.Generation != 1 || res.State.Active != blue {
			t.Errorf("Cutover(%+v) = %+v, want unchanged blue at 1", req, res)
		}
	}
	e.assertRoutes(t, route{blue, 1})
	e.assertFile(t, before)
	if got := cutovers(t, e.reg, blue, blue, "api", "noop"); got != 3 {
		t.Errorf(`cutovers_total{blue,blue,api,noop} = %v, want 3`, got)
	}
	if got := cutovers(t, e.reg, blue, blue, "api", "success"); got != 0 {
		t.Errorf(`cutovers_total{blue,blue,api,success} = %v, want 0`, got)
	}
}

func TestSwitchRejectsInvalidRequests(t *testing.T) {
	type call func(context.Context, *rollout.Controller, rollout.Request) (rollout.Result, error)
	cutover := func(ctx context.Context, c *rollout.Controller, r rollout.Request) (rollout.Result, error) {
		return c.Cutover(ctx, r)
	}
	rollback := func(ctx context.Context, c *rollout.Controller, r rollout.Request) (rollout.Result, error) {
		return c.Rollback(ctx, r)
	}
	tests := []struct {
		name     string
		call     call
		req      rollout.Request
		previous bool // cut over once first, so a rollback has somewhere to go
	}{
		{name: "cutover to unknown colour", call: cutover, req: rollout.Request{To: "red"}},
		{name: "cutover colour is case sensitive", call: cutover, req: rollout.Request{To: "Green"}},
		{name: "cutover forced to unknown colour", call: cutover, req: rollout.Request{To: "red", Force: true}},
		{name: "cutover unknown trigger", call: cutover, req: rollout.Request{Trigger: "web"}},
		{name: "cutover trigger is case sensitive", call: cutover, req: rollout.Request{Trigger: "API"}},
		{name: "cutover auto-rollback trigger is reserved", call: cutover, req: rollout.Request{Trigger: state.TriggerAutoRollback}},
		{name: "rollback to unknown colour", call: rollback, req: rollout.Request{To: "red"}},
		{name: "rollback unknown trigger", call: rollback, req: rollout.Request{Trigger: "web"}, previous: true},
		{name: "rollback unknown trigger without previous", call: rollback, req: rollout.Request{Trigger: "web"}},
		{name: "rollback auto-rollback trigger is reserved", call: rollback, req: rollout.Request{Trigger: state.TriggerAutoRollback}, previous: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startedEnv(t, testConfig())
			if tt.previous {
				e.cutover(t, rollout.Request{})
			}
			before, routes, series := e.ctl.State(), e.router.Calls(), cutoverSeries(t, e.reg)
			file := e.fileBytes(t)

			res, err := tt.call(t.Context(), e.ctl, tt.req)
			if !errors.Is(err, rollout.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if res.Changed || !equalState(res.State, before) {
				t.Errorf("result = %+v, want unchanged %+v", res, before)
			}
			if got := e.ctl.State(); !equalState(got, before) {
				t.Errorf("State() = %+v, want unchanged %+v", got, before)
			}
			e.assertRoutes(t, routes...)
			e.assertFile(t, file)
			// An invalid value never becomes a label.
			if got := cutoverSeries(t, e.reg); got != series {
				t.Errorf("cutovers_total has %d series after an invalid request, want %d", got, series)
			}
		})
	}
}

func TestCutoverTriggers(t *testing.T) {
	tests := []struct {
		trigger, want string
	}{
		{"", state.TriggerAPI},
		{state.TriggerAPI, state.TriggerAPI},
		{state.TriggerCLI, state.TriggerCLI},
	}
	for _, tt := range tests {
		t.Run("trigger="+tt.trigger, func(t *testing.T) {
			e := startedEnv(t, testConfig())
			e.clock.Advance(90 * time.Second)
			st := e.cutover(t, rollout.Request{Reason: "release v1.2.3 (ticket 7)", Trigger: tt.trigger})
			want := state.Event{
				Time: t0.Add(90 * time.Second), Action: state.ActionCutover, From: blue, To: green,
				Trigger: tt.want, Reason: "release v1.2.3 (ticket 7)", Generation: 2,
			}
			if len(st.History) != 1 || !equalEvent(st.History[0], want) {
				t.Fatalf("history = %+v, want [%+v]", st.History, want)
			}
			if got := e.stored(t).History; len(got) != 1 || !equalEvent(got[0], want) {
				t.Errorf("stored history = %+v, want [%+v]", got, want)
			}
			if got := cutovers(t, e.reg, blue, green, tt.want, "success"); got != 1 {
				t.Errorf("cutovers_total{blue,green,%s,success} = %v, want 1", tt.want, got)
			}
		})
	}
}

func TestCutoverUnhealthyTarget(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.health.Set(green, 0)
	before, file := e.ctl.State(), e.fileBytes(t)

	res, err := e.ctl.Cutover(t.Context(), rollout.Request{})
	if !errors.Is(err, rollout.ErrUnhealthy) {
		t.Fatalf("Cutover to an unhealthy colour = %v, want ErrUnhealthy", err)
	}
	if !strings.Contains(err.Error(), green) {
		t.Errorf("error %q does not name the colour", err)
	}
	if res.Changed || !equalState(res.State, before) {
		t.Errorf("result = %+v, want unchanged", res)
	}
	if got := e.ctl.State(); !equalState(got, before) {
		t.Errorf("State() = %+v, want unchanged %+v", got, before)
	}
	e.assertRoutes(t, route{blue, 1})
	e.assertFile(t, file)
	if got := cutovers(t, e.reg, blue, green, "api", "rejected"); got != 1 {
		t.Errorf("cutovers_total{blue,green,api,rejected} = %v, want 1", got)
	}

	// One healthy instance is enough.
	e.health.Set(green, 1)
	e.cutover(t, rollout.Request{})
}

func TestCutoverForce(t *testing.T) {
	tests := []struct {
		name         string
		greenHealthy int
	}{
		{"unhealthy target", 0},
		{"healthy target", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startedEnv(t, testConfig())
			e.health.Set(green, tt.greenHealthy)
			st := e.cutover(t, rollout.Request{Force: true, Reason: "hotfix"})
			if st.Active != green || st.Generation != 2 {
				t.Errorf("forced cutover = %+v, want green at 2", st)
			}
			last := st.History[len(st.History)-1]
			if !last.Forced || last.Reason != "hotfix" || last.Action != state.ActionCutover {
				t.Errorf("event = %+v, want a forced cutover with its reason", last)
			}
			if !e.stored(t).History[0].Forced {
				t.Error("forced flag not stored")
			}
			e.assertRoutes(t, route{blue, 1}, route{green, 2})

			// An unforced switch records forced=false.
			st = e.cutover(t, rollout.Request{})
			if st.History[len(st.History)-1].Forced {
				t.Error("unforced cutover recorded as forced")
			}
		})
	}
}

func TestCutoverGenerationExpectation(t *testing.T) {
	tests := []struct {
		name    string
		expect  uint64
		wantErr error
	}{
		{"current generation", 2, nil},
		{"stale generation", 1, rollout.ErrConflict},
		{"future generation", 3, rollout.ErrConflict},
		{"zero generation", 0, rollout.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startedEnv(t, testConfig())
			e.cutover(t, rollout.Request{}) // green at 2
			before, file := e.ctl.State(), e.fileBytes(t)

			res, err := e.ctl.Cutover(t.Context(), rollout.Request{Generation: new(tt.expect)})
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("Cutover(generation %d) = %v, want %v", tt.expect, err, tt.wantErr)
			}
			if tt.wantErr == nil {
				if !res.Changed || res.State.Generation != 3 || res.State.Active != blue {
					t.Errorf("result = %+v, want blue at 3", res)
				}
				return
			}
			if errors.Is(err, rollout.ErrStore) {
				t.Errorf("conflict %v also reported as a store failure", err)
			}
			if res.Changed || !equalState(e.ctl.State(), before) {
				t.Errorf("state changed on a conflict: %+v", e.ctl.State())
			}
			e.assertFile(t, file)
			e.assertRoutes(t, route{blue, 1}, route{green, 2})
			if got := cutovers(t, e.reg, green, blue, "api", "rejected"); got != 1 {
				t.Errorf("cutovers_total{green,blue,api,rejected} = %v, want 1", got)
			}
		})
	}
}

func TestHistoryLimit(t *testing.T) {
	tests := []struct {
		limit, switches, want int
	}{
		{limit: 1, switches: 4, want: 1},
		{limit: 3, switches: 2, want: 2},
		{limit: 3, switches: 3, want: 3},
		{limit: 3, switches: 7, want: 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit %d after %d", tt.limit, tt.switches), func(t *testing.T) {
			cfg := testConfig()
			cfg.HistoryLimit = tt.limit
			e := startedEnv(t, cfg)
			var st state.State
			for range tt.switches {
				e.clock.Advance(time.Second)
				st = e.cutover(t, rollout.Request{})
			}
			last := uint64(tt.switches + 1)
			if len(st.History) != tt.want {
				t.Fatalf("history has %d events, want %d", len(st.History), tt.want)
			}
			// The newest are kept, oldest first.
			for i, ev := range st.History {
				if wantGen := last - uint64(tt.want-1-i); ev.Generation != wantGen {
					t.Errorf("event %d has generation %d, want %d", i, ev.Generation, wantGen)
				}
			}
			if got := e.stored(t).History; len(got) != tt.want || got[len(got)-1].Generation != last {
				t.Errorf("stored history = %+v", got)
			}
		})
	}
}

func TestHistoryLimitDefault(t *testing.T) {
	// A stored state with 100 events (the default limit) keeps 100 after one
	// more switch: the oldest is dropped.
	e := newEnv(t, testConfig())
	seed := state.State{Active: blue, Previous: green, Generation: 100, ChangedAt: t0}
	for g := uint64(1); g <= 100; g++ {
		from, to := blue, green
		if g%2 == 0 {
			from, to = green, blue
		}
		seed.History = append(seed.History, state.Event{Time: t0, Action: state.ActionCutover, From: from, To: to, Trigger: state.TriggerAPI, Generation: g})
	}
	writeState(t, e.path, seed)
	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	st := e.cutover(t, rollout.Request{})
	if len(st.History) != 100 {
		t.Fatalf("history has %d events, want 100", len(st.History))
	}
	if st.History[0].Generation != 2 || st.History[99].Generation != 101 {
		t.Errorf("history spans generations %d..%d, want 2..101", st.History[0].Generation, st.History[99].Generation)
	}
}

func TestHistoryLimitLowered(t *testing.T) {
	// A state stored under a larger limit is trimmed to the current one on
	// the next switch.
	cfg := testConfig()
	cfg.HistoryLimit = 3
	e := newEnv(t, cfg)
	seed := state.State{Active: blue, Previous: green, Generation: 10, ChangedAt: t0}
	for g := uint64(1); g <= 10; g++ {
		seed.History = append(seed.History, state.Event{Time: t0, Action: state.ActionCutover, From: colors[g%2], To: colors[(g+1)%2], Trigger: state.TriggerAPI, Generation: g})
	}
	writeState(t, e.path, seed)
	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if got := len(e.ctl.State().History); got != 10 {
		t.Errorf("Init kept %d events, want the 10 stored (only a switch trims)", got)
	}
	st := e.cutover(t, rollout.Request{})
	var gens []uint64
	for _, ev := range st.History {
		gens = append(gens, ev.Generation)
	}
	if !slices.Equal(gens, []uint64{9, 10, 11}) {
		t.Errorf("history generations = %v, want [9 10 11]", gens)
	}
}

func TestSwitchLeavesEarlierStatesAlone(t *testing.T) {
	// State() hands out a value whose History is shared; a later switch,
	// including one that trims the history, must not write into it.
	for _, limit := range []int{2, 100} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			cfg := testConfig()
			cfg.HistoryLimit = limit
			e := startedEnv(t, cfg)
			e.cutover(t, rollout.Request{Reason: "one"})
			e.cutover(t, rollout.Request{Reason: "two"})
			held := e.ctl.State()
			want := held
			want.History = append([]state.Event(nil), held.History...)
			e.cutover(t, rollout.Request{Reason: "three"})
			e.rollback(t, rollout.Request{Reason: "four"})
			if !equalState(held, want) {
				t.Errorf("an earlier state changed under its holder:\n got %+v\nwant %+v", held, want)
			}
		})
	}
}

func TestRollback(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.cutover(t, rollout.Request{}) // green at 2, previous blue
	e.clock.Advance(time.Minute)
	st := e.rollback(t, rollout.Request{Reason: "errors up", Trigger: state.TriggerCLI})
	want := state.State{Active: blue, Previous: green, Generation: 3, ChangedAt: e.clock.Now()}
	if st.Active != want.Active || st.Previous != want.Previous || st.Generation != want.Generation || !st.ChangedAt.Equal(want.ChangedAt) {
		t.Errorf("Rollback = %+v, want %+v", st, want)
	}
	wantEv := state.Event{Time: e.clock.Now(), Action: state.ActionRollback, From: green, To: blue, Trigger: state.TriggerCLI, Reason: "errors up", Generation: 3}
	if got := st.History[len(st.History)-1]; len(st.History) != 2 || !equalEvent(got, wantEv) {
		t.Errorf("history = %+v, want the cutover then %+v", st.History, wantEv)
	}
	if got := e.stored(t); !equalState(got, st) {
		t.Errorf("stored = %+v, want %+v", got, st)
	}
	e.assertRoutes(t, route{blue, 1}, route{green, 2}, route{blue, 3})
	if got := cutovers(t, e.reg, green, blue, "cli", "success"); got != 1 {
		t.Errorf("cutovers_total{green,blue,cli,success} = %v, want 1", got)
	}

	// A second rollback goes back to where the first one came from.
	st = e.rollback(t, rollout.Request{})
	if st.Active != green || st.Previous != blue || st.Generation != 4 {
		t.Errorf("second Rollback = %+v, want green at 4", st)
	}
}

func TestRollbackNoPrevious(t *testing.T) {
	e := startedEnv(t, testConfig())
	file := e.fileBytes(t)
	res, err := e.ctl.Rollback(t.Context(), rollout.Request{})
	if !errors.Is(err, rollout.ErrNoPrevious) {
		t.Fatalf("Rollback on a fresh store = %v, want ErrNoPrevious", err)
	}
	if res.Changed || res.State.Active != blue || res.State.Generation != 1 {
		t.Errorf("result = %+v, want unchanged blue at 1", res)
	}
	e.assertRoutes(t, route{blue, 1})
	e.assertFile(t, file)
	if got := cutovers(t, e.reg, blue, "", "api", "rejected"); got != 1 {
		t.Errorf(`cutovers_total{blue,"",api,rejected} = %v, want 1`, got)
	}
}

func TestRollbackUnhealthyPrevious(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.cutover(t, rollout.Request{})
	e.health.Set(blue, 0)
	before, file := e.ctl.State(), e.fileBytes(t)

	_, err := e.ctl.Rollback(t.Context(), rollout.Request{})
	if !errors.Is(err, rollout.ErrUnhealthy) {
		t.Fatalf("Rollback to an unhealthy colour = %v, want ErrUnhealthy", err)
	}
	if got := e.ctl.State(); !equalState(got, before) {
		t.Errorf("State() = %+v, want unchanged", got)
	}
	e.assertFile(t, file)
	e.assertRoutes(t, route{blue, 1}, route{green, 2})

	st := e.rollback(t, rollout.Request{Force: true})
	last := st.History[len(st.History)-1]
	if st.Active != blue || last.Action != state.ActionRollback || !last.Forced {
		t.Errorf("forced Rollback = %+v, want blue with a forced rollback event", st)
	}
}

func TestRollbackGenerationExpectation(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.cutover(t, rollout.Request{})
	if _, err := e.ctl.Rollback(t.Context(), rollout.Request{Generation: new(uint64(1))}); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("Rollback with a stale generation = %v, want ErrConflict", err)
	}
	e.rollback(t, rollout.Request{Generation: new(uint64(2))})
}

func TestSwitchStoreFailure(t *testing.T) {
	tests := []struct {
		name     string
		call     func(*env, context.Context) (rollout.Result, error)
		from, to string
	}{
		{"cutover", func(e *env, ctx context.Context) (rollout.Result, error) {
			return e.ctl.Cutover(ctx, rollout.Request{})
		}, green, blue},
		{"rollback", func(e *env, ctx context.Context) (rollout.Result, error) {
			return e.ctl.Rollback(ctx, rollout.Request{})
		}, green, blue},
		{"forced cutover", func(e *env, ctx context.Context) (rollout.Result, error) {
			return e.ctl.Cutover(ctx, rollout.Request{To: blue, Force: true})
		}, green, blue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startedEnv(t, testConfig())
			e.cutover(t, rollout.Request{}) // green at 2
			before, routes, file := e.ctl.State(), e.router.Calls(), e.fileBytes(t)

			e.store.failCAS(errors.New("disk full"))
			res, err := tt.call(e, t.Context())
			if !errors.Is(err, rollout.ErrStore) {
				t.Fatalf("err = %v, want ErrStore", err)
			}
			if errors.Is(err, rollout.ErrConflict) {
				t.Errorf("store failure %v also reported as a conflict", err)
			}
			if !strings.Contains(err.Error(), "disk full") {
				t.Errorf("error %q hides the cause", err)
			}
			if res.Changed || !equalState(res.State, before) {
				t.Errorf("result = %+v, want unchanged %+v", res, before)
			}
			if got := e.ctl.State(); !equalState(got, before) {
				t.Errorf("State() = %+v, want unchanged %+v", got, before)
			}
			e.assertRoutes(t, routes...)
			e.assertFile(t, file)
			if got := cutovers(t, e.reg, tt.from, tt.to, "api", "error"); got != 1 {
				t.Errorf("cutovers_total{%s,%s,api,error} = %v, want 1", tt.from, tt.to, got)
			}
			assertMetric(t, e.reg, 2, "bluegreen_state_generation")
			assertMetric(t, e.reg, 1, "bluegreen_active_color", "color", green)

			// Once the store is back, the same switch goes through.
			e.store.failCAS(nil)
			res, err = tt.call(e, t.Context())
			if err != nil || !res.Changed || res.State.Generation != 3 || res.State.Active != blue {
				t.Fatalf("after recovery: %+v, %v; want blue at 3", res, err)
			}
		})
	}
}

func TestSwitchCancelledContext(t *testing.T) {
	e := startedEnv(t, testConfig())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.ctl.Cutover(ctx, rollout.Request{}); !errors.Is(err, rollout.ErrStore) {
		t.Fatalf("Cutover with a cancelled context = %v, want ErrStore", err)
	}
	e.assertRoutes(t, route{blue, 1})
}

func TestSwitchStoreConflict(t *testing.T) {
	e := startedEnv(t, testConfig())
	before, file := e.ctl.State(), e.fileBytes(t)
	e.store.failCAS(fmt.Errorf("stored generation is 9: %w", state.ErrConflict))

	res, err := e.ctl.Cutover(t.Context(), rollout.Request{})
	if !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("Cutover = %v, want ErrConflict", err)
	}
	if errors.Is(err, rollout.ErrStore) {
		t.Errorf("conflict %v also reported as a store failure", err)
	}
	if res.Changed || !equalState(e.ctl.State(), before) {
		t.Errorf("state changed on a conflict: %+v", e.ctl.State())
	}
	e.assertRoutes(t, route{blue, 1})
	e.assertFile(t, file)
	if got := cutovers(t, e.reg, blue, green, "api", "rejected"); got != 1 {
		t.Errorf("cutovers_total{blue,green,api,rejected} = %v, want 1", got)
	}
}

func TestTwoControllersShareOneStore(t *testing.T) {
	// Two controllers over one FileStore (as two replicas over one shared
	// store): the one that switches second works from a stale generation
	// and must lose.
	a := startedEnv(t, testConfig())
	bRouter := &fakeRouter{}
	b, err := rollout.New(testConfig(), a.store, bRouter, a.health, nil, testLogger(t), a.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Init(t.Context()); err != nil {
		t.Fatalf("Init b: %v", err)
	}
	a.cutover(t, rollout.Request{})
	if _, err := b.Cutover(t.Context(), rollout.Request{}); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("second writer's Cutover = %v, want ErrConflict", err)
	}
	if got := b.State(); got.Generation != 1 || got.Active != blue {
		t.Errorf("loser's state = %+v, want blue at 1", got)
	}
	if got := a.stored(t); got.Generation != 2 || got.Active != green {
		t.Errorf("stored = %+v, want the winner's green at 2", got)
	}
	if got := bRouter.Calls(); len(got) != 1 {
		t.Errorf("loser's router calls = %v, want only the Init", got)
	}
}

func TestConcurrentCutoversSameGeneration(t *testing.T) {
	const n = 16
	e := startedEnv(t, testConfig())
	g := e.ctl.State().Generation
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
		res   = make([]rollout.Result, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			res[i], errs[i] = e.ctl.Cutover(t.Context(), rollout.Request{Generation: &g, Reason: fmt.Sprint("racer ", i)})
		})
	}
	close(start)
	wg.Wait()

	var won int
	for i, err := range errs {
		switch {
		case err == nil:
			won++
			if !res[i].Changed || res[i].State.Generation != g+1 {
				t.Errorf("winner %d result = %+v", i, res[i])
			}
		case errors.Is(err, rollout.ErrConflict):
		default:
			t.Errorf("racer %d: %v, want success or ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d cutovers succeeded, want exactly 1", won)
	}
	st := e.stored(t)
	if st.Generation != g+1 || st.Active != green || len(st.History) != 1 {
		t.Errorf("stored = %+v, want green at %d with one event", st, g+1)
	}
	e.assertRoutes(t, route{blue, 1}, route{green, 2})
	if got := cutovers(t, e.reg, blue, green, "api", "success"); got != 1 {
		t.Errorf("success count = %v, want 1", got)
	}
	if got := cutovers(t, e.reg, green, blue, "api", "rejected"); got != n-1 {
		t.Errorf("rejected count = %v, want %d", got, n-1)
	}
}

func TestConcurrentCutoversSerialise(t *testing.T) {
	// Without a generation expectation every cutover flips the colour once,
	// one after the other: the history is a clean alternation.
	const n = 16
	e := startedEnv(t, testConfig())
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := e.ctl.Cutover(t.Context(), rollout.Request{}); err != nil {
				t.Errorf("Cutover: %v", err)
			}
		})
	}
	for range 4 {
		wg.Go(func() { _ = e.ctl.State() })
	}
	wg.Wait()
	st := e.stored(t)
	if st.Generation != n+1 || len(st.History) != n {
		t.Fatalf("stored generation %d with %d events, want %d and %d", st.Generation, len(st.History), n+1, n)
	}
	for i, ev := range st.History {
		wantFrom := colors[i%2]
		if ev.From != wantFrom || ev.To != colors[(i+1)%2] || ev.Generation != uint64(i+2) {
			t.Errorf("event %d = %+v, want %s -> %s at %d", i, ev, wantFrom, colors[(i+1)%2], i+2)
		}
	}
	if got := e.ctl.State(); !equalState(got, st) {
		t.Errorf("State() = %+v, want the stored %+v", got, st)
	}
	if calls := e.router.Calls(); len(calls) != n+1 || calls[n] != (route{st.Active, n + 1}) {
		t.Errorf("router calls = %v", calls)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, testConfig())
	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	ts := func(at time.Time) float64 { return float64(at.UnixNano()) / 1e9 }
	check := func(active, idle string, gen uint64, at time.Time) {
		t.Helper()
		assertMetric(t, e.reg, 1, "bluegreen_active_color", "color", active)
		assertMetric(t, e.reg, 0, "bluegreen_active_color", "color", idle)
		assertMetric(t, e.reg, float64(gen), "bluegreen_state_generation")
		got, ok := metric(t, e.reg, "bluegreen_last_cutover_timestamp_seconds")
		if want := ts(at); !ok || got < want-1e-3 || got > want+1e-3 {
			t.Errorf("last_cutover_timestamp_seconds = %v, want %v", got, want)
		}
	}
	check(blue, green, 1, t0)

	e.clock.Advance(42 * time.Second)
	e.cutover(t, rollout.Request{})
	check(green, blue, 2, t0.Add(42*time.Second))

	// A rejected switch changes none of the gauges.
	e.health.Set(blue, 0)
	e.clock.Advance(time.Second)
	if _, err := e.ctl.Cutover(t.Context(), rollout.Request{}); !errors.Is(err, rollout.ErrUnhealthy) {
		t.Fatalf("Cutover = %v, want ErrUnhealthy", err)
	}
	_, _ = e.ctl.Cutover(t.Context(), rollout.Request{To: green})
	check(green, blue, 2, t0.Add(42*time.Second))

	e.clock.Advance(time.Second)
	e.rollback(t, rollout.Request{Force: true, Trigger: state.TriggerCLI})
	check(blue, green, 3, t0.Add(44*time.Second))

	want := `
# HELP bluegreen_cutovers_total Switch requests by source colour, target colour, trigger (api, cli, auto-rollback) and result (success, noop, rejected, error).
# TYPE bluegreen_cutovers_total counter
bluegreen_cutovers_total{from="blue",result="success",to="green",trigger="api"} 1
bluegreen_cutovers_total{from="blue",result="success",to="green",trigger="auto-rollback"} 0
bluegreen_cutovers_total{from="blue",result="success",to="green",trigger="cli"} 0
bluegreen_cutovers_total{from="green",result="noop",to="green",trigger="api"} 1
bluegreen_cutovers_total{from="green",result="rejected",to="blue",trigger="api"} 1
bluegreen_cutovers_total{from="green",result="success",to="blue",trigger="api"} 0
bluegreen_cutovers_total{from="green",result="success",to="blue",trigger="auto-rollback"} 0
bluegreen_cutovers_total{from="green",result="success",to="blue",trigger="cli"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "bluegreen_cutovers_total"); err != nil {
		t.Error(err)
	}
}

func TestMetricsAfterRestart(t *testing.T) {
	// A restarted process reports the stored state, including when it last
	// changed, not the time it started.
	first := startedEnv(t, testConfig())
	first.clock.Advance(time.Hour)
	st := first.cutover(t, rollout.Request{})

	second := newEnvAt(t, testConfig(), first.path)
	second.clock.Advance(48 * time.Hour)
	if err := second.ctl.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	assertMetric(t, second.reg, 1, "bluegreen_active_color", "color", green)
	assertMetric(t, second.reg, 0, "bluegreen_active_color", "color", blue)
	assertMetric(t, second.reg, 2, "bluegreen_state_generation")
	got, _ := metric(t, second.reg, "bluegreen_last_cutover_timestamp_seconds")
	if want := float64(st.ChangedAt.UnixNano()) / 1e9; got < want-1e-3 || got > want+1e-3 {
		t.Errorf("last_cutover_timestamp_seconds = %v, want %v", got, want)
	}
	if _, sum := cutoverTotals(t, second.reg, ""); sum != 0 {
		t.Errorf("a restart counted %v cutovers, want none", sum)
	}
}

func TestHealthChangedNeverBlocks(t *testing.T) {
	e := startedEnv(t, testConfig())
	for range 1000 {
		e.ctl.HealthChanged() // nobody runs the loop: must not block
	}
}

// TestSuccessSeriesExistFromStart: every successful-switch series exists at
// zero before the first switch, so increase() sees the first one.
func TestSuccessSeriesExistFromStart(t *testing.T) {
	e := startedEnv(t, testConfig())
	for _, trig := range []string{state.TriggerAPI, state.TriggerCLI, state.TriggerAutoRollback} {
		assertMetric(t, e.reg, 0, "bluegreen_cutovers_total", "from", blue, "to", green, "trigger", trig, "result", "success")
		assertMetric(t, e.reg, 0, "bluegreen_cutovers_total", "from", green, "to", blue, "trigger", trig, "result", "success")
	}
}
