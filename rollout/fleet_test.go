package rollout_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cryoprotect/bluegreen/internal/testkit"
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
	// extra returns more publications with every read: a replica id, and
	// what it published (mirror: a copy of that replica's publication).
	extra  map[string][]byte
	mirror map[string]string
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

func (m *memCounts) ReadCounts(_ context.Context, window string) ([]state.Counts, error) {
	if m.down.Load() {
		return nil, errors.New("store unavailable")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// What the Controller published is its own; extra and mirror are
	// other processes'.
	var out []state.Counts
	for k, v := range m.pubs[window] {
		out = append(out, state.Counts{Replica: k, Own: true, Data: v})
	}
	for k, v := range m.extra {
		out = append(out, state.Counts{Replica: k, Data: v})
	}
	for k, of := range m.mirror {
		if v, ok := m.pubs[window][of]; ok {
			out = append(out, state.Counts{Replica: k, Data: v})
		}
	}
	return out, nil
}

// Counts the leader cannot read fresh never pass a step, even when its own
// traffic alone would: the step waits (neither passes nor counts as held)
// until the fleet's counts are read again.
func TestFleetStaleCountsDoNotPass(t *testing.T) {
	fc := &memCounts{}
	fc.down.Store(true)
	ctl, rec := runFleetController(t, fc)
	ctx := context.Background()
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

// The sums take every valid publication of the step's window and nothing
// else: a replica's garbage, a publication of another window or with
// another histogram layout are ignored.
func TestFleetSumsOnlyValidPublications(t *testing.T) {
	fc := &memCounts{
		mirror: map[string]string{"twin": "a"}, // a second replica that saw exactly what a saw
		extra: map[string][]byte{
			"garbage": []byte("{not json"),
			"old":     []byte(`{"window":"1.0.1","buckets":89,"colors":{"green":{"requests":5000,"instance_errors":5000}}}`),
			"layout":  []byte(`{"window":"","buckets":12,"colors":{"green":{"requests":5000,"instance_errors":5000}}}`),
		},
	}
	ctl, rec := runFleetController(t, fc)
	if _, err := ctl.StartRollout(context.Background(), rollout.RolloutRequest{To: green, StepInterval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		rec.Record(green, 200, time.Duration(i+1)*time.Millisecond, stats.FaultNone)
	}
	rec.Record(green, 500, time.Millisecond, stats.FaultInstance)
	own := rec.Window(green, time.Time{})
	waitFor(t, "the twin's counts in the sums", func() bool {
		v := ctl.RolloutStatus()
		return v.Replicas == 2 && v.Colors[green].Requests == 2*own.Requests
	})
	v := ctl.RolloutStatus()
	if g := v.Colors[green]; g.InstanceErrors != 2 || g.P99 != own.P99.String() || v.FleetStale != "" {
		t.Fatalf("fleet view %+v (own %+v)", v, own)
	}
}

// Another process publishing under this replica's id (two replicas given
// one BLUEGREEN_REPLICA_ID) is counted as the other replica it is, and the
// operator is told, once, to give each its own id.
func TestFleetCountsTwinReplicaID(t *testing.T) {
	fc := &memCounts{mirror: map[string]string{"a": "a"}} // a second "a" that saw what the first saw
	logs := &testkit.Buffer{}
	ctl, rec := runFleetControllerLog(t, fc, slog.New(slog.NewJSONHandler(io.MultiWriter(logs, t.Output()), nil)))
	if _, err := ctl.StartRollout(context.Background(), rollout.RolloutRequest{To: green, StepInterval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		rec.Record(green, 200, time.Millisecond, stats.FaultNone)
	}
	own := rec.Window(green, time.Time{})
	waitFor(t, "the twin's counts in the sums", func() bool {
		v := ctl.RolloutStatus()
		return v.Replicas == 2 && v.Colors[green].Requests == 2*own.Requests
	})
	const warning = "another replica publishes rollout counts under this replica's id"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := logs.Wait(ctx, func(s string) bool { return strings.Contains(s, warning) }); err != nil {
		t.Fatalf("no warning in the log: %v\n%s", err, logs)
	}
	time.Sleep(200 * time.Millisecond) // four more reads of the twin
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Fatalf("warned %d times, want once", n)
	}
}

// runFleetController runs a Controller on a file store with fc as its
// fleet, as replica a, publishing and evaluating every 50 ms.
func runFleetController(t *testing.T, fc rollout.FleetCounts) (*rollout.Controller, *stats.Recorder) {
	t.Helper()
	return runFleetControllerLog(t, fc, testLogger(t))
}

// runFleetControllerLog is runFleetController logging to log.
func runFleetControllerLog(t *testing.T, fc rollout.FleetCounts, log *slog.Logger) (*rollout.Controller, *stats.Recorder) {
	t.Helper()
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
	}, store, &weighted{}, newFakeHealth(), m, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := ctl.Init(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); ctl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctl, rec
}
