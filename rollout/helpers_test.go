package rollout_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	blue  = "blue"
	green = "green"
)

var colors = [2]string{blue, green}

// t0 is the fake clock's start: a whole second plus a fraction, so the
// last-cutover gauge shows whether sub-second precision survives.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 500_000_000, time.UTC)

// route is one SetActive call.
type route struct {
	Color      string
	Generation uint64
}

// fakeRouter records SetActive calls; it fails with err when err is set.
type fakeRouter struct {
	mu    sync.Mutex
	calls []route
	err   error
}

func (r *fakeRouter) SetActive(color string, generation uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.calls = append(r.calls, route{color, generation})
	return nil
}

// Calls returns a copy of the SetActive calls so far.
func (r *fakeRouter) Calls() []route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// fakeHealth reports a settable number of healthy instances per colour.
type fakeHealth struct {
	mu        sync.Mutex
	healthy   map[string]int
	unchecked map[string]int // instances not probed yet, listed after the healthy ones
}

func newFakeHealth() *fakeHealth {
	return &fakeHealth{healthy: map[string]int{blue: 2, green: 2}}
}

// SetUnchecked lists n instances of color that have not been probed yet.
func (h *fakeHealth) SetUnchecked(color string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unchecked == nil {
		h.unchecked = map[string]int{}
	}
	h.unchecked[color] = n
}

func (h *fakeHealth) Set(color string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.healthy[color] = n
}

func (h *fakeHealth) Healthy(color string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthy[color]
}

func (h *fakeHealth) Instances(color string) []health.InstanceStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]health.InstanceStatus, 0, h.healthy[color])
	for range h.healthy[color] {
		out = append(out, health.InstanceStatus{URL: "http://" + color, Healthy: true, Checked: true})
	}
	for range h.unchecked[color] {
		out = append(out, health.InstanceStatus{URL: "http://" + color})
	}
	return out
}

// fakeClock is a clock the test advances by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// faultStore is a FileStore whose CompareAndSwap can be made to fail and
// whose Watch channel the test can own.
type faultStore struct {
	*state.FileStore

	mu        sync.Mutex
	casErr    error            // when set, CompareAndSwap returns it and stores nothing
	beforeCAS func()           // when set, runs once before the next CompareAndSwap
	casCalls  int              // CompareAndSwap calls, failed ones included
	watch     chan state.State // when set, Watch returns it
}

func (s *faultStore) CompareAndSwap(ctx context.Context, expect uint64, next state.State) error {
	s.mu.Lock()
	s.casCalls++
	err, hook := s.casErr, s.beforeCAS
	s.beforeCAS = nil
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err != nil {
		return err
	}
	return s.FileStore.CompareAndSwap(ctx, expect, next)
}

func (s *faultStore) Watch(ctx context.Context) <-chan state.State {
	s.mu.Lock()
	ch := s.watch
	s.mu.Unlock()
	if ch != nil {
		return ch
	}
	return s.FileStore.Watch(ctx)
}

// failCAS makes every following CompareAndSwap return err (nil: succeed).
func (s *faultStore) failCAS(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.casErr = err
}

func (s *faultStore) CASCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.casCalls
}

// env is a Controller over a FileStore in a fresh directory with fake
// router, health view (both colours healthy) and clock, and its own
// metrics registry.
type env struct {
	cfg    rollout.Config
	path   string
	file   *state.FileStore
	store  *faultStore
	router *fakeRouter
	health *fakeHealth
	clock  *fakeClock
	reg    *prometheus.Registry
	ctl    *rollout.Controller
}

func testConfig() rollout.Config {
	return rollout.Config{
		Colors:       colors,
		InitialColor: blue,
		AutoRollback: true,
		Window:       5 * time.Minute,
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newEnv returns an env whose Controller has not been initialised.
func newEnv(t *testing.T, cfg rollout.Config) *env {
	t.Helper()
	return newEnvAt(t, cfg, filepath.Join(t.TempDir(), "state.json"))
}

// newEnvAt is newEnv over the state file at path, as a process restarted
// on the same file would see it.
func newEnvAt(t *testing.T, cfg rollout.Config, path string) *env {
	t.Helper()
	file, err := state.NewFileStore(path)
	if err != nil {
		t.Fatalf("NewFileStore: %v", err)
	}
	t.Cleanup(func() { _ = file.Close() })
	e := &env{
		cfg:    cfg,
		path:   path,
		file:   file,
		store:  &faultStore{FileStore: file},
		router: &fakeRouter{},
		health: newFakeHealth(),
		clock:  &fakeClock{now: t0},
		reg:    prometheus.NewRegistry(),
	}
	m, err := rollout.NewMetrics(e.reg)
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	e.ctl, err = rollout.New(cfg, e.store, e.router, e.health, m, testLogger(t), e.clock.Now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// startedEnv returns an env whose Controller has been initialised on an
// empty store: blue active at generation 1.
func startedEnv(t *testing.T, cfg rollout.Config) *env {
	t.Helper()
	e := newEnv(t, cfg)
	if err := e.ctl.Init(t.Context()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return e
}

// cutover runs a Cutover that must succeed and change the active colour.
func (e *env) cutover(t *testing.T, req rollout.Request) state.State {
	t.Helper()
	res, err := e.ctl.Cutover(t.Context(), req)
	if err != nil {
		t.Fatalf("Cutover(%+v): %v", req, err)
	}
	if !res.Changed {
		t.Fatalf("Cutover(%+v): Changed = false", req)
	}
	return res.State
}

// rollback runs a Rollback that must succeed and change the active colour.
func (e *env) rollback(t *testing.T, req rollout.Request) state.State {
	t.Helper()
	res, err := e.ctl.Rollback(t.Context(), req)
	if err != nil {
		t.Fatalf("Rollback(%+v): %v", req, err)
	}
	if !res.Changed {
		t.Fatalf("Rollback(%+v): Changed = false", req)
	}
	return res.State
}

// stored loads the state file through a FileStore of its own.
func (e *env) stored(t *testing.T) state.State {
	t.Helper()
	fs, err := state.NewFileStore(e.path)
	if err != nil {
		t.Fatalf("NewFileStore: %v", err)
	}
	st, err := fs.Load(t.Context())
	if err != nil {
		t.Fatalf("load %s: %v", e.path, err)
	}
	return st
}

// fileBytes returns the state file's content (nil when it does not exist).
func (e *env) fileBytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(e.path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read %s: %v", e.path, err)
	}
	return b
}

// assertFile fails unless the state file holds exactly want.
func (e *env) assertFile(t *testing.T, want []byte) {
	t.Helper()
	if got := e.fileBytes(t); !bytes.Equal(got, want) {
		t.Errorf("state file changed:\n got %s\nwant %s", got, want)
	}
}

// assertRoutes fails unless the router saw exactly want.
func (e *env) assertRoutes(t *testing.T, want ...route) {
	t.Helper()
	if got := e.router.Calls(); !slices.Equal(got, want) {
		t.Errorf("router calls = %v, want %v", got, want)
	}
}

// writeState stores st in a fresh state file at path, as another process
// would have left it.
func writeState(t *testing.T, path string, st state.State) {
	t.Helper()
	data, err := state.Encode(st)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// equalState compares two states, times by instant.
func equalState(a, b state.State) bool {
	return a.Active == b.Active && a.Previous == b.Previous &&
		a.Generation == b.Generation && a.ChangedAt.Equal(b.ChangedAt) &&
		slices.EqualFunc(a.History, b.History, equalEvent)
}

func equalEvent(a, b state.Event) bool {
	at, bt := a.Time, b.Time
	a.Time, b.Time = time.Time{}, time.Time{}
	return a == b && at.Equal(bt)
}

// metric returns the value of the counter or gauge name with exactly the
// labels given as name/value pairs, and whether that series exists.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: odd label list %q", name, labels)
	}
	want := map[string]string{}
	for i := 0; i < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := m.GetLabel()
			match := len(got) == len(want)
			for _, lp := range got {
				if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
					match = false
				}
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			default:
				t.Fatalf("metric %s is neither a counter nor a gauge", name)
			}
		}
	}
	return 0, false
}

// assertMetric fails unless the series exists with value want.
func assertMetric(t *testing.T, reg prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := metric(t, reg, name, labels...)
	if !ok {
		t.Errorf("%s%q: no such series", name, labels)
		return
	}
	if got != want {
		t.Errorf("%s%q = %v, want %v", name, labels, got, want)
	}
}

// cutovers returns bluegreen_cutovers_total{from,to,trigger,result}, 0 when
// the series does not exist.
func cutovers(t *testing.T, reg prometheus.Gatherer, from, to, trigger, result string) float64 {
	t.Helper()
	v, _ := metric(t, reg, "bluegreen_cutovers_total", "from", from, "to", to, "trigger", trigger, "result", result)
	return v
}

// cutoverSeries returns the number of bluegreen_cutovers_total series.
func cutoverSeries(t *testing.T, reg prometheus.Gatherer) int {
	t.Helper()
	n, _ := cutoverTotals(t, reg, "")
	return n
}

// cutoverTotals returns the number of bluegreen_cutovers_total series with
// the given trigger ("": any) and the sum of their values.
func cutoverTotals(t *testing.T, reg prometheus.Gatherer, trigger string) (series int, sum float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != "bluegreen_cutovers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := trigger == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "trigger" && lp.GetValue() == trigger {
					match = true
				}
			}
			if match {
				series++
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return series, sum
}
