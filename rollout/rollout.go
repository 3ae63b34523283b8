// Package rollout makes the routing decisions: cutover, rollback and
// auto-rollback. It is the only writer of the state store and the only
// caller of the router's SetActive, so the store and the live routing always
// agree: a switch is stored first (compare-and-swap on the generation) and
// applied only once stored.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/state"
)

// Errors returned by Cutover and Rollback. The admin API maps ErrInvalid to
// 400, ErrUnhealthy, ErrConflict and ErrNoPrevious to 409, ErrStore to 503.
var (
	ErrInvalid    = errors.New("invalid request")
	ErrUnhealthy  = errors.New("target colour has no healthy instance")
	ErrConflict   = errors.New("generation conflict")
	ErrNoPrevious = errors.New("no previous colour to roll back to")
	ErrStore      = errors.New("state store unavailable")
)

// Router applies a routing decision to the data plane.
type Router interface {
	SetActive(color string, generation uint64) error
}

// Leadership tells whether this replica may run auto-rollback. In a fleet
// sharing one store exactly one replica holds it (an election); a nil
// Leadership in Config means this replica always leads (a single proxy).
// IsLeader must be cheap and safe for concurrent use.
type Leadership interface {
	IsLeader() bool
}

// HealthView tells how healthy each colour's instances are.
type HealthView interface {
	Healthy(color string) int
	Instances(color string) []health.InstanceStatus
}

// Config configures a Controller.
type Config struct {
	Colors       [2]string     // the two colour names, e.g. blue and green
	InitialColor string        // active colour when the store is empty
	AutoRollback bool          // roll back when the new colour goes bad within Window
	Window       time.Duration // watch window after a cutover
	HistoryLimit int           // switches kept in the state; default 100
	Leadership   Leadership    // nil: always leader
	// Progressive rollouts: Stats reads the data plane's per-colour
	// windows (nil: no analysis, steps never pass by themselves);
	// AnalysisEvery is the time between evaluations (default and maximum
	// MaxAnalysisEvery).
	Stats         Stats
	AnalysisEvery time.Duration
	// Fleet, set when the store is shared by a fleet (state/etcd), makes
	// the analysis fleet-wide: while a rollout runs, every PublishEvery
	// (default DefaultPublishEvery, at most AnalysisEvery) this replica
	// publishes its counts of the step's window as Replica and reads the
	// others'; the leader judges the sum. Needs Stats to be a
	// HistogramStats. nil: this replica's own counts only.
	Fleet        FleetCounts
	Replica      string
	PublishEvery time.Duration
	// HoldAfter, with Fleet: once this replica has failed to publish its
	// counts for this long (the lease they hang on expires after about
	// that, so the leader no longer sees its traffic, and an abort would
	// not reach it either), it holds its rollout traffic on the stable
	// colour until it publishes again, then routes at the stored weight.
	// Default (0): 3 × PublishEvery.
	HoldAfter time.Duration
}

// Request asks for a switch.
type Request struct {
	To         string  // target colour; "" means the other colour (cutover) or the previous one (rollback)
	Force      bool    // skip the target health check
	Reason     string  // recorded in history
	Trigger    string  // state.TriggerAPI (default), state.TriggerCLI
	Generation *uint64 // when set, the switch happens only if the current generation equals it
}

// Result is the outcome of a switch request.
type Result struct {
	Changed bool
	State   state.State
}

// Controller owns the active colour. Cutover, Rollback and the auto-rollback
// loop are serialised by one mutex; the router, the store and the metrics are
// called with it held, which is safe because none of them calls back. State
// and Snapshot are safe for concurrent use.
type Controller struct {
	cfg     Config
	store   state.Store
	router  Router
	health  HealthView
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time

	kick chan struct{} // health changed; buffered 1

	mu         sync.Mutex
	cur        state.State // last state stored and applied
	refusedGen uint64      // generation whose data-plane rollback was refused and logged
	held       bool        // cut off from the fleet: no rollout weight (Config.HoldAfter)

	fleet fleetView // the other replicas' counts (Config.Fleet)
}

// New returns a Controller. Call Init before serving traffic and Run to
// process health changes and state changes made by other replicas.
func New(cfg Config, store state.Store, router Router, hv HealthView, m *Metrics, log *slog.Logger, now func() time.Time) (*Controller, error) {
	if cfg.Colors[0] == "" || cfg.Colors[1] == "" || cfg.Colors[0] == cfg.Colors[1] {
		return nil, fmt.Errorf("rollout: need two distinct colours, got %q", cfg.Colors)
	}
	if !slices.Contains(cfg.Colors[:], cfg.InitialColor) {
		return nil, fmt.Errorf("rollout: initial colour %q is not one of %q", cfg.InitialColor, cfg.Colors)
	}
	if cfg.HistoryLimit <= 0 {
		cfg.HistoryLimit = 100
	}
	if cfg.AnalysisEvery <= 0 || cfg.AnalysisEvery > MaxAnalysisEvery {
		cfg.AnalysisEvery = MaxAnalysisEvery
	}
	if now == nil {
		now = time.Now
	}
	if cfg.Fleet != nil {
		if _, ok := cfg.Stats.(HistogramStats); !ok {
			return nil, errors.New("rollout: fleet counts need Stats with latency histograms (HistogramStats)")
		}
		if cfg.Replica == "" || strings.Contains(cfg.Replica, "/") {
			return nil, fmt.Errorf("rollout: fleet counts need a replica id without /, got %q", cfg.Replica)
		}
		if cfg.PublishEvery <= 0 || cfg.PublishEvery > cfg.AnalysisEvery {
			cfg.PublishEvery = min(DefaultPublishEvery, cfg.AnalysisEvery)
		}
		if cfg.HoldAfter <= 0 {
			cfg.HoldAfter = 3 * cfg.PublishEvery
		}
	}
	if store == nil || router == nil || hv == nil || log == nil {
		return nil, errors.New("rollout: store, router, health view and logger are required")
	}
	m.prepare(cfg.Colors)
	return &Controller{cfg: cfg, store: store, router: router, health: hv, metrics: m, log: log, now: now, kick: make(chan struct{}, 1)}, nil
}

// Init loads the stored state and applies it. An empty store is initialised
// with the initial colour at generation 1 (so the choice is durable from the
// first start and a write problem shows at once). A stored state that cannot
// be read, or that names an unknown colour, is an error: it never falls back
// to the initial colour.
func (c *Controller) Init(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.store.Load(ctx)
	switch {
	case errors.Is(err, state.ErrNotFound):
		st = state.State{Active: c.cfg.InitialColor, Generation: 1, ChangedAt: c.now().UTC()}
		if err := c.store.CompareAndSwap(ctx, 0, st); err != nil {
			if !errors.Is(err, state.ErrConflict) {
				return fmt.Errorf("initialise state: %w", err)
			}
			// Another replica initialised it first: use theirs.
			if st, err = c.store.Load(ctx); err != nil {
				return fmt.Errorf("load state: %w", err)
			}
		}
	case err != nil:
		return fmt.Errorf("load state: %w", err)
	}
	if err := c.validate(st); err != nil {
		return err
	}
	if err := c.route(st); err != nil {
		return fmt.Errorf("apply state: %w", err)
	}
	c.cur = st
	c.metrics.applied(st, c.cfg.Colors, c.routedWeight(st))
	c.log.Info("state loaded", "active", st.Active, "previous", st.Previous, "generation", st.Generation)
	return nil
}

func (c *Controller) validate(st state.State) error {
	if !slices.Contains(c.cfg.Colors[:], st.Active) {
		return fmt.Errorf("stored state: active colour %q is not one of %q", st.Active, c.cfg.Colors)
	}
	if st.Previous != "" && !slices.Contains(c.cfg.Colors[:], st.Previous) {
		return fmt.Errorf("stored state: previous colour %q is not one of %q", st.Previous, c.cfg.Colors)
	}
	if r := st.Rollout; r != nil && (!slices.Contains(c.cfg.Colors[:], r.To) || r.From != st.Active) {
		return fmt.Errorf("stored state: rollout from %q to %q does not match active colour %q", r.From, r.To, st.Active)
	}
	return nil
}

// State returns the state last applied.
func (c *Controller) State() state.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *Controller) other(color string) string {
	if color == c.cfg.Colors[0] {
		return c.cfg.Colors[1]
	}
	return c.cfg.Colors[0]
}

// Cutover switches live traffic to req.To (default: the idle colour).
func (c *Controller) Cutover(ctx context.Context, req Request) (Result, error) {
	if err := checkTrigger(req); err != nil {
		return Result{State: c.State()}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.To == "" {
		req.To = c.other(c.cur.Active)
	}
	return c.switchLocked(ctx, state.ActionCutover, req)
}

// Rollback switches live traffic back to the previous colour.
func (c *Controller) Rollback(ctx context.Context, req Request) (Result, error) {
	if err := checkTrigger(req); err != nil {
		return Result{State: c.State()}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.To == "" {
		if c.cur.Previous == "" {
			c.metrics.count(c.cur.Active, "", triggerOf(req), resultRejected)
			return Result{State: c.cur}, ErrNoPrevious
		}
		req.To = c.cur.Previous
	}
	return c.switchLocked(ctx, state.ActionRollback, req)
}

// checkTrigger rejects a trigger a caller may not set: anything but api
// and cli. The auto-rollback trigger is reserved to the controller, so the
// history cannot be made to show an auto-rollback that never happened, and
// the trigger label of bluegreen_cutovers_total only takes known values.
func checkTrigger(req Request) error {
	switch triggerOf(req) {
	case state.TriggerAPI, state.TriggerCLI:
		return nil
	}
	return fmt.Errorf("%w: unknown trigger %q: expected %q or %q", ErrInvalid, req.Trigger, state.TriggerAPI, state.TriggerCLI)
}

func triggerOf(req Request) string {
	if req.Trigger == "" {
		return state.TriggerAPI
	}
	return req.Trigger
}

// Results counted in bluegreen_cutovers_total.
const (
	resultSuccess  = "success"
	resultNoop     = "noop"
	resultRejected = "rejected"
	resultError    = "error"
)

func (c *Controller) switchLocked(ctx context.Context, action string, req Request) (Result, error) {
	cur := c.cur
	trigger := triggerOf(req)
	switch trigger {
	case state.TriggerAPI, state.TriggerCLI, state.TriggerAutoRollback:
	default:
		return Result{State: cur}, fmt.Errorf("%w: unknown trigger %q", ErrInvalid, req.Trigger)
	}
	if !slices.Contains(c.cfg.Colors[:], req.To) {
		return Result{State: cur}, fmt.Errorf("%w: unknown colour %q: expected %q or %q", ErrInvalid, req.To, c.cfg.Colors[0], c.cfg.Colors[1])
	}
	if req.Generation != nil && *req.Generation != cur.Generation {
		c.metrics.count(cur.Active, req.To, trigger, resultRejected)
		return Result{State: cur}, fmt.Errorf("%w: expected generation %d, current is %d", ErrConflict, *req.Generation, cur.Generation)
	}
	if req.To == cur.Active {
		c.metrics.count(cur.Active, req.To, trigger, resultNoop)
		return Result{State: cur}, nil
	}
	if !req.Force && c.health.Healthy(req.To) == 0 {
		c.metrics.count(cur.Active, req.To, trigger, resultRejected)
		return Result{State: cur}, fmt.Errorf("%w: %s (use force to switch anyway)", ErrUnhealthy, req.To)
	}
	now := c.now().UTC()
	next := state.State{
		Active:     req.To,
		Previous:   cur.Active,
		Generation: cur.Generation + 1,
		ChangedAt:  now,
		// An explicit switch ends a rollout in progress: the switch wins.
		LastRollout: c.endRollout(cur, action, req.To, trigger),
	}
	hist := cur.History
	if len(hist) >= c.cfg.HistoryLimit {
		hist = hist[len(hist)-c.cfg.HistoryLimit+1:]
	}
	next.History = append(slices.Clip(hist), state.Event{
		Time: now, Action: action, From: cur.Active, To: req.To,
		Trigger: trigger, Reason: req.Reason, Generation: next.Generation, Forced: req.Force,
	})
	if err := c.store.CompareAndSwap(ctx, cur.Generation, next); err != nil {
		if errors.Is(err, state.ErrConflict) {
			c.metrics.count(cur.Active, req.To, trigger, resultRejected)
			c.log.Warn("switch lost a race with another writer", "action", action, "to", req.To, "err", err)
			return Result{State: cur}, fmt.Errorf("%w: %v", ErrConflict, err)
		}
		c.metrics.count(cur.Active, req.To, trigger, resultError)
		c.log.Error("switch not stored; routing unchanged", "action", action, "from", cur.Active, "to", req.To, "err", err)
		return Result{State: cur}, fmt.Errorf("%w: %v", ErrStore, err)
	}
	c.applyLocked(next)
	c.metrics.count(cur.Active, req.To, trigger, resultSuccess)
	c.log.Warn(action, "from", cur.Active, "to", req.To, "trigger", trigger, "reason", req.Reason, "generation", next.Generation, "forced", req.Force)
	return Result{Changed: true, State: next}, nil
}

// applyLocked routes by st. The router only fails for an unknown colour,
// which validate and switchLocked exclude.
func (c *Controller) applyLocked(st state.State) {
	if err := c.route(st); err != nil {
		c.log.Error("apply state", "err", err)
		return
	}
	c.cur = st
	c.metrics.applied(st, c.cfg.Colors, c.routedWeight(st))
}

// route applies st's active colour and rollout weight in one call when the
// router can weigh, else the active colour alone. Under c.mu.
func (c *Controller) route(st state.State) error {
	if wr, ok := c.router.(WeightedRouter); ok {
		return wr.SetActiveWeighted(st.Active, st.Generation, c.routedWeight(st))
	}
	return c.router.SetActive(st.Active, st.Generation)
}

// routedWeight is the rollout weight this replica routes by st: none while
// it holds (cut off from the fleet, Config.HoldAfter). Under c.mu.
func (c *Controller) routedWeight(st state.State) int {
	if c.held {
		return 0
	}
	return weightOf(st)
}

// HealthChanged tells the controller that some instance changed health. It
// never blocks; wire it into the health checkers' Reporter.
func (c *Controller) HealthChanged() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// LeaderChanged tells the controller that this replica gained or lost the
// leadership, so a new leader evaluates auto-rollback at once instead of
// waiting for the next health change. It never blocks.
func (c *Controller) LeaderChanged() { c.HealthChanged() }

// leads reports whether this replica may run auto-rollback.
func (c *Controller) leads() bool {
	return c.cfg.Leadership == nil || c.cfg.Leadership.IsLeader()
}

// Run evaluates auto-rollback after health changes and applies states that
// other writers stored (a fleet of proxies sharing one store), until ctx
// ends.
func (c *Controller) Run(ctx context.Context) {
	if c.cfg.Fleet != nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wg.Go(func() { c.runFleet(ctx) })
	}
	updates := c.store.Watch(ctx)
	tick := time.NewTicker(c.cfg.AnalysisEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			c.EvaluateRollout(ctx)
		case <-c.kick:
			c.maybeRollback(ctx)
			c.EvaluateRollout(ctx)
		case st, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			c.adopt(st)
		}
	}
}

// adopt applies a state stored by another writer if it is newer.
func (c *Controller) adopt(st state.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.Generation <= c.cur.Generation {
		return
	}
	if err := c.validate(st); err != nil {
		c.log.Error("ignoring stored state", "err", err)
		return
	}
	from := c.cur.Active
	c.applyLocked(st)
	c.log.Warn("applied state from store", "from", from, "to", st.Active, "generation", st.Generation)
}

// inspect counts the healthy instances of color and reports whether every
// instance has been probed at least once (before that, "no healthy instance"
// only means "not checked yet"). Both come from one reading of each
// instance, so they agree with each other.
func (c *Controller) inspect(color string) (healthy int, probed bool) {
	probed = true
	for _, in := range c.health.Instances(color) {
		if in.Healthy {
			healthy++
		}
		probed = probed && in.Checked
	}
	return healthy, probed
}

// maybeRollback switches back when the colour made active by a cutover has
// lost every healthy instance within the watch window and the previous
// colour has a healthy one. A forced cutover, a rollback and an
// auto-rollback are never rolled back automatically. Only the leader (see
// Leadership) rolls back; the others follow its decision through the store.
func (c *Controller) maybeRollback(ctx context.Context) {
	if !c.cfg.AutoRollback || !c.leads() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.cur
	if !c.rollbackAllowedLocked(cur) {
		return
	}
	if healthy, probed := c.inspect(cur.Active); healthy > 0 || !probed {
		return // still healthy, or not every instance has answered a probe yet (start-up)
	}
	if c.health.Healthy(cur.Previous) == 0 {
		c.log.Error("active colour has no healthy instance and the previous one neither; not rolling back", "active", cur.Active, "previous", cur.Previous)
		return
	}
	reason := fmt.Sprintf("%s lost every healthy instance %s after the cutover (window %s)", cur.Active, c.now().Sub(cur.ChangedAt).Round(time.Millisecond), c.cfg.Window)
	if _, err := c.switchLocked(ctx, state.ActionRollback, Request{To: cur.Previous, Reason: reason, Trigger: state.TriggerAutoRollback}); err != nil {
		c.log.Error("auto-rollback failed", "to", cur.Previous, "err", err)
	}
}
