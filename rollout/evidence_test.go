package rollout_test

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

const refused = "every green instance refused connections"

func TestDataPlaneEvidenceRollsBack(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.clock.Advance(time.Minute)
	e.cutover(t, rollout.Request{Reason: "release"}) // green at 2
	e.clock.Advance(1500 * time.Millisecond)
	// The probes still say green is healthy: the data plane knows first.
	if !e.ctl.DataPlaneEvidence(green, refused) {
		t.Fatal("DataPlaneEvidence = false, want a rollback")
	}
	st := e.ctl.State()
	if st.Active != blue || st.Previous != green || st.Generation != 3 {
		t.Fatalf("state = %s (previous %s) at %d, want blue (previous green) at 3", st.Active, st.Previous, st.Generation)
	}
	last := st.History[len(st.History)-1]
	if last.Action != state.ActionRollback || last.Trigger != state.TriggerAutoRollback || last.Forced ||
		last.From != green || last.To != blue {
		t.Fatalf("last event = %+v, want an auto-rollback green -> blue", last)
	}
	for _, want := range []string{"data plane", refused, "1.5s", e.cfg.Window.String()} {
		if !strings.Contains(last.Reason, want) {
			t.Errorf("reason %q does not contain %q", last.Reason, want)
		}
	}
	if got := e.stored(t); !equalState(got, st) {
		t.Errorf("stored = %+v, want %+v", got, st)
	}
	e.assertRoutes(t, route{blue, 1}, route{green, 2}, route{blue, 3})
	if got := cutovers(t, e.reg, green, blue, state.TriggerAutoRollback, "success"); got != 1 {
		t.Errorf("auto-rollback successes = %v, want 1", got)
	}

	// No flapping: the rollback is never rolled back, by either colour's
	// evidence, and the old evidence does nothing more.
	for _, c := range []string{green, blue} {
		if e.ctl.DataPlaneEvidence(c, "again") {
			t.Fatalf("DataPlaneEvidence(%s) after the rollback rolled back again", c)
		}
	}
	if got := e.ctl.State().Generation; got != 3 {
		t.Fatalf("generation = %d after more evidence, want 3", got)
	}
}

func TestDataPlaneEvidenceRules(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*rollout.Config)
		setup func(t *testing.T, e *env)
		color string
	}{
		{name: "no cutover yet", setup: func(t *testing.T, e *env) {}, color: blue},
		{
			name:  "evidence about the idle colour",
			setup: func(t *testing.T, e *env) { e.cutover(t, rollout.Request{}) },
			color: blue,
		},
		{
			name:  "forced cutover",
			setup: func(t *testing.T, e *env) { e.cutover(t, rollout.Request{Force: true}) },
			color: green,
		},
		{
			name: "outside the window",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.clock.Advance(e.cfg.Window + time.Millisecond)
			},
			color: green,
		},
		{
			name: "previous colour unhealthy",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.health.Set(blue, 0)
			},
			color: green,
		},
		{
			name: "the active colour came from a manual rollback",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.rollback(t, rollout.Request{})
			},
			color: blue,
		},
		{
			name: "auto-rollback disabled",
			cfg:  func(c *rollout.Config) { c.AutoRollback = false },
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
			},
			color: green,
		},
		{
			name: "unknown colour",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
			},
			color: "red",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			e := startedEnv(t, cfg)
			tt.setup(t, e)
			before := e.ctl.State()
			calls := e.store.CASCalls()
			for range 3 {
				if e.ctl.DataPlaneEvidence(tt.color, refused) {
					t.Fatal("DataPlaneEvidence rolled back")
				}
			}
			if got := e.ctl.State(); !equalState(got, before) {
				t.Fatalf("state changed: %+v -> %+v", before, got)
			}
			if n := e.store.CASCalls(); n != calls {
				t.Fatalf("store written %d times", n-calls)
			}
		})
	}
}

// In a fleet only the elected replica acts on evidence; a follower leaves
// the state alone and does not even take the controller's lock.
func TestDataPlaneEvidenceOnlyOnLeader(t *testing.T) {
	lead := &leadership{}
	cfg := testConfig()
	cfg.Leadership = lead
	e := startedEnv(t, cfg)
	e.cutover(t, rollout.Request{})
	if e.ctl.DataPlaneEvidence(green, refused) {
		t.Fatal("a follower rolled back")
	}
	if lead.asked.Load() == 0 {
		t.Fatal("leadership not consulted")
	}
	if st := e.ctl.State(); st.Active != green || st.Generation != 2 {
		t.Fatalf("state = %s at %d, want green at 2", st.Active, st.Generation)
	}
	lead.on.Store(true)
	if !e.ctl.DataPlaneEvidence(green, refused) {
		t.Fatal("the leader did not roll back")
	}
}

// Many requests see the same failure at once: exactly one rollback, and
// every caller returns with blue active.
func TestDataPlaneEvidenceConcurrent(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.cutover(t, rollout.Request{})
	var wins atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Go(func() {
			<-start
			if e.ctl.DataPlaneEvidence(green, refused) {
				wins.Add(1)
			}
			if a := e.ctl.State().Active; a != blue {
				t.Errorf("after DataPlaneEvidence returned the active colour is %s", a)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d callers rolled back, want 1", n)
	}
	if _, sum := cutoverTotals(t, e.reg, state.TriggerAutoRollback); sum != 1 {
		t.Fatalf("auto-rollbacks counted = %v, want 1", sum)
	}
	if st := e.ctl.State(); st.Generation != 3 {
		t.Fatalf("generation = %d, want 3", st.Generation)
	}
}

// A store that fails: no rollback is applied (routing follows the store),
// and a later call may try again once the store is back.
func TestDataPlaneEvidenceStoreFailure(t *testing.T) {
	e := startedEnv(t, testConfig())
	e.cutover(t, rollout.Request{})
	e.store.failCAS(errors.New("disk on fire"))
	if e.ctl.DataPlaneEvidence(green, refused) {
		t.Fatal("rolled back although the store failed")
	}
	if st := e.ctl.State(); st.Active != green {
		t.Fatalf("active = %s, want green", st.Active)
	}
	e.assertRoutes(t, route{blue, 1}, route{green, 2})
	e.store.failCAS(nil)
	if !e.ctl.DataPlaneEvidence(green, refused) {
		t.Fatal("no rollback once the store is back")
	}
}
