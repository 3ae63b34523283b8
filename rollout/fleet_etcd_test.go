//go:build !noetcd

package rollout_test

import (
	"context"
	"io"
	"net"
	"path"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryoprotect/bluegreen/proxy/stats"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/cryoprotect/bluegreen/state/etcd"
	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

// Fleet timings: a replica publishes every 100 ms, the leader evaluates
// every 100 ms, and a replica's counts outlive it by at most 2 s.
const (
	fleetEvery = 100 * time.Millisecond
	fleetTTL   = 2 * time.Second
)

// replica is one proxy of a fleet: its own etcd store and election, its
// own data-plane counters (a real stats.Recorder) and its Controller.
type replica struct {
	id     string
	store  *etcd.Store
	rec    *stats.Recorder
	ctl    *rollout.Controller
	lead   *etcd.Leader // nil: this replica does not campaign
	router *weighted
	reg    *prometheus.Registry
	stop   func()
}

// startReplica starts a replica on the etcd at spec; campaign makes it a
// candidate for the leadership.
func startReplica(t *testing.T, spec, id string, campaign bool) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	es, err := etcd.Open(ctx, spec, etcd.Options{OpTimeout: time.Second, CountsTTL: fleetTTL})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{id: id, store: es, rec: stats.New(colors[:], time.Now), router: &weighted{}}
	// The election's callback may run before the controller exists, on
	// the election's goroutine.
	var ctlOf atomic.Pointer[rollout.Controller]
	cfg := rollout.Config{
		Colors: colors, InitialColor: blue, HistoryLimit: 100,
		Stats: rollout.RecorderStats{R: r.rec}, AnalysisEvery: fleetEvery,
		Fleet: es, Replica: id, PublishEvery: fleetEvery,
		Leadership: notLeader{},
	}
	if campaign {
		r.lead = es.Elect(ctx, id, fleetTTL, func(bool) {
			if ctl := ctlOf.Load(); ctl != nil {
				ctl.LeaderChanged()
			}
		})
		cfg.Leadership = r.lead
	}
	r.reg = prometheus.NewRegistry()
	m, err := rollout.NewMetrics(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := rollout.New(cfg, es, r.router, newFakeHealth(), m, testLogger(t).With("replica", id), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctlOf.Store(ctl)
	if err := ctl.Init(ctx); err != nil {
		t.Fatal(err)
	}
	r.ctl = ctl
	var wg sync.WaitGroup
	wg.Go(func() { ctl.Run(ctx) })
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			if r.lead != nil {
				<-r.lead.Done()
			}
			es.Close()
		})
	}
	t.Cleanup(r.stop)
	return r
}

type notLeader struct{}

func (notLeader) IsLeader() bool { return false }

// serve records n finished requests of color at this replica, every
// errEvery-th one (0: none) failed by the instance.
func (r *replica) serve(color string, n, errEvery int, latency time.Duration) {
	for i := range n {
		status, fault := 200, stats.FaultNone
		if errEvery > 0 && i%errEvery == 0 {
			status, fault = 500, stats.FaultInstance
		}
		r.rec.Record(color, status, latency, fault)
	}
}

// fleet starts an etcd and the replicas a (the leader), then the others;
// spec overrides the etcd address of a replica (see cutter).
func fleet(t *testing.T, ids ...string) (*etcdtest.Cluster, []*replica) {
	t.Helper()
	c := etcdtest.Start(t, 1)
	return c, fleetOn(t, c, nil, ids...)
}

func fleetOn(t *testing.T, c *etcdtest.Cluster, spec map[string]string, ids ...string) []*replica {
	t.Helper()
	var reps []*replica
	for i, id := range ids {
		sp := c.Spec("/fleet")
		if s, ok := spec[id]; ok {
			sp = s
		}
		r := startReplica(t, sp, id, i == 0)
		if i == 0 {
			waitFor(t, id+" to lead", r.lead.IsLeader)
		}
		reps = append(reps, r)
	}
	return reps
}

// startFleetRollout starts a rollout through r and waits until every
// replica applies it.
func startFleetRollout(t *testing.T, r *replica, req rollout.RolloutRequest, reps []*replica) {
	t.Helper()
	if _, err := r.ctl.StartRollout(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every replica to apply the rollout", func() bool {
		for _, o := range reps {
			if o.ctl.State().Rollout == nil {
				return false
			}
		}
		return true
	})
}

// The leader decides on the whole fleet's traffic: green fails 5 % of the
// requests that replica b serves, the leader a serves none, and a aborts
// the rollout on b's evidence; b applies the abort.
func TestFleetLeaderAbortsOnFollowerCounts(t *testing.T) {
	_, reps := fleet(t, "a", "b")
	a, b := reps[0], reps[1]
	startFleetRollout(t, b, rollout.RolloutRequest{To: green, Steps: []int{10, 100}, StepInterval: time.Hour, MinRequests: 200, MaxErrorRatio: 0.01}, reps)
	b.serve(blue, 2000, 0, 2*time.Millisecond)
	b.serve(green, 1000, 20, 2*time.Millisecond) // 50 of 1000 fail
	waitFor(t, "the leader to abort", func() bool { return a.ctl.State().Rollout == nil })
	st := a.ctl.State()
	last := st.History[len(st.History)-1]
	// b publishes while it records, so the leader may judge any share of
	// the 1,000 green requests from min_requests on: 5 % of them failed.
	m := regexp.MustCompile(`^green 5xx (\d+\.\d)% > 1% over (\d+) requests$`).FindStringSubmatch(last.Reason)
	if st.LastRollout.Outcome != state.OutcomeAborted || last.Trigger != state.TriggerSLOAbort || m == nil {
		t.Fatalf("leader: %+v, last event %+v", st.LastRollout, last)
	}
	if pct, _ := strconv.ParseFloat(m[1], 64); pct < 4.5 || pct > 5.5 {
		t.Fatalf("abort on %s%% errors, want about 5%%: %s", m[1], last.Reason)
	}
	if n, _ := strconv.Atoi(m[2]); n < 200 || n > 1000 {
		t.Fatalf("abort on %s green requests, want between min_requests (200) and the 1000 served: %s", m[2], last.Reason)
	}
	if own := a.rec.Window(green, time.Time{}); own.Requests != 0 {
		t.Fatalf("the leader served %d green requests itself", own.Requests)
	}
	waitFor(t, "b to apply the abort", func() bool {
		calls := b.router.Calls()
		return b.ctl.State().Rollout == nil && calls[len(calls)-1] == blue+"/0"
	})
	// The rollout ended: every replica withdraws its counts.
	waitFor(t, "the counts to be withdrawn", func() bool { return len(countsKeys(t, a.store)) == 0 })
	t.Logf("aborted by the leader on b's counts: %s", last.Reason)
}

// Traffic spread over three replicas: none alone serves min_requests to
// the target, their sum does, and the step passes. Before it passes every
// replica's view shows the fleet totals from three replicas.
func TestFleetSplitTrafficPassesStep(t *testing.T) {
	_, reps := fleet(t, "a", "b", "c")
	a := reps[0]
	startFleetRollout(t, a, rollout.RolloutRequest{To: green, Steps: []int{10, 50, 100}, StepInterval: 3 * time.Second, MinRequests: 300}, reps)
	for _, r := range reps {
		r.serve(green, 120, 0, 3*time.Millisecond)
		r.serve(blue, 1000, 0, 2*time.Millisecond)
	}
	for _, r := range reps {
		waitFor(t, r.id+"'s view of the fleet totals", func() bool {
			v := r.ctl.RolloutStatus()
			return v.Weight == 10 && v.Replicas == 3 && v.Colors[green].Requests == 360 && v.Colors[blue].Requests == 3000
		})
	}
	v := a.ctl.RolloutStatus()
	if own := a.rec.Window(green, time.Time{}); own.Requests >= 300 {
		t.Fatalf("the leader alone served %d green requests", own.Requests)
	}
	t.Logf("leader's view: %d replicas, green %+v, verdict %q", v.Replicas, v.Colors[green], v.Verdict)
	waitFor(t, "the step to pass on the fleet's 360 requests", func() bool {
		r := a.ctl.State().Rollout
		return r != nil && r.Weight == 50
	})
	// The new step's window starts empty: nothing of the last step counts.
	waitFor(t, "the new step's fleet totals", func() bool {
		v := a.ctl.RolloutStatus()
		return v.Weight == 50 && v.Replicas == 3 && v.FleetStale == ""
	})
	if v := a.ctl.RolloutStatus(); v.Colors[green].Requests != 0 {
		t.Fatalf("the new step counts %d green requests of the last one", v.Colors[green].Requests)
	}
	// One key per replica: publishing the new window removed the old one.
	waitFor(t, "one publication per replica", func() bool {
		keys := countsKeys(t, a.store)
		if len(keys) != 3 {
			return false
		}
		w := path.Dir(path.Dir(keys[0])) // <window>/<replica>/<lease>
		return path.Dir(path.Dir(keys[1])) == w && path.Dir(path.Dir(keys[2])) == w
	})
	t.Logf("publications: %v", countsKeys(t, a.store))
}

// Two replicas started with one replica id (a copied host name) publish
// side by side, each under its own lease: the fleet's totals count both,
// as they would two replicas with their own ids.
func TestFleetTwinReplicaIDsBothCounted(t *testing.T) {
	_, reps := fleet(t, "a", "a")
	startFleetRollout(t, reps[0], rollout.RolloutRequest{To: green, Steps: []int{10, 100}, StepInterval: time.Hour, MinRequests: 1000}, reps)
	for _, r := range reps {
		r.serve(green, 120, 0, 2*time.Millisecond)
	}
	for i, r := range reps {
		waitFor(t, "replica "+strconv.Itoa(i)+"'s view of both", func() bool {
			v := r.ctl.RolloutStatus()
			return v.Replicas == 2 && v.Colors[green].Requests == 240 && v.FleetStale == ""
		})
	}
	keys := countsKeys(t, reps[0].store)
	if len(keys) != 2 || path.Base(path.Dir(keys[0])) != "a" || path.Base(path.Dir(keys[1])) != "a" || keys[0] == keys[1] {
		t.Fatalf("publications %v, want two of replica a under two leases", keys)
	}
	t.Logf("publications: %v", keys)
}

// countsKeys lists the rollout counts publications in etcd.
func countsKeys(t *testing.T, es *etcd.Store) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := es.Client().Get(ctx, "/fleet/counts/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// A replica cut off from etcd stops counting once its lease expires: its
// publication vanishes from the fleet totals within the lease TTL.
func TestFleetExpiredReplicaStopsCounting(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cut := newCutter(t, c.Endpoints())
	reps := fleetOn(t, c, map[string]string{"c": "etcd://" + cut.addr() + "/fleet"}, "a", "b", "c")
	a, b, cr := reps[0], reps[1], reps[2]
	startFleetRollout(t, a, rollout.RolloutRequest{To: green, Steps: []int{10, 100}, StepInterval: time.Hour, MinRequests: 10_000}, reps)
	a.serve(green, 10, 0, time.Millisecond)
	b.serve(green, 20, 0, time.Millisecond)
	cr.serve(green, 400, 0, time.Millisecond)
	waitFor(t, "c's counts in the totals", func() bool {
		v := a.ctl.RolloutStatus()
		return v.Replicas == 3 && v.Colors[green].Requests == 430
	})
	cutAt := time.Now()
	cut.cut()
	waitFor(t, "c's counts to vanish", func() bool {
		v := a.ctl.RolloutStatus()
		return v.Replicas == 2 && v.Colors[green].Requests == 30
	})
	gone := time.Since(cutAt)
	t.Logf("c's counts gone %s after it was cut off (lease TTL %s)", gone.Round(time.Millisecond), fleetTTL)
	if gone > fleetTTL+2*time.Second {
		t.Fatalf("c still counted %s after the cut; lease TTL %s", gone, fleetTTL)
	}
	if v := a.ctl.RolloutStatus(); v.FleetStale != "" {
		t.Fatalf("the leader's own reads are fresh, yet: %q", v.FleetStale)
	}
}

// A replica cut off from etcd during a rollout holds its traffic on the
// stable colour once it has failed to publish its counts for HoldAfter: the
// leader no longer sees that traffic, and would not reach it with an
// abort. The others keep the weight; back in contact, it routes at the
// stored weight again.
func TestFleetCutOffReplicaHoldsItsRolloutTraffic(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cut := newCutter(t, c.Endpoints())
	reps := fleetOn(t, c, map[string]string{"c": "etcd://" + cut.addr() + "/fleet"}, "a", "c")
	a, cr := reps[0], reps[1]
	startFleetRollout(t, a, rollout.RolloutRequest{To: green, Steps: []int{10, 100}, StepInterval: time.Hour, MinRequests: 10_000}, reps)
	waitFor(t, "c to route the first step", func() bool { return cr.router.Last() == 10 })
	cut.cut()
	cutAt := time.Now()
	waitFor(t, "c to hold its rollout traffic", func() bool { return cr.router.Last() == 0 })
	t.Logf("c held %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	if got := a.router.Last(); got != 10 {
		t.Fatalf("a, still in the fleet, routes weight %d, want 10", got)
	}
	if v := cr.ctl.RolloutStatus(); !v.Held || v.Rollout == nil || v.Weight != 10 {
		t.Fatalf("c's view: held %v, weight %d, rollout %+v; want held with the stored step's weight 10", v.Held, v.Weight, v.Rollout)
	}
	// bluegreen_rollout_weight shows what the replica routes.
	if w, _ := metric(t, cr.reg, "bluegreen_rollout_weight", "color", green); w != 0 {
		t.Fatalf("held c's bluegreen_rollout_weight{color=green} = %v, want 0", w)
	}
	if w, _ := metric(t, a.reg, "bluegreen_rollout_weight", "color", green); w != 10 {
		t.Fatalf("a's bluegreen_rollout_weight{color=green} = %v, want 10", w)
	}
	cut.heal()
	waitFor(t, "c to route the stored weight again", func() bool { return cr.router.Last() == 10 })
	if v := cr.ctl.RolloutStatus(); v.Held {
		t.Fatal("c still shows held once back")
	}
}

// cutter forwards TCP to an etcd member until cut: then it drops every
// connection and refuses new ones, as a network partition would.
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	isCut  bool
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &cutter{ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Go(f.serve)
	t.Cleanup(func() { ln.Close(); f.cut(); wg.Wait() })
	return f
}

func (f *cutter) addr() string { return f.ln.Addr().String() }

func (f *cutter) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		f.mu.Lock()
		if err != nil || f.isCut {
			f.mu.Unlock()
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		f.conns = append(f.conns, c, up)
		f.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// heal lets new connections through again.
func (f *cutter) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isCut = false
}

func (f *cutter) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isCut = true
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}
