package rollout_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
	"go.uber.org/goleak"
)

// startRun runs the controller's loop in a goroutine and returns a function
// that cancels it and waits for Run to return; the function also runs on
// cleanup and may be called more than once.
func startRun(t *testing.T, e *env) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.ctl.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done // in a synctest bubble a Run that never returns is reported as a deadlock
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or a few seconds have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// assertAutoRollback checks that the last switch is an auto-rollback from
// green to blue at generation gen, stored, applied and counted once.
func assertAutoRollback(t *testing.T, e *env, gen uint64) {
	t.Helper()
	st := e.ctl.State()
	if st.Active != blue || st.Previous != green || st.Generation != gen {
		t.Fatalf("state = %s (previous %s) at %d, want blue (previous green) at %d", st.Active, st.Previous, st.Generation, gen)
	}
	last := st.History[len(st.History)-1]
	if last.Action != state.ActionRollback || last.Trigger != state.TriggerAutoRollback ||
		last.From != green || last.To != blue || last.Generation != gen || last.Forced || !last.Time.Equal(e.clock.Now()) {
		t.Errorf("last event = %+v, want an unforced auto-rollback green -> blue at %d", last, gen)
	}
	if !strings.Contains(last.Reason, green) || !strings.Contains(last.Reason, e.cfg.Window.String()) {
		t.Errorf("reason %q does not say what happened", last.Reason)
	}
	if got := e.stored(t); !equalState(got, st) {
		t.Errorf("stored = %+v, want %+v", got, st)
	}
	if calls := e.router.Calls(); calls[len(calls)-1] != (route{blue, gen}) {
		t.Errorf("router calls = %v, want the last to be blue at %d", calls, gen)
	}
	if got := cutovers(t, e.reg, green, blue, state.TriggerAutoRollback, "success"); got != 1 {
		t.Errorf(`cutovers_total{from="green",to="blue",trigger="auto-rollback",result="success"} = %v, want 1`, got)
	}
	assertMetric(t, e.reg, 1, "bluegreen_active_color", "color", blue)
	assertMetric(t, e.reg, 0, "bluegreen_active_color", "color", green)
	assertMetric(t, e.reg, float64(gen), "bluegreen_state_generation")
}

func TestRunAutoRollback(t *testing.T) {
	e := startedEnv(t, testConfig())
	stop := startRun(t, e)
	e.clock.Advance(time.Minute)
	e.cutover(t, rollout.Request{Reason: "release"}) // green at 2
	e.clock.Advance(30 * time.Second)                // inside the 5m window

	e.health.Set(green, 0)
	e.ctl.HealthChanged()
	waitFor(t, "the auto-rollback", func() bool { return e.ctl.State().Active == blue })
	assertAutoRollback(t, e, 3)
	stop()
}

func TestRunAutoRollbackRules(t *testing.T) {
	tests := []struct {
		name      string
		cfg       func(*rollout.Config)
		seed      *state.State // stored before Init
		setup     func(t *testing.T, e *env)
		rollsBack bool
	}{
		{
			name: "new colour lost every instance",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.clock.Advance(time.Minute)
				e.health.Set(green, 0)
			},
			rollsBack: true,
		},
		{
			name: "at the end of the window",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.clock.Advance(e.cfg.Window)
				e.health.Set(green, 0)
			},
			rollsBack: true,
		},
		{
			name: "cli cutover",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{Trigger: state.TriggerCLI})
				e.health.Set(green, 0)
			},
			rollsBack: true,
		},
		{
			name: "auto-rollback disabled",
			cfg:  func(c *rollout.Config) { c.AutoRollback = false },
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.health.Set(green, 0)
			},
		},
		{
			name: "outside the window",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.clock.Advance(e.cfg.Window + time.Nanosecond)
				e.health.Set(green, 0)
			},
		},
		{
			name: "previous colour unhealthy too",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.health.Set(green, 0)
				e.health.Set(blue, 0)
			},
		},
		{
			name: "new colour still has a healthy instance",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.health.Set(green, 1)
			},
		},
		{
			// After a restart the first probes are still running: no
			// healthy instance yet only means none has answered.
			name: "new colour not probed yet",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{})
				e.health.Set(green, 0)
				e.health.SetUnchecked(green, 2)
			},
		},
		{
			name: "forced cutover",
			setup: func(t *testing.T, e *env) {
				e.health.Set(green, 0)
				e.cutover(t, rollout.Request{Force: true})
			},
		},
		{
			name: "forced cutover to a healthy colour",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{Force: true})
				e.health.Set(green, 0)
			},
		},
		{
			name: "last switch was a rollback",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{To: green})
				e.rollback(t, rollout.Request{}) // blue, previous green
				e.health.Set(blue, 0)
			},
		},
		{
			name: "last switch was an auto-rollback",
			setup: func(t *testing.T, e *env) {
				e.cutover(t, rollout.Request{To: green})
				e.health.Set(green, 0)
				e.ctl.HealthChanged()
				synctest.Wait()
				if got := e.ctl.State(); got.Active != blue || got.Generation != 3 {
					t.Fatalf("first auto-rollback did not happen: %+v", got)
				}
				e.health.Set(green, 2)
				e.health.Set(blue, 0)
			},
		},
		{
			name: "stored cutover within the window",
			seed: &state.State{
				Active: green, Previous: blue, Generation: 4, ChangedAt: t0,
				History: []state.Event{{Time: t0, Action: state.ActionCutover, From: blue, To: green, Trigger: state.TriggerAPI, Generation: 4}},
			},
			setup: func(t *testing.T, e *env) {
				e.clock.Advance(time.Minute)
				e.health.Set(green, 0)
			},
			rollsBack: true,
		},
		{
			name: "stored state not made by its last event",
			seed: &state.State{
				Active: green, Previous: blue, Generation: 4, ChangedAt: t0,
				History: []state.Event{{Time: t0, Action: state.ActionCutover, From: blue, To: green, Trigger: state.TriggerAPI, Generation: 3}},
			},
			setup: func(t *testing.T, e *env) {
				e.health.Set(green, 0)
			},
		},
		{
			name: "no switch yet",
			setup: func(t *testing.T, e *env) {
				e.health.Set(blue, 0)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				if tt.cfg != nil {
					tt.cfg(&cfg)
				}
				e := newEnv(t, cfg)
				if tt.seed != nil {
					writeState(t, e.path, *tt.seed)
				}
				if err := e.ctl.Init(t.Context()); err != nil {
					t.Fatalf("Init: %v", err)
				}
				stop := startRun(t, e)
				tt.setup(t, e)
				synctest.Wait()
				before, routes, file := e.ctl.State(), e.router.Calls(), e.fileBytes(t)
				autoSeries, autoSum := cutoverTotals(t, e.reg, state.TriggerAutoRollback)

				e.ctl.HealthChanged()
				synctest.Wait() // Run has handled the change and is idle again

				if tt.rollsBack {
					assertAutoRollback(t, e, before.Generation+1)
				} else {
					if got := e.ctl.State(); !equalState(got, before) {
						t.Errorf("state changed to %s at %d, want no auto-rollback", got.Active, got.Generation)
					}
					e.assertRoutes(t, routes...)
					e.assertFile(t, file)
					// Not even attempted: nothing counted under auto-rollback.
					if n, sum := cutoverTotals(t, e.reg, state.TriggerAutoRollback); n != autoSeries || sum != autoSum {
						t.Errorf("auto-rollback series/sum went from %d/%v to %d/%v, want unchanged", autoSeries, autoSum, n, sum)
					}
				}
				stop()
			})
		})
	}
}

func TestRunAutoRollbackStoreFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startedEnv(t, testConfig())
		stop := startRun(t, e)
		e.cutover(t, rollout.Request{}) // green at 2
		before, file := e.ctl.State(), e.fileBytes(t)

		e.store.failCAS(errors.New("disk full"))
		e.health.Set(green, 0)
		e.ctl.HealthChanged()
		synctest.Wait()
		if got := e.ctl.State(); !equalState(got, before) {
			t.Errorf("state = %+v after a failed auto-rollback, want unchanged", got)
		}
		e.assertFile(t, file)
		e.assertRoutes(t, route{blue, 1}, route{green, 2})
		if got := cutovers(t, e.reg, green, blue, state.TriggerAutoRollback, "error"); got != 1 {
			t.Errorf("auto-rollback errors counted = %v, want 1", got)
		}

		// The next health change, once the store is back, retries.
		e.store.failCAS(nil)
		e.ctl.HealthChanged()
		synctest.Wait()
		assertAutoRollback(t, e, 3)
		stop()
	})
}

func TestRunAdoptsNewerStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startedEnv(t, testConfig()) // blue at 1
		watch := make(chan state.State)
		e.store.watch = watch
		stop := startRun(t, e)
		file := e.fileBytes(t)

		at := t0.Add(time.Hour)
		newer := state.State{
			Active: green, Previous: blue, Generation: 5, ChangedAt: at,
			History: []state.Event{{Time: at, Action: state.ActionCutover, From: blue, To: green, Trigger: state.TriggerAPI, Generation: 5}},
		}
		steps := []struct {
			name    string
			st      state.State
			adopted bool
		}{
			{"newer", newer, true},
			{"older", state.State{Active: blue, Generation: 3, ChangedAt: at}, false},
			{"same generation", state.State{Active: blue, Generation: 5, ChangedAt: at}, false},
			{"unknown active colour", state.State{Active: "red", Generation: 6, ChangedAt: at}, false},
			{"unknown previous colour", state.State{Active: blue, Previous: "red", Generation: 6, ChangedAt: at}, false},
			{"newer again, skipping generations", state.State{Active: blue, Previous: green, Generation: 9, ChangedAt: at.Add(time.Minute)}, true},
		}
		want := e.ctl.State()
		routes := e.router.Calls()
		for _, s := range steps {
			watch <- s.st // Run has taken it
			synctest.Wait()
			if s.adopted {
				want = s.st
				routes = append(routes, route{s.st.Active, s.st.Generation})
			}
			if got := e.ctl.State(); !equalState(got, want) {
				t.Errorf("%s: State() = %+v, want %+v", s.name, got, want)
			}
			e.assertRoutes(t, routes...)
			assertMetric(t, e.reg, float64(want.Generation), "bluegreen_state_generation")
			assertMetric(t, e.reg, 1, "bluegreen_active_color", "color", want.Active)
		}
		// Adopting is not a switch of ours: nothing is written or counted.
		e.assertFile(t, file)
		if n := e.store.CASCalls(); n != 1 {
			t.Errorf("%d CompareAndSwap calls, want only Init's", n)
		}
		if _, sum := cutoverTotals(t, e.reg, ""); sum != 0 {
			t.Errorf("%v cutovers counted after adopting, want 0", sum)
		}

		// A closed watch channel does not stop the loop: health changes are
		// still handled and cancel still ends it.
		close(watch)
		synctest.Wait() // a loop spinning on the closed channel never gets idle
		e.ctl.HealthChanged()
		synctest.Wait()
		if got := e.ctl.State(); !equalState(got, want) {
			t.Errorf("State() = %+v after the watch closed, want %+v", got, want)
		}
		stop()
	})
}

func TestRunIgnoresItsOwnWrites(t *testing.T) {
	// The FileStore's watch reports our own switches back to us; applying
	// them again would call the router twice.
	synctest.Test(t, func(t *testing.T) {
		e := startedEnv(t, testConfig())
		stop := startRun(t, e)
		synctest.Wait()
		e.cutover(t, rollout.Request{})
		synctest.Wait()
		e.rollback(t, rollout.Request{})
		synctest.Wait()
		e.assertRoutes(t, route{blue, 1}, route{green, 2}, route{blue, 3})
		if got := e.ctl.State(); got.Generation != 3 || got.Active != blue {
			t.Errorf("State() = %+v, want blue at 3", got)
		}
		stop()
	})
}

func TestRunWatchClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := startedEnv(t, testConfig())
		watch := make(chan state.State)
		close(watch)
		e.store.watch = watch
		stop := startRun(t, e)
		e.cutover(t, rollout.Request{})
		e.health.Set(green, 0)
		synctest.Wait()
		e.ctl.HealthChanged()
		synctest.Wait()
		assertAutoRollback(t, e, 3)
		stop()
	})
}

func TestRunReturnsOnCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := startedEnv(t, testConfig())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.ctl.Run(ctx)
	}()
	e.ctl.HealthChanged()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}

	// Already cancelled: Run returns at once.
	e.ctl.Run(ctx)
}
