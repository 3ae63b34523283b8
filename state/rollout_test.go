package state

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// A state file written before rollouts existed loads, with no rollout.
func TestDecodeWithoutRollout(t *testing.T) {
	old := `{"format":1,"active":"blue","generation":3,"changed_at":"2025-03-14T15:09:26Z","history":[]}`
	s, err := Decode([]byte(old))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s.Rollout != nil || s.LastRollout != nil || s.Active != "blue" || s.Generation != 3 {
		t.Fatalf("decoded %+v", s)
	}
	data, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "rollout") {
		t.Fatalf("a state without rollout writes rollout fields:\n%s", data)
	}
}

func TestRolloutRoundTrip(t *testing.T) {
	s := sample(4)
	s.Rollout = &Rollout{
		To: "green", From: "blue", Steps: []int{1, 5, 25, 50, 100}, Step: 2, Weight: 25,
		StartedAt: t0, StepStartedAt: t0.Add(time.Minute), Paused: true, PauseReason: "held",
		StepInterval: Duration(90 * time.Second), MinRequests: 200, MaxErrorRatio: 0.01,
		MaxP99: Duration(500 * time.Millisecond), MaxP99Ratio: 1.5, MaxHeld: 3, Trigger: TriggerCLI,
	}
	s.Active = "blue"
	s.LastRollout = &Rollout{To: "green", From: "blue", Steps: []int{100}, Outcome: OutcomeAborted, EndedAt: t0, Ending: "green 5xx 4.2% > 1% over 812 requests"}
	data := mustEncode(t, s)
	if !strings.Contains(string(data), `"step_interval": "1m30s"`) {
		t.Fatalf("durations are not written as strings:\n%s", data)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !reflect.DeepEqual(got.Rollout, s.Rollout) || !reflect.DeepEqual(got.LastRollout, s.LastRollout) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got.Rollout, s.Rollout)
	}
}

func TestDecodeRejectsBadRollout(t *testing.T) {
	for name, r := range map[string]string{
		"target is active":  `{"to":"blue","steps":[100],"step":0,"weight":1,"step_interval":"1m"}`,
		"step out of range": `{"to":"green","steps":[1,100],"step":2,"weight":1,"step_interval":"1m"}`,
		"weight":            `{"to":"green","steps":[100],"step":0,"weight":101,"step_interval":"1m"}`,
		"duration":          `{"to":"green","steps":[100],"step":0,"weight":1,"step_interval":60}`,
	} {
		t.Run(name, func(t *testing.T) {
			doc := `{"format":1,"active":"blue","generation":3,"changed_at":"2025-03-14T15:09:26Z","history":[],"rollout":` + r + `}`
			if _, err := Decode([]byte(doc)); err == nil {
				t.Fatal("Decode accepted it")
			}
		})
	}
}
