package state

import (
	"encoding/json"
	"fmt"
	"time"
)

// Outcomes recorded in [Rollout.Outcome] when a rollout ends.
const (
	OutcomeCompleted  = "completed"  // the last step was a cutover to the target
	OutcomeAborted    = "aborted"    // weight back to 0 (api, cli or slo-abort)
	OutcomeSuperseded = "superseded" // an explicit cutover or rollback ended it
)

// Rollout is a progressive rollout: the share of clients sent to the idle
// colour To rises through Steps (percentages, the last one 100). The
// fields are the durable part; the live counters are in the proxy.
//
// A Rollout is shared by copies of a State: it is never modified after it
// has been stored; a change stores a new one.
type Rollout struct {
	To     string `json:"to"`
	From   string `json:"from"` // the baseline: the active colour when it started
	Steps  []int  `json:"steps"`
	Step   int    `json:"step"`   // index into Steps
	Weight int    `json:"weight"` // percentage of clients on To now

	StartedAt     time.Time `json:"started_at"`
	StepStartedAt time.Time `json:"step_started_at"` // the analysis window starts here
	Paused        bool      `json:"paused,omitempty"`
	PauseReason   string    `json:"pause_reason,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	Trigger       string    `json:"trigger,omitempty"` // who started it: api or cli

	StepInterval  Duration `json:"step_interval"`
	MinRequests   int64    `json:"min_requests"`
	MaxErrorRatio float64  `json:"max_error_ratio"`
	MaxP99        Duration `json:"max_p99,omitempty"`
	MaxP99Ratio   float64  `json:"max_p99_ratio,omitempty"`
	MaxHeld       int      `json:"max_held"` // held intervals before it pauses

	// Set when it ended (LastRollout only).
	Outcome string    `json:"outcome,omitempty"`
	EndedAt time.Time `json:"ended_at,omitzero"`
	Ending  string    `json:"ending,omitempty"` // why it ended
}

// Clone returns a copy that shares nothing with r.
func (r *Rollout) Clone() *Rollout {
	if r == nil {
		return nil
	}
	c := *r
	c.Steps = append([]int(nil), r.Steps...)
	return &c
}

// Duration is a time.Duration written in JSON as a string such as "1m30s".
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Counts is one publication of a rollout window's counts in a fleet's
// store, as the store returns it (state/etcd's ReadCounts): which replica
// published it (its BLUEGREEN_REPLICA_ID), whether this process did, and
// what it published. Two processes that share a replica id (a copied
// host name) are two publications, both counted.
type Counts struct {
	Replica string
	Own     bool
	Data    []byte
}
