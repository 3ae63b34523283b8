package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/stats"
	"github.com/cryoprotect/bluegreen/state"
)

// FleetCounts is the optional side of a state store that a fleet of
// replicas shares (state/etcd implements it): while a rollout runs, every
// replica publishes its counts of the current step's window, and the
// analysis sums them.
//
// PublishCounts stores one replica's counts of window (replacing its
// earlier publication, of this window or an older one) so that they vanish
// when the replica dies or loses the store: in etcd, under the replica's
// own lease. WithdrawCounts removes them (the rollout ended). ReadCounts
// returns every live publication of window, this process's marked Own: a
// publication of another process under this replica's id (two replicas
// given one BLUEGREEN_REPLICA_ID) is another replica's counts. window and
// replica contain no "/".
type FleetCounts interface {
	PublishCounts(ctx context.Context, window, replica string, data []byte) error
	WithdrawCounts(ctx context.Context, replica string) error
	ReadCounts(ctx context.Context, window string) ([]state.Counts, error)
}

// HistogramStats is a Stats that also gives a window's latency histogram,
// so that the windows of the replicas of a fleet can be summed into a true
// fleet p99 (a p99 cannot be averaged). *stats.Recorder implements it.
type HistogramStats interface {
	Stats
	WindowHistogram(color string, since time.Time) (stats.Summary, stats.Histogram)
}

// RecorderStats is the data plane's *stats.Recorder as the analysis reads
// it: a HistogramStats.
type RecorderStats struct{ R *stats.Recorder }

// Window implements Stats.
func (s RecorderStats) Window(color string, since time.Time) (requests, instanceErrors int64, p99 time.Duration) {
	sum := s.R.Window(color, since)
	return sum.Requests, sum.InstanceErrors, sum.P99
}

// WindowHistogram implements HistogramStats.
func (s RecorderStats) WindowHistogram(color string, since time.Time) (stats.Summary, stats.Histogram) {
	return s.R.WindowHistogram(color, since)
}

// DefaultPublishEvery is how often a replica of a fleet publishes its
// counts and reads the others' (Config.PublishEvery).
const DefaultPublishEvery = time.Second

// windowID names the analysis window of r: the rollout (its start), the
// step and when the step's window began (a resume starts it afresh).
// Counts published for another window are never summed with this one's.
func windowID(r *state.Rollout) string {
	return strconv.FormatInt(r.StartedAt.UnixNano(), 10) + "." + strconv.Itoa(r.Step) + "." + strconv.FormatInt(r.StepStartedAt.UnixNano(), 10)
}

// publication is what a replica publishes: its own counts of one window.
type publication struct {
	Window  string               `json:"window"`
	At      time.Time            `json:"at"`
	Buckets int                  `json:"buckets"` // stats.HistBuckets of the publisher
	Colors  map[string]pubCounts `json:"colors"`
}

type pubCounts struct {
	Requests       int64 `json:"requests"`
	InstanceErrors int64 `json:"instance_errors"`
	// Hist lists the non-empty latency buckets as [index, count].
	Hist [][2]int64 `json:"hist,omitempty"`
}

// counts is one colour's traffic in a window: the sum over replicas.
type counts struct {
	requests, errs int64
	hist           stats.Histogram
}

func (n *counts) add(o *counts) {
	n.requests += o.requests
	n.errs += o.errs
	n.hist.Add(&o.hist)
}

func (n *counts) wire() pubCounts {
	p := pubCounts{Requests: n.requests, InstanceErrors: n.errs}
	for i, c := range n.hist {
		if c != 0 {
			p.Hist = append(p.Hist, [2]int64{int64(i), c})
		}
	}
	return p
}

func (p pubCounts) counts() (counts, error) {
	n := counts{requests: p.Requests, errs: p.InstanceErrors}
	if p.Requests < 0 || p.InstanceErrors < 0 {
		return n, errors.New("negative count")
	}
	for _, b := range p.Hist {
		if b[0] < 0 || b[0] >= stats.HistBuckets || b[1] < 0 {
			return n, fmt.Errorf("histogram bucket %v out of range", b)
		}
		n.hist[b[0]] += b[1]
	}
	return n, nil
}

// fleetView is the last read of the other replicas' publications.
type fleetView struct {
	mu       sync.Mutex
	window   string            // the window read; "" before the first good read
	readAt   time.Time         // when that read was sent
	others   map[string]counts // by colour, summed over the other replicas
	replicas []string          // the other replicas counted
	err      error             // the last read's error, nil after a good read
	withdraw bool              // this replica has a publication to withdraw
	lastPub  time.Time         // the last publication that went through (or the first try of this rollout's)
	ignored  map[string]bool   // replicas whose publication of window was logged as ignored
	twin     bool              // the last read held another process's publication under this replica's id
}

// ownCounts reads this replica's counts of color in r's window.
func (c *Controller) ownCounts(color string, since time.Time) counts {
	s, h := c.cfg.Stats.(HistogramStats).WindowHistogram(color, since)
	return counts{requests: s.Requests, errs: s.InstanceErrors, hist: h}
}

// runFleet publishes this replica's counts and reads the fleet's every
// PublishEvery while a rollout runs, until ctx ends.
func (c *Controller) runFleet(ctx context.Context) {
	t := time.NewTicker(c.cfg.PublishEvery)
	defer t.Stop()
	for {
		c.syncFleet(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncFleet publishes this replica's counts of the current window, then
// reads every replica's publications of it and keeps the others' sum for
// the analysis. Without a rollout it withdraws its last publication.
func (c *Controller) syncFleet(ctx context.Context) {
	c.mu.Lock()
	r := c.cur.Rollout // never modified once stored
	c.mu.Unlock()
	fv := &c.fleet
	if r == nil {
		fv.mu.Lock()
		withdraw := fv.withdraw
		fv.window, fv.others, fv.replicas, fv.err, fv.lastPub, fv.twin = "", nil, nil, nil, time.Time{}, false
		fv.mu.Unlock()
		c.hold(false, nil)
		if withdraw {
			if err := c.cfg.Fleet.WithdrawCounts(ctx, c.cfg.Replica); err != nil {
				c.log.Debug("rollout counts not withdrawn; they expire with the lease", "err", err)
			} else {
				fv.mu.Lock()
				fv.withdraw = false
				fv.mu.Unlock()
			}
		}
		return
	}
	w := windowID(r)
	p := publication{Window: w, At: c.now().UTC(), Buckets: stats.HistBuckets, Colors: map[string]pubCounts{}}
	for _, color := range []string{r.To, r.From} {
		own := c.ownCounts(color, r.StepStartedAt)
		p.Colors[color] = own.wire()
	}
	tried := c.now()
	data, err := json.Marshal(p)
	if err == nil {
		err = c.cfg.Fleet.PublishCounts(ctx, w, c.cfg.Replica, data)
	}
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("rollout counts not published", "replica", c.cfg.Replica, "err", err)
		}
		fv.mu.Lock()
		if fv.lastPub.IsZero() {
			fv.lastPub = tried
		}
		cut := c.now().Sub(fv.lastPub) >= c.cfg.HoldAfter
		fv.mu.Unlock()
		if cut && ctx.Err() == nil {
			c.hold(true, err)
		}
	} else {
		fv.mu.Lock()
		fv.withdraw, fv.lastPub = true, tried
		fv.mu.Unlock()
		c.hold(false, nil)
	}
	sent := c.now()
	got, err := c.cfg.Fleet.ReadCounts(ctx, w)
	fv.mu.Lock()
	defer fv.mu.Unlock()
	if err != nil {
		if fv.err == nil && ctx.Err() == nil {
			c.log.Warn("fleet rollout counts unreadable: no step passes until they are read again", "err", err)
		}
		fv.err = err
		return
	}
	if fv.window != w {
		fv.ignored = map[string]bool{}
	}
	ignore := func(id string, args ...any) {
		if !fv.ignored[id] {
			fv.ignored[id] = true
			c.log.Warn("ignoring a replica's rollout counts", append([]any{"replica", id}, args...)...)
		}
	}
	others := map[string]counts{}
	var replicas []string
	twin := false
	for _, pub := range got {
		if pub.Own {
			continue // our own counts are read live
		}
		id, data := pub.Replica, pub.Data
		if id == c.cfg.Replica {
			twin = true
			id += " (another process)"
		}
		var p publication
		if err := json.Unmarshal(data, &p); err != nil || p.Window != w || p.Buckets != stats.HistBuckets {
			ignore(id, "window", p.Window, "buckets", p.Buckets, "err", err)
			continue
		}
		sum := map[string]counts{}
		ok := true
		for color, pc := range p.Colors {
			n, err := pc.counts()
			if err != nil {
				ignore(id, "err", err)
				ok = false
				break
			}
			sum[color] = n
		}
		if !ok {
			continue
		}
		for color, n := range sum {
			acc := others[color]
			acc.add(&n)
			others[color] = acc
		}
		replicas = append(replicas, id)
	}
	if twin && !fv.twin {
		c.log.Error("another replica publishes rollout counts under this replica's id: both are counted, but logs and status pages cannot tell them apart; give each replica its own BLUEGREEN_REPLICA_ID",
			"replica", c.cfg.Replica)
	}
	fv.twin = twin
	slices.Sort(replicas)
	fv.window, fv.readAt, fv.others, fv.replicas, fv.err = w, sent, others, replicas, nil
}

// hold starts or ends holding this replica's rollout traffic on the stable
// colour (Config.HoldAfter); err is why it starts.
func (c *Controller) hold(on bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == on {
		return
	}
	c.held = on
	if on {
		c.log.Warn("cut off from the fleet: this replica's rollout traffic is held on the stable colour until its counts are published again",
			"replica", c.cfg.Replica, "for", c.cfg.HoldAfter, "err", err)
	} else {
		c.log.Warn("back in the fleet: rollout traffic at the stored weight again", "replica", c.cfg.Replica)
	}
	c.applyLocked(c.cur)
}

// staleAfter is how old the last read of the fleet's counts may be for a
// step to pass: three publication periods.
func (c *Controller) staleAfter() time.Duration { return 3 * c.cfg.PublishEvery }

// fleetCounts adds the other replicas' counts of r's window to target and
// base. It returns how many replicas contributed (this one included) and,
// when the counts are not fresh enough for a step to pass, why.
func (c *Controller) fleetCounts(r *state.Rollout, now time.Time, target, base *counts) (replicas int, stale string) {
	fv := &c.fleet
	fv.mu.Lock()
	defer fv.mu.Unlock()
	w := windowID(r)
	if fv.window != w {
		if fv.err != nil {
			return 1, "fleet counts unreadable: " + fv.err.Error()
		}
		return 1, "fleet counts of this step not read yet"
	}
	t, b := fv.others[r.To], fv.others[r.From]
	target.add(&t)
	base.add(&b)
	replicas = 1 + len(fv.replicas)
	switch age := now.Sub(fv.readAt); {
	case fv.err != nil && age > c.staleAfter():
		return replicas, fmt.Sprintf("fleet counts last read %s ago: %v", age.Round(time.Millisecond), fv.err)
	case age > c.staleAfter():
		return replicas, fmt.Sprintf("fleet counts last read %s ago", age.Round(time.Millisecond))
	}
	return replicas, ""
}
