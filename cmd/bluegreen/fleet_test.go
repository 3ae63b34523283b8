//go:build !noetcd

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

// fleet is three proxy replicas (serve, in this process) sharing one
// active colour through a real three-member etcd cluster, in front of the
// same demo apps.
type testFleet struct {
	t        *testing.T
	etcd     *etcdtest.Cluster
	apps     map[string][]*app.App
	replicas []*stack
	env      []string
	cacheDir string // each replica's BLUEGREEN_STATE_CACHE is <cacheDir>/<id>.json
}

func startFleet(t *testing.T, c *etcdtest.Cluster, prefix string, n int, extra ...string) *testFleet {
	t.Helper()
	f := &testFleet{t: t, etcd: c, apps: map[string][]*app.App{}, cacheDir: t.TempDir()}
	blue, ba := newApps(t, "blue", 1, nil)
	green, ga := newApps(t, "green", 1, nil)
	f.apps["blue"], f.apps["green"] = ba, ga
	f.env = append([]string{
		"BLUEGREEN_BLUE_URLS=" + urls(blue),
		"BLUEGREEN_GREEN_URLS=" + urls(green),
		"BLUEGREEN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=" + c.Spec(prefix),
		"BLUEGREEN_ETCD_TIMEOUT=2s",
		"BLUEGREEN_ETCD_LEASE_TTL=2s",
		"BLUEGREEN_HEALTH_INTERVAL=50ms",
		"BLUEGREEN_HEALTH_TIMEOUT=2s",
		"BLUEGREEN_HEALTH_RISE=1",
		"BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_DRAIN_TIMEOUT=2s",
		"BLUEGREEN_SHUTDOWN_DELAY=0s",
	}, extra...)
	for i := range n {
		f.add(fmt.Sprintf("r%d", i))
	}
	return f
}

// cache returns the path of replica id's state cache.
func (f *testFleet) cache(id string) string { return filepath.Join(f.cacheDir, id+".json") }

// add starts one more replica in this process; extra overrides the
// fleet's environment.
func (f *testFleet) add(id string, extra ...string) *stack {
	st := &stack{t: f.t, apps: f.apps, logs: &testkit.Buffer{}, entered: make(chan string, 16)}
	env := append(slices.Clone(f.env), "BLUEGREEN_REPLICA_ID="+id, "BLUEGREEN_STATE_CACHE="+f.cache(id))
	st.start(append(env, extra...))
	f.replicas = append(f.replicas, st)
	return st
}

// get asks replica st for / and returns the colour that answered; any
// error or non-200 answer is an error.
func get(st *stack) (string, error) {
	h, err := testkit.Get(st.httpClient, st.pub+"/")
	if err != nil {
		return "", err
	}
	return h.Get(app.ColorHeader), nil
}

// traffic sends requests through every replica until stop is called, and
// returns the number sent and failed.
func (f *testFleet) traffic(replicas ...*stack) (stop func() (sent, failed int64)) {
	ctx, cancel := context.WithCancel(context.Background())
	load := testkit.StartLoad(ctx, len(replicas), 0, func(c int, _ int64) error {
		_, err := get(replicas[c])
		time.Sleep(2 * time.Millisecond) // pacing, not ordering
		return err
	})
	return func() (int64, int64) {
		cancel()
		load.Wait()
		if e := load.FirstErr(); e != nil {
			f.t.Logf("first traffic error: %v", e)
		}
		return load.Sent.Load(), load.Failed.Load()
	}
}

// untilAllRoute waits until every replica routes color and returns how
// long the slowest took, measured from start.
func (f *testFleet) untilAllRoute(color string, start time.Time) time.Duration {
	f.t.Helper()
	var wg sync.WaitGroup
	var slowest atomic.Int64
	var bad atomic.Value
	for _, st := range f.replicas {
		wg.Go(func() {
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := get(st)
				if err == nil && c == color {
					d := int64(time.Since(start))
					for {
						old := slowest.Load()
						if d <= old || slowest.CompareAndSwap(old, d) {
							break
						}
					}
					return
				}
				time.Sleep(time.Millisecond)
				if time.Now().After(deadline) {
					bad.Store(fmt.Sprintf("%s does not route %s after 10s (last %q, %v)", st.pub, color, c, err))
					return
				}
			}
		})
	}
	wg.Wait()
	if b := bad.Load(); b != nil {
		f.t.Fatal(b)
	}
	return time.Duration(slowest.Load())
}

func (f *testFleet) generations() []uint64 {
	var g []uint64
	for _, st := range f.replicas {
		g = append(g, st.status().AppliedGeneration)
	}
	return g
}

func (f *testFleet) leaders() []int {
	var l []int
	for i, st := range f.replicas {
		if s := st.status(); s.Store != nil && s.Store.Leader != nil && *s.Store.Leader {
			l = append(l, i)
		}
	}
	return l
}

func mustPost(t *testing.T, st *stack, path, body string, want int) map[string]any {
	t.Helper()
	code, m := st.post(path, body)
	if code != want {
		t.Fatalf("POST %s %s: %d %v, want %d", path, body, code, m, want)
	}
	return m
}

// TestFleet runs every fleet scenario against one etcd cluster, each under
// its own key prefix, one after the other.
func TestFleet(t *testing.T) {
	start := time.Now()
	c := etcdtest.Start(t, 3)
	t.Logf("etcd cluster of 3 started in %s", time.Since(start).Round(time.Millisecond))

	t.Run("cutover through one replica is applied by all", func(t *testing.T) {
		f := startFleet(t, c, "/fleet/propagate", 3)
		for i, st := range f.replicas {
			s := st.status()
			if s.Active != "blue" || s.AppliedGeneration != 1 || s.Replica != fmt.Sprintf("r%d", i) ||
				s.Store == nil || s.Store.Kind != "etcd" || !s.Store.Up {
				t.Fatalf("replica %d status %+v store %+v", i, s, s.Store)
			}
		}
		var times []time.Duration
		colorsSeq := []string{"green", "blue", "green", "blue", "green", "blue"}
		for i, to := range colorsSeq {
			via := f.replicas[i%3]
			t0 := time.Now()
			mustPost(t, via, "/admin/cutover", `{"to":"`+to+`"}`, 200)
			answered := time.Since(t0)
			times = append(times, f.untilAllRoute(to, t0))
			t.Logf("cutover %d: answered after %s, last replica routes %s after %s", i+1, answered.Round(time.Microsecond), to, times[i].Round(time.Microsecond))
		}
		slices.Sort(times)
		t.Logf("time until the last of 3 replicas routes the new colour, %d cutovers: min %s, median %s, max %s",
			len(times), times[0], times[len(times)/2], times[len(times)-1])
		want := uint64(1 + len(colorsSeq))
		waitUntil(t, "every replica at the last generation", func() bool {
			return !slices.ContainsFunc(f.generations(), func(g uint64) bool { return g != want })
		})
		if l := f.leaders(); len(l) != 1 {
			t.Fatalf("leaders %v, want exactly one", l)
		}
	})

	t.Run("concurrent cutovers through different replicas: one winner", func(t *testing.T) {
		f := startFleet(t, c, "/fleet/race", 3)
		const rounds = 8
		var conflicts int
		for round := range rounds {
			gen := uint64(round + 1)
			to := []string{"green", "blue"}[round%2]
			waitUntil(t, "replicas at the same generation", func() bool {
				return !slices.ContainsFunc(f.generations(), func(g uint64) bool { return g != gen })
			})
			codes := make([]int, 3)
			var wg sync.WaitGroup
			for i, st := range f.replicas {
				wg.Go(func() {
					codes[i], _ = st.post("/admin/cutover", fmt.Sprintf(`{"to":%q,"generation":%d,"reason":"r%d"}`, to, gen, i))
				})
			}
			wg.Wait()
			wins := 0
			for _, code := range codes {
				switch code {
				case 200:
					wins++
				case 409:
					conflicts++
				default:
					t.Fatalf("round %d: codes %v", round, codes)
				}
			}
			if wins != 1 {
				t.Fatalf("round %d: codes %v, want exactly one 200", round, codes)
			}
		}
		waitUntil(t, "all replicas at the final generation", func() bool {
			return !slices.ContainsFunc(f.generations(), func(g uint64) bool { return g != rounds+1 })
		})
		res, err := http.Get(f.replicas[0].adm + "/admin/history?limit=100")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if n := strings.Count(string(body), `"action"`); n != rounds {
			t.Fatalf("history has %d switches, want %d (one per round, none lost): %s", n, rounds, body)
		}
		t.Logf("%d rounds of 3 concurrent cutovers: %d winners, %d answered 409, 0 other answers", rounds, rounds, conflicts)
	})

	t.Run("etcd leader killed", func(t *testing.T) {
		f := startFleet(t, c, "/fleet/leader", 3)
		stop := f.traffic(f.replicas...)
		lead := c.WaitLeader()
		killed := time.Now()
		c.Kill(lead)
		var attempts, failedCutovers int
		for {
			attempts++
			code, body := f.replicas[attempts%3].post("/admin/cutover", `{"to":"green"}`)
			if code == 200 {
				break
			}
			failedCutovers++
			if code != 503 {
				t.Fatalf("cutover during the election: %d %v", code, body)
			}
			if time.Since(killed) > 15*time.Second {
				t.Fatalf("no cutover within 15s of killing the etcd leader")
			}
		}
		recovered := time.Since(killed)
		conv := f.untilAllRoute("green", killed)
		sent, failed := stop()
		t.Logf("etcd leader (member %d) killed: first cutover succeeded %s later (%d failed attempts, 503), all replicas route green %s after the kill; traffic: %d requests, %d failed",
			lead, recovered.Round(time.Millisecond), failedCutovers, conv.Round(time.Millisecond), sent, failed)
		if failed != 0 {
			t.Fatalf("%d of %d requests failed while the etcd leader was down", failed, sent)
		}
		c.Restart(lead)
	})

	t.Run("two of three members killed", func(t *testing.T) {
		f := startFleet(t, c, "/fleet/quorum", 3)
		stop := f.traffic(f.replicas...)
		down := []int{0, 1}
		for _, i := range down {
			c.Kill(i)
		}
		killed := time.Now()
		t0 := time.Now()
		code, body := f.replicas[2].post("/admin/cutover", `{"to":"green"}`)
		took := time.Since(t0)
		if code != 503 || !strings.Contains(fmt.Sprint(body["error"]), "etcd") {
			t.Fatalf("cutover without quorum: %d %v, want 503 naming etcd", code, body)
		}
		t.Logf("cutover without quorum answered 503 in %s: %v", took.Round(time.Millisecond), body["error"])
		waitUntil(t, "every replica to report the store down", func() bool {
			for _, st := range f.replicas {
				if s := st.status(); s.Store == nil || s.Store.Up {
					return false
				}
			}
			return true
		})
		if v := metricValue(t, f.replicas[0], "bluegreen_state_store_up"); v != "0" {
			t.Fatalf("bluegreen_state_store_up = %s while etcd has no quorum", v)
		}
		t.Logf("every replica reports the store down %s after the kill", time.Since(killed).Round(time.Millisecond))
		wait := c.RestartAsync(down...)
		back := time.Now()
		wait()
		waitUntil(t, "every replica to report the store up", func() bool {
			for _, st := range f.replicas {
				if s := st.status(); s.Store == nil || !s.Store.Up {
					return false
				}
			}
			return true
		})
		t.Logf("quorum back: members ready and every replica reports the store up %s after the restart", time.Since(back).Round(time.Millisecond))
		t0 = time.Now()
		for {
			code, body = f.replicas[0].post("/admin/cutover", `{"to":"green"}`)
			if code == 200 {
				break
			}
			if time.Since(t0) > 15*time.Second {
				t.Fatalf("cutover after the quorum came back: %d %v", code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		conv := f.untilAllRoute("green", t0)
		sent, failed := stop()
		t.Logf("after recovery all replicas route green %s after the cutover; traffic through the outage: %d requests, %d failed", conv.Round(time.Millisecond), sent, failed)
		if failed != 0 {
			t.Fatalf("%d of %d requests failed while etcd had no quorum", failed, sent)
		}
		if v := metricValue(t, f.replicas[1], "bluegreen_state_store_up"); v != "1" {
			t.Fatalf("bluegreen_state_store_up = %s after recovery", v)
		}
	})

	t.Run("auto-rollback leader replica stopped", func(t *testing.T) {
		f := startFleet(t, c, "/fleet/rollback", 3, "BLUEGREEN_AUTO_ROLLBACK=true", "BLUEGREEN_ROLLBACK_WINDOW=5m")
		var leader int
		waitUntil(t, "one leader", func() bool {
			l := f.leaders()
			if len(l) == 1 {
				leader = l[0]
			}
			return len(l) == 1
		})
		mustPost(t, f.replicas[(leader+1)%3], "/admin/cutover", `{"to":"green"}`, 200)
		f.untilAllRoute("green", time.Now())
		stopped := time.Now()
		if err := f.replicas[leader].stop(); err != nil {
			t.Fatal(err)
		}
		stoppedID := fmt.Sprintf("r%d", leader)
		f.replicas = slices.Delete(f.replicas, leader, leader+1)
		rest := f.replicas
		var next string
		waitUntil(t, "a new leader", func() bool {
			l := f.leaders()
			if len(l) == 1 {
				next = rest[l[0]].status().Replica
			}
			return len(l) == 1
		})
		t.Logf("replica %s stopped; %s leads %s later", stoppedID, next, time.Since(stopped).Round(time.Millisecond))
		broke := time.Now()
		f.apps["green"][0].SetHealthy(false)
		f.untilAllRoute("blue", broke)
		t.Logf("green failed: the new leader rolled back and every remaining replica routes blue %s later", time.Since(broke).Round(time.Millisecond))
		s := rest[0].status()
		res, err := http.Get(rest[0].adm + "/admin/history?limit=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if s.Active != "blue" || !strings.Contains(string(body), `"auto-rollback"`) {
			t.Fatalf("status %+v, last switch %s: want an auto-rollback to blue", s, body)
		}
	})
}

// TestFleetLeaderProcessKilled runs the auto-rollback leader as a real
// process and kills it (SIGKILL: no resignation, its lease runs out), then
// breaks the new colour: a replica that took over rolls back.
func TestFleetLeaderProcessKilled(t *testing.T) {
	bin, _ := binaries(t)
	c := etcdtest.Start(t, 3)
	f := startFleet(t, c, "/fleet/crash", 0, "BLUEGREEN_AUTO_ROLLBACK=true", "BLUEGREEN_ROLLBACK_WINDOW=5m")
	p, pub, adm := startProxyProc(t, bin, append(slices.Clone(f.env), "BLUEGREEN_REPLICA_ID=proc", "BLUEGREEN_STATE_CACHE="+f.cache("proc")))
	ps := &stack{t: t, pub: "http://" + pub, adm: "http://" + adm, logs: p.Out,
		httpClient: &http.Client{Timeout: 10 * time.Second}}
	waitHTTP(t, ps.adm+"/readyz", 200)
	waitUntil(t, "the process to lead", func() bool {
		s := ps.status()
		return s.Store != nil && s.Store.Leader != nil && *s.Store.Leader
	})
	f.add("r1")
	f.add("r2")
	if l := f.leaders(); len(l) != 0 {
		t.Fatalf("in-process replicas %v lead while the process does", l)
	}
	mustPost(t, f.replicas[0], "/admin/cutover", `{"to":"green"}`, 200)
	f.replicas = append(f.replicas, ps)
	f.untilAllRoute("green", time.Now())
	f.replicas = f.replicas[:2]

	killed := time.Now()
	p.Kill()
	f.apps["green"][0].SetHealthy(false)
	// Until the new leader rolls back, live traffic to green fails: that
	// is the outage auto-rollback ends, not a fleet failure.
	f.untilAllRoute("blue", killed)
	took := time.Since(killed)
	l := f.leaders()
	if len(l) != 1 {
		t.Fatalf("leaders after the kill: %v", l)
	}
	s := f.replicas[l[0]].status()
	t.Logf("leader process killed (lease TTL 2s): %s took over and rolled back; every replica routes blue %s after the kill",
		s.Replica, took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("rollback took %s after the leader's death", took)
	}
	res, err := http.Get(f.replicas[0].adm + "/admin/history?limit=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `"auto-rollback"`) {
		t.Fatalf("last switch %s: want an auto-rollback", body)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, 15*time.Second, what, cond)
}

func metricValue(t *testing.T, st *stack, name string) string {
	t.Helper()
	res, err := http.Get(st.adm + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return ""
}

// TestFleetStartsFromCache restarts a replica while etcd has no quorum: it
// starts from its local copy of the state, serves the cached colour with no
// failed request, reports the store down, refuses switches, and applies
// the state stored meanwhile as soon as the quorum is back.
func TestFleetStartsFromCache(t *testing.T) {
	c := etcdtest.Start(t, 3)
	f := startFleet(t, c, "/fleet/cache", 2)
	r0, r1 := f.replicas[0], f.replicas[1]
	mustPost(t, r0, "/admin/cutover", `{"to":"green"}`, 200)
	f.untilAllRoute("green", time.Now())
	if err := r0.stop(); err != nil {
		t.Fatal(err)
	}
	// Stored while r0 is down: its copy (green, generation 2) is stale.
	f.replicas = []*stack{r1}
	mustPost(t, r1, "/admin/cutover", `{"to":"blue"}`, 200)
	f.untilAllRoute("blue", time.Now())

	c.Kill(0)
	c.Kill(1)
	t0 := time.Now()
	r2 := f.add("r2", "BLUEGREEN_STATE_CACHE="+f.cache("r0"))
	started := time.Since(t0)
	s := r2.status()
	if s.Active != "green" || s.AppliedGeneration != 2 || s.Store == nil || s.Store.Up || s.Store.Leader == nil || *s.Store.Leader {
		t.Fatalf("replica started without quorum: status %+v store %+v; want the cached green@2, store down, not leader", s, s.Store)
	}
	if v := metricValue(t, r2, "bluegreen_state_store_up"); v != "0" {
		t.Fatalf("bluegreen_state_store_up = %s", v)
	}
	if !strings.Contains(r2.logs.String(), "serving the cached state") {
		t.Fatalf("no log line about the cached state:\n%s", r2.logs.String())
	}
	stop := f.traffic(r2)
	code, body := r2.post("/admin/cutover", `{"to":"blue"}`)
	if code != 503 {
		t.Fatalf("cutover while etcd has no quorum: %d %v, want 503", code, body)
	}
	res, err := http.Get(r2.adm + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/readyz = %d while serving the cached colour, want 200", res.StatusCode)
	}
	time.Sleep(500 * time.Millisecond) // traffic on the cached colour
	if col, err := get(r2); err != nil || col != "green" {
		t.Fatalf("r2 routes %q, %v; want the cached green", col, err)
	}
	wait := c.RestartAsync(0, 1)
	healed := time.Now()
	wait()
	f.replicas = []*stack{r1, r2}
	conv := f.untilAllRoute("blue", healed)
	sent, failed := stop()
	waitUntil(t, "r2 to report the store up", func() bool { s := r2.status(); return s.Store.Up && s.AppliedGeneration == 3 })
	t.Logf("replica started without an etcd quorum in %s from its cache (green@2); %d requests, %d failed during the outage; after the members restarted it routes blue@3 %s later",
		started.Round(time.Millisecond), sent, failed, conv.Round(time.Millisecond))
	if failed != 0 {
		t.Fatalf("%d of %d requests failed", failed, sent)
	}
	cached, err := os.ReadFile(f.cache("r0"))
	if err != nil || !strings.Contains(string(cached), `"generation": 3`) {
		t.Fatalf("cache after catching up: %s %v; want generation 3", cached, err)
	}
}

// TestFleetNoEtcdNoCache: with etcd down and no local copy a replica does
// not start; it waits BLUEGREEN_ETCD_START_WAIT and exits 1 saying why.
func TestFleetNoEtcdNoCache(t *testing.T) {
	c := etcdtest.Start(t, 3)
	f := startFleet(t, c, "/fleet/nocache", 0)
	c.Kill(0)
	c.Kill(1)
	var stdout, stderr testkit.Buffer
	env := append(slices.Clone(f.env), "BLUEGREEN_STATE_CACHE="+f.cache("none"), "BLUEGREEN_ETCD_START_WAIT=1s", "BLUEGREEN_ETCD_TIMEOUT=500ms")
	code := run(context.Background(), nil, env, &stdout, &stderr)
	out := stdout.String() + stderr.String()
	if code != exitFailure || !strings.Contains(out, "no cached state") || !strings.Contains(out, "BLUEGREEN_ETCD_START_WAIT") {
		t.Fatalf("exit %d, output:\n%s\nwant exit 1 naming the missing cache", code, out)
	}
}

// TestFleetMigrateFromFile: an empty etcd is initialised from the state
// file of a single proxy (BLUEGREEN_STATE_MIGRATE_FROM), history included.
func TestFleetMigrateFromFile(t *testing.T) {
	c := etcdtest.Start(t, 3)
	path := filepath.Join(t.TempDir(), "bluegreen-state.json")
	single := startStack(t, 1, 1, "BLUEGREEN_STATE=file:"+path)
	mustPost(t, single, "/admin/cutover", `{"to":"green"}`, 200)
	mustPost(t, single, "/admin/rollback", `{}`, 200)
	mustPost(t, single, "/admin/cutover", `{"to":"green"}`, 200)
	if err := single.stop(); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, c, "/fleet/migrate", 2, "BLUEGREEN_STATE_MIGRATE_FROM=file:"+path)
	for _, st := range f.replicas {
		if s := st.status(); s.Active != "green" || s.AppliedGeneration != 4 || s.Previous != "blue" {
			t.Fatalf("status after migration %+v, want green@4 (previous blue)", s)
		}
	}
	res, err := http.Get(f.replicas[1].adm + "/admin/history?limit=100")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if n := strings.Count(string(body), `"action"`); n != 3 {
		t.Fatalf("history after migration has %d switches, want the file's 3: %s", n, body)
	}
	logs := f.replicas[0].logs.String() + f.replicas[1].logs.String()
	if strings.Count(logs, "initialised it from an existing state") != 1 {
		t.Fatalf("want exactly one replica to log the migration:\n%s", logs)
	}
}
