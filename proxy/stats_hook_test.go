package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/stats"
)

// TestStatsRecordedOnBothPaths sends real requests through the net/http and
// the fast front and checks Config.Stats counts them per colour: successes,
// a 5xx from the instance, a 502 made by the proxy and a 503 for a colour
// with no healthy instance count as instance errors.
func TestStatsRecordedOnBothPaths(t *testing.T) {
	fail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/boom" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("blue"))
	}))
	defer fail.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	for _, path := range []string{"net/http", "fast"} {
		t.Run(path, func(t *testing.T) {
			rec := stats.New([]string{"blue", "green"}, nil)
			var rt *Router
			var base string
			mutate := func(c *Config) { c.Stats = rec }
			if path == "fast" {
				rt = newRouterOnly(t, []string{fail.URL}, []string{deadURL}, mutate)
				base = startFast(t, rt, nil).url
			} else {
				f := newFixture(t, []string{fail.URL}, []string{deadURL}, mutate)
				rt, base = f.rt, f.front.URL
			}
			c := &http.Client{Timeout: 10 * time.Second}
			want := map[string]int{"/": 200, "/x": 200, "/boom": 500}
			for p, code := range want {
				if got, _, _ := get(t, c, base+p, nil); got != code {
					t.Fatalf("%s: %d, want %d", p, got, code)
				}
			}
			// Preview to green: its one instance refuses connections (502),
			// then, marked down, has none healthy (503).
			pv := map[string]string{"X-Bluegreen-Preview": "1"}
			if got, _, _ := get(t, c, base+"/", pv); got != http.StatusBadGateway {
				t.Fatalf("dead green: %d, want 502", got)
			}
			rt.Pool("green").SetStatus(rt.Pool("green").Backends()[0].Name(), false)
			if got, _, _ := get(t, c, base+"/", pv); got != http.StatusServiceUnavailable {
				t.Fatalf("no healthy green: %d, want 503", got)
			}

			b := rec.Window("blue", time.Now().Add(-time.Minute))
			if b.Requests != 3 || b.InstanceErrors != 1 || b.ClientErrors != 0 || b.Latencies != 3 {
				t.Errorf("blue %+v", b)
			}
			if b.P99 <= 0 || b.P99 > 5*time.Second {
				t.Errorf("blue p99 %v", b.P99)
			}
			g := rec.Window("green", time.Now().Add(-time.Minute))
			if g.Requests != 2 || g.InstanceErrors != 2 {
				t.Errorf("green %+v", g)
			}
		})
	}
}

// BenchmarkFrontStats is BenchmarkFront's fast path with and without
// Config.Stats: the cost of counting each request in the ring.
func BenchmarkFrontStats(b *testing.B) {
	req := []byte("GET /path HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\n\r\n")
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "stats=off", true: "stats=on"}[on], func(b *testing.B) {
			rt := newBenchRouterFast(b)
			if on {
				rt.stats = stats.New([]string{"blue", "green"}, nil)
			}
			runBenchClients(b, serveBenchFast(b, rt), req)
			// A request is counted once its answer is written: the last
			// one may be read before it is (with b.N = 1, the only one).
			for deadline := time.Now().Add(time.Second); on && rt.stats.Window("blue", time.Time{}).Requests == 0; {
				if time.Now().After(deadline) {
					b.Fatal("nothing counted")
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}
