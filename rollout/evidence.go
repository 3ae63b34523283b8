package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/cryoprotect/bluegreen/state"
)

// DataPlaneEvidence is the data plane's word that color cannot serve: every
// instance of it in rotation refused connections since its last success, or
// passive outlier detection has every one of them failing. It is the fast
// path of auto-rollback: when color is the active colour, made active by a
// non-forced cutover within the rollback window (the same rule as the
// probe-driven auto-rollback), and the previous colour has a healthy
// instance by its probes, the controller rolls back at once, with trigger
// auto-rollback and a reason that names the data plane's evidence, instead
// of waiting for HEALTH_FALL failed probes. It returns true when it rolled
// back.
//
// It cannot flap: a rollback is the last event of the new state, so the
// rule (whose last event must be the cutover that made color active) allows
// one rollback per cutover and never a rollback of a rollback. It does
// nothing when auto-rollback is off or on a replica that is not the
// election leader: the data plane then answers as it would otherwise
// (retrying where it may) and routes by the new state once the leader's
// switch arrives through the store.
//
// It is safe for concurrent use and meant to be called on the request path,
// synchronously: a caller that gets true retries its unsent request on the
// new active colour. Calls are serialised with switches, so a caller that
// arrives while the rollback is being stored waits for it and then returns
// false (color is no longer active), after which it also routes to the new
// colour.
func (c *Controller) DataPlaneEvidence(color, reason string) bool {
	if !c.cfg.AutoRollback || !c.leads() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.cur
	if cur.Active != color || !c.rollbackAllowedLocked(cur) {
		return false
	}
	if c.health.Healthy(cur.Previous) == 0 {
		if c.refusedGen != cur.Generation {
			c.refusedGen = cur.Generation // say it once per cutover, not once per request
			c.log.Error("data plane reports the active colour failing and the previous one has no healthy instance; not rolling back",
				"active", cur.Active, "previous", cur.Previous, "evidence", reason)
		}
		return false
	}
	why := fmt.Sprintf("data plane evidence %s after the cutover (window %s): %s",
		c.now().Sub(cur.ChangedAt).Round(time.Millisecond), c.cfg.Window, reason)
	// The rollback is stored even if the caller's request has ended: the
	// evidence stands on its own.
	ctx := context.Background()
	if _, err := c.switchLocked(ctx, state.ActionRollback, Request{To: cur.Previous, Reason: why, Trigger: state.TriggerAutoRollback}); err != nil {
		c.log.Error("auto-rollback on data plane evidence failed", "to", cur.Previous, "err", err)
		return false
	}
	return true
}

// rollbackAllowedLocked reports whether cur may be rolled back
// automatically: its last event is the non-forced cutover that made the
// current generation, within the window. c.mu must be held.
func (c *Controller) rollbackAllowedLocked(cur state.State) bool {
	if len(cur.History) == 0 || cur.Previous == "" {
		return false
	}
	last := cur.History[len(cur.History)-1]
	if last.Action != state.ActionCutover || last.Forced || last.Generation != cur.Generation {
		return false
	}
	return c.now().Sub(cur.ChangedAt) <= c.cfg.Window
}
