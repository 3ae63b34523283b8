package rollout_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/rollout"
)

// leadership is a rollout.Leadership a test flips; it counts the questions.
type leadership struct {
	on    atomic.Bool
	asked atomic.Int32
}

func (l *leadership) IsLeader() bool {
	l.asked.Add(1)
	return l.on.Load()
}

func TestRunAutoRollbackOnlyOnLeader(t *testing.T) {
	lead := &leadership{}
	cfg := testConfig()
	cfg.Leadership = lead
	e := startedEnv(t, cfg)
	stop := startRun(t, e)
	e.clock.Advance(time.Minute)
	e.cutover(t, rollout.Request{Reason: "release"}) // green at 2
	e.clock.Advance(30 * time.Second)

	// A follower sees green fail but leaves the decision to the leader.
	e.health.Set(green, 0)
	e.ctl.HealthChanged()
	waitFor(t, "the follower to consult the leadership", func() bool { return lead.asked.Load() > 0 })
	if st := e.ctl.State(); st.Active != green || st.Generation != 2 {
		t.Fatalf("a follower rolled back: %s at %d", st.Active, st.Generation)
	}
	if n := e.store.CASCalls(); n != 2 {
		t.Fatalf("store CAS calls = %d, want 2 (init and cutover)", n)
	}

	// Elected: the kick from the election makes it roll back at once.
	lead.on.Store(true)
	e.ctl.LeaderChanged()
	waitFor(t, "the auto-rollback by the new leader", func() bool { return e.ctl.State().Active == blue })
	assertAutoRollback(t, e, 3)
	stop()
}
