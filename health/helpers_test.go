package health

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is an httptest server whose /health answer is toggled by healthy.
type backend struct {
	srv      *httptest.Server
	healthy  atomic.Bool
	hits     atomic.Int64
	path     atomic.Pointer[string] // path and query of the last request
	agent    atomic.Pointer[string] // User-Agent of the last request
	inflight atomic.Int64
	maxSeen  atomic.Int64 // most requests in flight at once
	work     time.Duration
}

// newBackend starts a backend (healthy when up) that the test closes on cleanup.
func newBackend(t *testing.T, up bool) *backend {
	t.Helper()
	b := startBackend(up)
	t.Cleanup(b.srv.Close)
	return b
}

// startBackend starts a backend the caller must close.
func startBackend(up bool) *backend {
	b := &backend{}
	b.healthy.Store(up)
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	n := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for {
		m := b.maxSeen.Load()
		if n <= m || b.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	b.hits.Add(1)
	p, ua := r.URL.RequestURI(), r.UserAgent()
	b.path.Store(&p)
	b.agent.Store(&ua)
	if b.work > 0 {
		time.Sleep(b.work) // simulated work, to widen the window for overlaps
	}
	if !b.healthy.Load() {
		http.Error(w, "unhealthy", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

func (b *backend) URL(t *testing.T) *url.URL {
	t.Helper()
	return mustParse(t, b.srv.URL)
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return u
}

// event is one Reporter call.
type event struct {
	instance string
	up       bool
}

// recorder is a Reporter that remembers its calls.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) SetStatus(instance string, up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{instance, up})
}

func (r *recorder) take() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// clock is an injectable clock set by the test.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) set(t time.Time)     { c.t.Store(&t) }
func (c *clock) now() time.Time      { return *c.t.Load() }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }
