//go:build linux && !noetcd

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// The partition tests put every etcd member and every replica in its own
// network namespace. Each node has one veth whose other end is in a
// "switch" namespace, on bridge br0; cutting a node's link there (or
// moving it to bridge br1 with other nodes) partitions it for real: its
// packets are dropped, not refused. Clients and backends reach a replica
// on the loopback of its own namespace: this process opens those sockets
// inside the namespace (setns on a locked thread), so a partition never
// cuts the traffic the replica serves, only its path to etcd. No address
// is added outside these namespaces.

// lab is the set of namespaces of one test.
type lab struct {
	t      *testing.T
	suffix string
	sw     string // the switch namespace
	nodes  map[string]*labNode
}

type labNode struct {
	name string
	ns   string
	ip   string
	port string // the veth end in the switch namespace
	fd   *os.File
}

// requireNetns skips (or fails with CI set) unless this is root on Linux
// with the ip tool.
func requireNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespaces, an etcd cluster and replicas as processes (skipped with -short)")
	}
	missing := ""
	if os.Geteuid() != 0 {
		missing = "root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		missing = "the ip tool (Debian iproute2)"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("partition tests need %s", missing)
		}
		t.Skipf("partition tests need %s", missing)
	}
}

func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newLab(t *testing.T) *lab {
	l := &lab{t: t, suffix: fmt.Sprintf("%d", os.Getpid()%100000), nodes: map[string]*labNode{}}
	l.sw = "bgsw" + l.suffix
	t.Cleanup(func() {
		for _, n := range l.nodes {
			n.fd.Close()
			exec.Command("ip", "netns", "del", n.ns).Run()
		}
		exec.Command("ip", "netns", "del", l.sw).Run()
	})
	l.ip("netns", "add", l.sw)
	for _, br := range []string{"br0", "br1"} {
		l.ip("-n", l.sw, "link", "add", br, "type", "bridge")
		l.ip("-n", l.sw, "link", "set", br, "up")
	}
	return l
}

// add makes node name with address 10.213.0.<idx>/24 on br0.
func (l *lab) add(name string, idx int) *labNode {
	n := &labNode{name: name, ns: "bg" + name + l.suffix, ip: fmt.Sprintf("10.213.0.%d", idx), port: "p-" + name}
	l.ip("netns", "add", n.ns)
	l.nodes[name] = n
	l.ip("-n", n.ns, "link", "set", "lo", "up")
	l.ip("-n", n.ns, "link", "add", "eth0", "type", "veth", "peer", "name", n.port, "netns", l.sw)
	l.ip("-n", n.ns, "addr", "add", n.ip+"/24", "dev", "eth0")
	l.ip("-n", n.ns, "link", "set", "eth0", "up")
	l.ip("-n", l.sw, "link", "set", n.port, "master", "br0")
	l.ip("-n", l.sw, "link", "set", n.port, "up")
	fd, err := os.Open("/run/netns/" + n.ns)
	if err != nil {
		l.t.Fatal(err)
	}
	n.fd = fd
	return n
}

// cut black-holes every packet to and from the named nodes; heal undoes it.
func (l *lab) cut(names ...string) {
	for _, name := range names {
		l.ip("-n", l.sw, "link", "set", l.nodes[name].port, "down")
	}
}

func (l *lab) heal(names ...string) {
	for _, name := range names {
		l.ip("-n", l.sw, "link", "set", l.nodes[name].port, "up")
	}
}

// join puts the named nodes on bridge br ("br1": a partition of their own).
func (l *lab) join(br string, names ...string) {
	for _, name := range names {
		l.ip("-n", l.sw, "link", "set", l.nodes[name].port, "master", br)
	}
}

// in runs fn on a thread switched into n's namespace; sockets fn opens stay
// in that namespace.
func (n *labNode) in(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(n.fd.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", n.ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked: it ends with this goroutine.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// client is an HTTP client whose connections start in n's namespace.
func (n *labNode) client() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.in(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: 16,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// serve serves h on 127.0.0.1 inside n's namespace and returns its URL.
func (n *labNode) serve(t *testing.T, h http.Handler) string {
	var ln net.Listener
	if err := n.in(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// labReplica is a bluegreen process in its own namespace.
type labReplica struct {
	t    *testing.T
	id   string
	node *labNode
	p    *testkit.Process
	hc   *http.Client
}

const labPub, labAdm = "http://127.0.0.1:8080", "http://127.0.0.1:8081"

func (r *labReplica) status() (admin.Status, error) {
	res, err := r.hc.Get(labAdm + "/admin/status")
	if err != nil {
		return admin.Status{}, err
	}
	defer res.Body.Close()
	var s admin.Status
	return s, json.NewDecoder(res.Body).Decode(&s)
}

func (r *labReplica) mustStatus() admin.Status {
	r.t.Helper()
	s, err := r.status()
	if err != nil {
		r.t.Fatalf("%s status: %v", r.id, err)
	}
	return s
}

func (r *labReplica) leads() bool {
	s, err := r.status()
	return err == nil && s.Store != nil && s.Store.Leader != nil && *s.Store.Leader
}

func (r *labReplica) cutover(to string) (int, string) {
	res, err := r.hc.Post(labAdm+"/admin/cutover", "application/json", strings.NewReader(`{"to":"`+to+`"}`))
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (r *labReplica) color() (string, error) {
	res, err := r.hc.Get(labPub + "/")
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return "", fmt.Errorf("status %d at %s: %.80q", res.StatusCode, time.Now().UTC().Format("15:04:05.000"), body)
	}
	return res.Header.Get(app.ColorHeader), nil
}

// until polls cond every 5ms for up to limit and returns how long it took.
func until(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// labTraffic sends requests through replicas until stopped.
func labTraffic(rs ...*labReplica) (stop func() (sent, failed int64, firstErr string)) {
	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			for ctx.Err() == nil {
				sent.Add(1)
				if _, err := r.color(); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, r.id+": "+err.Error())
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	// stop is safe to call twice: each case defers it, so a case that fails
	// early leaves no traffic running into the lab's teardown.
	return func() (int64, int64, string) {
		cancel()
		wg.Wait()
		e, _ := first.Load().(string)
		return sent.Load(), failed.Load(), e
	}
}

// TestFleetPartitions partitions replicas and etcd members across network
// namespaces: (a) a replica cut off from all of etcd, (b) the auto-rollback
// leader cut off, (c) a replica with a minority etcd member.
func TestFleetPartitions(t *testing.T) {
	requireNetns(t)
	bin, _ := binaries(t)
	memberBin := filepath.Join(t.TempDir(), "etcdmember")
	if out, err := exec.Command("go", "build", "-o", memberBin, "github.com/cryoprotect/bluegreen/state/etcd/etcdtest/etcdmember").CombinedOutput(); err != nil {
		t.Fatalf("build etcdmember: %v\n%s", err, out)
	}
	l := newLab(t)

	// Three etcd members, e0..e2 at 10.213.0.1-3.
	var cluster, endpoints []string
	for i := range 3 {
		n := l.add(fmt.Sprintf("e%d", i), i+1)
		cluster = append(cluster, fmt.Sprintf("m%d=http://%s:2380", i, n.ip))
		endpoints = append(endpoints, n.ip+":2379")
	}
	for i := range 3 {
		n := l.nodes[fmt.Sprintf("e%d", i)]
		testkit.Start(t, fmt.Sprintf("etcd-m%d", i), "ip", nil, "netns", "exec", n.ns, memberBin, "-name", fmt.Sprintf("m%d", i), "-dir", t.TempDir(),
			"-client", "http://"+n.ip+":2379", "-peer", "http://"+n.ip+":2380", "-cluster", strings.Join(cluster, ","))
	}
	hc := l.nodes["e0"].client()
	until(t, "etcd to have a leader", 60*time.Second, func() bool {
		res, err := hc.Get("http://10.213.0.1:2379/health")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return strings.Contains(string(b), `"health":"true"`)
	})

	blue := app.New(app.Config{Color: "blue", Version: "v1"}, nil)
	green := app.New(app.Config{Color: "green", Version: "v2"}, nil)
	cacheDir := t.TempDir()
	// r0 and r1 know all three members; r2 talks to e2 only (case c).
	var rs []*labReplica
	for i := range 3 {
		id := fmt.Sprintf("r%d", i)
		n := l.add(id, 11+i)
		eps := strings.Join(endpoints, ",")
		if i == 2 {
			eps = endpoints[2]
		}
		env := []string{
			"BLUEGREEN_BLUE_URLS=" + n.serve(t, blue), "BLUEGREEN_GREEN_URLS=" + n.serve(t, green),
			"BLUEGREEN_LISTEN=127.0.0.1:8080", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:8081",
			"BLUEGREEN_STATE=etcd://" + eps + "/lab", "BLUEGREEN_STATE_CACHE=" + filepath.Join(cacheDir, id+".json"),
			"BLUEGREEN_ETCD_TIMEOUT=1s", "BLUEGREEN_ETCD_LEASE_TTL=2s", "BLUEGREEN_REPLICA_ID=" + id,
			"BLUEGREEN_HEALTH_INTERVAL=50ms", "BLUEGREEN_HEALTH_TIMEOUT=1s", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1",
			"BLUEGREEN_AUTO_ROLLBACK=true", "BLUEGREEN_ROLLBACK_WINDOW=5m", "BLUEGREEN_DRAIN_TIMEOUT=1s", "BLUEGREEN_LOG_FORMAT=json",
		}
		r := &labReplica{t: t, id: id, node: n, hc: n.client()}
		r.p = testkit.Start(t, r.id, "ip", env, "netns", "exec", n.ns, bin)
		rs = append(rs, r)
	}
	for _, r := range rs {
		until(t, r.id+" ready", 30*time.Second, func() bool {
			res, err := r.hc.Get(labAdm + "/readyz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == 200
		})
	}
	allRoute := func(color string, limit time.Duration, set ...*labReplica) time.Duration {
		t.Helper()
		return until(t, "every replica to route "+color, limit, func() bool {
			for _, r := range set {
				if c, err := r.color(); err != nil || c != color {
					return false
				}
			}
			return true
		})
	}
	leader := func(set ...*labReplica) *labReplica {
		var found *labReplica
		for _, r := range set {
			if r.leads() {
				if found != nil {
					return nil
				}
				found = r
			}
		}
		return found
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range rs {
				t.Logf("%s output:\n%s", r.id, r.p.Out.String())
			}
		}
	})

	t.Run("a: replica cut off from every etcd member", func(t *testing.T) {
		r0, r1, r2 := rs[0], rs[1], rs[2]
		stop := labTraffic(rs...)
		defer stop()
		l.cut("r0")
		defer l.heal("r0")
		cut := time.Now()
		down := until(t, "r0 to report the store down", 15*time.Second, func() bool {
			s, err := r0.status()
			return err == nil && s.Store != nil && !s.Store.Up
		})
		if code, body := r1.cutover("green"); code != 200 {
			t.Fatalf("cutover through r1: %d %s", code, body)
		}
		allRoute("green", 10*time.Second, r1, r2)
		if c, err := r0.color(); err != nil || c != "blue" {
			t.Fatalf("cut-off r0 routes %q, %v; want the last colour it applied (blue)", c, err)
		}
		if code, body := r0.cutover("green"); code != 503 {
			t.Fatalf("cutover through the cut-off r0: %d %s, want 503", code, body)
		}
		time.Sleep(time.Second) // keep serving while cut off
		l.heal("r0")
		conv := allRoute("green", 15*time.Second, r0)
		sent, failed, first := stop()
		t.Logf("(a) r0 cut off: store reported down %s after the cut; cutover via r1 applied by r0 %s after healing; %d requests through the 3 replicas during %s, %d failed %s",
			down.Round(time.Millisecond), conv.Round(time.Millisecond), sent, time.Since(cut).Round(time.Millisecond), failed, first)
		if failed != 0 {
			t.Fatalf("%d of %d requests failed", failed, sent)
		}
		if conv > time.Second {
			t.Errorf("r0 applied the cutover %s after the partition healed, want within 1s", conv)
		}
		until(t, "r0 to report the store up", 15*time.Second, func() bool {
			s, err := r0.status()
			return err == nil && s.Store.Up
		})
	})

	t.Run("b: auto-rollback leader cut off", func(t *testing.T) {
		if code, body := rs[0].cutover("blue"); code != 200 {
			t.Fatalf("reset to blue: %d %s", code, body)
		}
		allRoute("blue", 10*time.Second, rs...)
		var old *labReplica
		until(t, "exactly one leader", 15*time.Second, func() bool { old = leader(rs...); return old != nil })
		var rest []*labReplica // the majority side
		for _, r := range rs {
			if r != old {
				rest = append(rest, r)
			}
		}
		stop := labTraffic(old)
		defer stop()
		mark := len(old.p.Out.String())
		l.cut(old.node.name)
		defer l.heal(old.node.name)
		cut := time.Now()
		var next *labReplica
		var tNew, tStop time.Duration
		var wg sync.WaitGroup
		wg.Go(func() {
			for time.Since(cut) < 20*time.Second {
				if r := leader(rest...); r != nil {
					next, tNew = r, time.Since(cut)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		wg.Go(func() {
			for time.Since(cut) < 20*time.Second {
				if s, err := old.status(); err == nil && s.Store != nil && s.Store.Leader != nil && !*s.Store.Leader {
					tStop = time.Since(cut)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		wg.Wait()
		if next == nil || tStop == 0 {
			t.Fatalf("after cutting the leader %s off: new leader %v after %s, old one stopped leading after %s", old.id, next, tNew, tStop)
		}
		if tStop >= tNew {
			t.Errorf("the cut-off leader stopped leading %s after the cut, after %s was elected (%s): two leaders at once", tStop, next.id, tNew)
		}
		// A cutover on the majority side to a colour that then fails.
		if code, body := next.cutover("green"); code != 200 {
			t.Fatalf("cutover through %s: %d %s", next.id, code, body)
		}
		majority := rest
		allRoute("green", 10*time.Second, majority...)
		green.SetHealthy(false)
		rolled := allRoute("blue", 15*time.Second, majority...)
		time.Sleep(500 * time.Millisecond)
		sent, failed, first := stop()
		l.heal(old.node.name)
		until(t, old.id+" to report the store up again", 15*time.Second, func() bool {
			s, err := old.status()
			return err == nil && s.Store.Up
		})
		green.SetHealthy(true)
		var hist struct {
			History []struct{ Trigger, To string } `json:"history"`
		}
		res, err := next.hc.Get(labAdm + "/admin/history?limit=1")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(res.Body).Decode(&hist)
		res.Body.Close()
		if len(hist.History) != 1 || hist.History[0].Trigger != "auto-rollback" || hist.History[0].To != "blue" {
			t.Fatalf("last switch %+v, want an auto-rollback to blue", hist.History)
		}
		if after := old.p.Out.String()[mark:]; strings.Contains(after, `"trigger":"auto-rollback"`) || strings.Contains(after, "auto-rollback failed") {
			t.Fatalf("the cut-off replica %s tried an auto-rollback:\n%s", old.id, after)
		}
		// Healed, it goes straight to the newest state: never through the
		// cutover to green that was rolled back while it was cut off.
		for line := range strings.SplitSeq(old.p.Out.String()[mark:], "\n") {
			if strings.Contains(line, "applied state from store") && strings.Contains(line, `"to":"green"`) {
				t.Fatalf("the healed replica %s routed the intermediate state: %s", old.id, line)
			}
		}
		t.Logf("(b) leader %s cut off (lease TTL 2s): it stopped leading %s after the cut, %s leads %s after the cut; green failed on the majority side and every majority replica routes blue %s later (auto-rollback by %s); %d requests through the cut-off replica, %d failed %s",
			old.id, tStop.Round(time.Millisecond), next.id, tNew.Round(time.Millisecond), rolled.Round(time.Millisecond), next.id, sent, failed, first)
		if failed != 0 {
			t.Fatalf("%d of %d requests through the cut-off replica failed", failed, sent)
		}
		allRoute("blue", 15*time.Second, rs...)
		// Case (c) switches to green: every replica must see it healthy
		// again first, or the switch is refused as a switch to nothing.
		until(t, "every replica to see green healthy again", 15*time.Second, func() bool {
			for _, r := range rs {
				if s, err := r.status(); err != nil || s.Colors["green"].Healthy == 0 {
					return false
				}
			}
			return true
		})
	})

	t.Run("c: replica with a minority etcd member", func(t *testing.T) {
		r0, r2 := rs[0], rs[2]
		before := r0.mustStatus().AppliedGeneration
		stop := labTraffic(rs...)
		defer stop()
		l.join("br1", "e2", "r2")
		defer l.join("br0", "e2", "r2")
		part := time.Now()
		var refused int
		var worst time.Duration
		for range 5 {
			t0 := time.Now()
			code, body := r2.cutover("green")
			if code != 503 {
				t.Fatalf("cutover through r2 on the minority side: %d %s, want 503", code, body)
			}
			refused++
			worst = max(worst, time.Since(t0))
		}
		if code, body := r0.cutover("green"); code != 200 {
			t.Fatalf("cutover on the majority side: %d %s", code, body)
		}
		allRoute("green", 10*time.Second, r0, rs[1])
		if c, err := r2.color(); err != nil || c != "blue" {
			t.Fatalf("minority r2 routes %q, %v; want blue until it hears of the cutover", c, err)
		}
		l.join("br0", "e2", "r2")
		conv := allRoute("green", 15*time.Second, r2)
		sent, failed, first := stop()
		want := before + 1
		for _, r := range rs {
			if g := r.mustStatus().AppliedGeneration; g != want {
				t.Fatalf("%s at generation %d after healing, want %d (exactly one switch stored)", r.id, g, want)
			}
		}
		t.Logf("(c) r2 with minority member e2: %d cutovers through r2 answered 503 (slowest %s), the majority's cutover applied by r2 %s after healing; %d requests during %s, %d failed %s",
			refused, worst.Round(time.Millisecond), conv.Round(time.Millisecond), sent, time.Since(part).Round(time.Millisecond), failed, first)
		if failed != 0 {
			t.Fatalf("%d of %d requests failed", failed, sent)
		}
	})
}
