package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/cryoprotect/bluegreen/state/etcd"
	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

func TestParseSpec(t *testing.T) {
	cases := []struct {
		spec      string
		endpoints string
		prefix    string
		err       string
	}{
		{"etcd://a:2379,b:2379/bluegreen/myapp", "a:2379,b:2379", "/bluegreen/myapp", ""},
		{"etcd://a:2379/app/", "a:2379", "/app", ""},
		{"a:2379/app", "a:2379", "/app", ""},
		{"etcd://a:2379", "", "", "no key prefix"},
		{"etcd://a:2379/", "", "", "no key prefix"},
		{"etcd:///app", "", "", "no endpoints"},
		{"etcd://a/app", "", "", "want host:port"},
		{"etcd://http://a:1/app", "", "", "want host:port"},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			sp, err := etcd.ParseSpec(tc.spec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(sp.Endpoints, ","); got != tc.endpoints || sp.Prefix != tc.prefix || sp.Key() != tc.prefix+"/state" {
				t.Fatalf("got %v %q", sp.Endpoints, sp.Prefix)
			}
		})
	}
}

func TestOpenBadTLSOptions(t *testing.T) {
	cases := []struct {
		opts etcd.Options
		want string
	}{
		{etcd.Options{CAFile: "/nonexistent/ca.pem"}, "CA file"},
		{etcd.Options{CertFile: "/x.pem"}, "together"},
		{etcd.Options{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}, "client certificate"},
	}
	for _, tc := range cases {
		_, err := etcd.Open(t.Context(), "etcd://127.0.0.1:1/app", tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v) = %v, want an error about %s", tc.opts, err, tc.want)
		}
	}
}

func TestUnreachable(t *testing.T) {
	s, err := etcd.Open(t.Context(), "etcd://127.0.0.1:1/app", etcd.Options{OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = s.Load(t.Context())
	if !errors.Is(err, etcd.ErrUnavailable) || errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Load = %v, want ErrUnavailable", err)
	}
	err = s.CompareAndSwap(t.Context(), 1, st("green", 2))
	if !errors.Is(err, etcd.ErrUnavailable) || errors.Is(err, state.ErrConflict) {
		t.Fatalf("CompareAndSwap = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("two operations took %s with a 200ms timeout", d)
	}
	if s.Up() {
		t.Fatal("Up() = true with etcd unreachable")
	}
	t.Logf("error: %v", err)
}

func st(active string, gen uint64) state.State {
	return state.State{Active: active, Generation: gen, ChangedAt: time.Unix(int64(gen), 0).UTC()}
}

func open(t *testing.T, c *etcdtest.Cluster, prefix string) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(t.Context(), c.Spec(prefix), etcd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// recv receives from a Watch until it delivers generation gen or later.
func recv(t *testing.T, ch <-chan state.State, gen uint64) state.State {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			if s.Generation >= gen {
				return s
			}
		case <-timeout:
			t.Fatalf("no generation %d from Watch within 10s", gen)
		}
	}
}

// TestStore runs the store against a real three-member cluster.
func TestStore(t *testing.T) {
	c := etcdtest.Start(t, 3)

	t.Run("load, compare-and-swap, conflicts", func(t *testing.T) {
		s := open(t, c, "/t/basic")
		if _, err := s.Load(t.Context()); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("Load on empty = %v, want ErrNotFound", err)
		}
		if err := s.CompareAndSwap(t.Context(), 1, st("blue", 2)); !errors.Is(err, state.ErrConflict) {
			t.Fatalf("CAS(1) on empty = %v, want ErrConflict", err)
		}
		if err := s.CompareAndSwap(t.Context(), 0, st("blue", 1)); err != nil {
			t.Fatal(err)
		}
		if err := s.CompareAndSwap(t.Context(), 0, st("green", 1)); !errors.Is(err, state.ErrConflict) {
			t.Fatalf("second CAS(0) = %v, want ErrConflict", err)
		}
		next := st("green", 2)
		next.Previous = "blue"
		next.History = []state.Event{{Action: state.ActionCutover, From: "blue", To: "green", Trigger: state.TriggerAPI, Generation: 2, Time: next.ChangedAt}}
		if err := s.CompareAndSwap(t.Context(), 1, next); err != nil {
			t.Fatal(err)
		}
		if err := s.CompareAndSwap(t.Context(), 1, st("blue", 2)); !errors.Is(err, state.ErrConflict) || !strings.Contains(err.Error(), "stored generation is 2") {
			t.Fatalf("stale CAS = %v, want ErrConflict naming generation 2", err)
		}
		got, err := s.Load(t.Context())
		if err != nil || got.Active != "green" || got.Previous != "blue" || got.Generation != 2 || len(got.History) != 1 {
			t.Fatalf("Load = %+v, %v", got, err)
		}
		if !s.Up() {
			t.Fatal("Up() = false")
		}
	})

	t.Run("same encoding as the file store", func(t *testing.T) {
		s := open(t, c, "/t/encoding")
		want := st("blue", 1)
		if err := s.CompareAndSwap(t.Context(), 0, want); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Client().Get(t.Context(), "/t/encoding/state")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get: %v", err)
		}
		enc, _ := state.Encode(want)
		if string(resp.Kvs[0].Value) != string(enc) {
			t.Fatalf("stored %s, want %s", resp.Kvs[0].Value, enc)
		}
	})

	t.Run("concurrent writers: one winner per generation", func(t *testing.T) {
		stores := []*etcd.Store{open(t, c, "/t/race"), open(t, c, "/t/race"), open(t, c, "/t/race")}
		if err := stores[0].CompareAndSwap(t.Context(), 0, st("blue", 1)); err != nil {
			t.Fatal(err)
		}
		for gen := uint64(1); gen <= 20; gen++ {
			var wg sync.WaitGroup
			errs := make([]error, len(stores))
			for i, s := range stores {
				wg.Go(func() { errs[i] = s.CompareAndSwap(t.Context(), gen, st(fmt.Sprint("c", i), gen+1)) })
			}
			wg.Wait()
			wins := 0
			for _, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, state.ErrConflict):
					t.Fatalf("generation %d: %v", gen, err)
				}
			}
			if wins != 1 {
				t.Fatalf("generation %d: %d winners", gen, wins)
			}
		}
		if got, _ := stores[1].Load(t.Context()); got.Generation != 21 {
			t.Fatalf("generation %d after 20 rounds, want 21", got.Generation)
		}
	})

	t.Run("watch sees other writers and resumes after member loss", func(t *testing.T) {
		w := open(t, c, "/t/watch")
		wr := open(t, c, "/t/watch")
		if err := wr.CompareAndSwap(t.Context(), 0, st("blue", 1)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		ch := w.Watch(ctx)
		// The current state comes first: the watch is established.
		if got := recv(t, ch, 1); got.Generation != 1 {
			t.Fatalf("first state from Watch: %+v, want generation 1", got)
		}
		if err := wr.CompareAndSwap(t.Context(), 1, st("green", 2)); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, ch, 2); got.Generation != 2 || got.Active != "green" {
			t.Fatalf("watch got %+v", got)
		}
		// Kill the leader: writes go on after the election and the
		// watch follows.
		lead := c.WaitLeader()
		c.Kill(lead)
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := wr.CompareAndSwap(t.Context(), 2, st("blue", 3))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no write within 15s of the leader's loss: %v", err)
			}
		}
		if got := recv(t, ch, 3); got.Generation != 3 {
			t.Fatalf("watch got %+v after the leader's loss", got)
		}
		c.Restart(lead)
		cancel()
		for range ch {
		}
	})

	t.Run("watch held back by a partition delivers only the newest state", func(t *testing.T) {
		// A watch stream that survives a partition hands over, when it
		// ends, the responses held back meanwhile, one per write: the
		// watcher must route straight to the newest state, not through
		// the one in between (a cutover that was rolled back meanwhile).
		hp := newHoldProxy(t, strings.Split(c.Endpoints(), ",")[0])
		w, err := etcd.Open(t.Context(), "etcd://"+hp.addr()+"/t/held", etcd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		wr := open(t, c, "/t/held")
		if err := wr.CompareAndSwap(t.Context(), 0, st("blue", 1)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ch := w.Watch(ctx)
		if got := recv(t, ch, 1); got.Generation != 1 {
			t.Fatalf("first state from Watch: %+v", got)
		}
		hp.hold(true)
		for gen := uint64(1); gen <= 2; gen++ {
			if err := wr.CompareAndSwap(t.Context(), gen, st([]string{"", "green", "blue"}[gen], gen+1)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // one watch response each
		}
		hp.hold(false)
		if got := recv(t, ch, 2); got.Generation != 3 || got.Active != "blue" {
			t.Fatalf("after the partition the watch delivered %+v first, want generation 3 (blue)", got)
		}
	})

	t.Run("watch channel closes on Close", func(t *testing.T) {
		s, err := etcd.Open(t.Context(), c.Spec("/t/close"), etcd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ch := s.Watch(t.Context())
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-ch; ok {
			t.Fatal("state after Close")
		}
		if _, err := s.Load(t.Context()); !errors.Is(err, state.ErrClosed) {
			t.Fatalf("Load after Close = %v", err)
		}
		if ch := s.Watch(t.Context()); ch != nil {
			if _, ok := <-ch; ok {
				t.Fatal("Watch after Close delivered")
			}
		}
	})

	t.Run("election: one leader, takeover on resign", func(t *testing.T) {
		a, b := open(t, c, "/t/elect"), open(t, c, "/t/elect")
		ctxA, stopA := context.WithCancel(t.Context())
		ctxB, stopB := context.WithCancel(t.Context())
		defer stopB()
		la := a.Elect(ctxA, "a", 2*time.Second, nil)
		waitFor(t, "a to lead", la.IsLeader)
		changed := make(chan bool, 4)
		lb := b.Elect(ctxB, "b", 2*time.Second, func(v bool) { changed <- v })
		// b has queued behind a once its campaign key exists beside a's.
		waitFor(t, "b to campaign", func() bool {
			res, err := b.Client().Get(t.Context(), "/t/elect/leader/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && res.Count == 2
		})
		if lb.IsLeader() {
			t.Fatal("two leaders")
		}
		start := time.Now()
		stopA()
		<-la.Done()
		if la.IsLeader() {
			t.Fatal("a still leads after stopping")
		}
		if v := <-changed; !v {
			t.Fatal("b was told it lost a leadership it never had")
		}
		t.Logf("b took over %s after a resigned", time.Since(start))
		stopB()
		<-lb.Done()
	})

	t.Run("election: takeover within the lease TTL after a crash", func(t *testing.T) {
		a, b := open(t, c, "/t/crash"), open(t, c, "/t/crash")
		const ttl = 2 * time.Second
		la := a.Elect(t.Context(), "a", ttl, nil)
		waitFor(t, "a to lead", la.IsLeader)
		lb := b.Elect(t.Context(), "b", ttl, nil)
		// a's connection goes away without resigning or revoking its
		// lease, as when its process dies.
		crashed := time.Now()
		a.Client().Close()
		waitFor(t, "b to lead", lb.IsLeader)
		took := time.Since(crashed)
		t.Logf("b took over %s after a crashed (lease TTL %s)", took.Round(time.Millisecond), ttl)
		if took > ttl+2*time.Second {
			t.Fatalf("takeover took %s with a lease TTL of %s", took, ttl)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, 10*time.Second, what, cond)
}

// holdProxy forwards TCP to target; while held, nothing the target sends
// reaches the client (it waits in the proxy, as behind a partition that
// drops no connection), and it all arrives at once when released.
type holdProxy struct {
	ln    *testkit.Listener
	mu    sync.Mutex
	cond  sync.Cond
	held  bool
	conns []net.Conn
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	p := &holdProxy{}
	p.cond.L = &p.mu
	var wg sync.WaitGroup
	p.ln = testkit.Listen(t, func(c net.Conn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
		wg.Go(func() { p.back(c, up) })
	})
	t.Cleanup(func() {
		p.ln.Close()
		p.hold(false)
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	return p
}

// back copies what up sends to c, waiting while held.
func (p *holdProxy) back(c, up net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		p.mu.Lock()
		for p.held {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) addr() string { return p.ln.Addr().String() }

func (p *holdProxy) hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.cond.Broadcast()
	p.mu.Unlock()
}
