package rollout_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/proxy/stats"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

// memCounts is a FleetCounts in memory whose reads can be made to fail, as
// when the store stops answering.
type memCounts struct {
	mu   sync.Mutex
	pubs map[string]map[string][]byte // window -> replica -> data
	down atomic.Bool
}

func (m *memCounts) PublishCounts(_ context.Context, window, replica string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pubs == nil {
		m.pubs = map[string]map[string][]byte{}
	}
	if m.pubs[window] == nil {
		m.pubs[window] = map[string][]byte{}
	}
	m.pubs[window][replica] = data
	return nil
}

func (m *memCounts) WithdrawCounts(context.Context, string) error { return nil }

func (m *memCounts) ReadCounts(_ context.Context, window string) (map[string][]byte, error) {
	if m.down.Load() {
		return nil, errors.New("store unavailable")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range m.pubs[window] {
		out[k] = v
	}
	return out, nil
}

// Counts the leader cannot read fresh never pass a step, even when its own
// traffic alone would: the step waits (neither passes nor counts as held)
// until the fleet's counts are read again.
func TestFleetStaleCountsDoNotPass(t *testing.T) {
	fc := &memCounts{}
	fc.down.Store(true)
	rec := stats.New(colors[:], time.Now)
	m, err := rollout.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.NewFileStore(t.TempDir() + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := rollout.New(rollout.Config{
		Colors: colors, InitialColor: blue, Stats: rollout.RecorderStats{R: rec},
		AnalysisEvery: 50 * time.Millisecond, Fleet: fc, Replica: "a", PublishEvery: 50 * time.Millisecond,
	}, store, &weighted{}, newFakeHealth(), m, testLogger(t), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := ctl.Init(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); ctl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := ctl.StartRollout(ctx, rollout.RolloutRequest{To: green, Steps: []int{10, 50, 100}, StepInterval: 200 * time.Millisecond, MinRequests: 10, MaxHeld: 1}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		rec.Record(green, 200, time.Millisecond, stats.FaultNone)
	}
	time.Sleep(600 * time.Millisecond) // three step intervals, a dozen evaluations
	v := ctl.RolloutStatus()
	if v.Weight != 10 || v.Phase != rollout.PhaseRunning || !strings.HasPrefix(v.Verdict, "waiting for fresh fleet counts: fleet counts unreadable") {
		t.Fatalf("with unreadable fleet counts: weight %d, phase %s, verdict %q", v.Weight, v.Phase, v.Verdict)
	}
	t.Logf("unreadable: %q", v.Verdict)
	fc.down.Store(false)
	waitFor(t, "the step to pass once the counts are read", func() bool { return ctl.RolloutStatus().Weight == 50 })
}
