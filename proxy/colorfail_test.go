package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// refusingURL is the URL of a loopback port nothing listens on.
func refusingURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// evidence records ColorFailing calls; when rollback is set, the first
// call switches the router to blue, as the controller's auto-rollback does.
type evidence struct {
	mu       sync.Mutex
	calls    []string
	rt       *Router
	rollback bool
}

func (e *evidence) report(color, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, color+": "+reason)
	if e.rollback && len(e.calls) == 1 {
		_ = e.rt.SetActive("blue", 3)
	}
}

func (e *evidence) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.calls...)
}

// front serves rt on the fast path or on net/http and returns its URL.
func front(t *testing.T, rt *Router, fast bool) string {
	t.Helper()
	if fast {
		return startFast(t, rt, nil).url
	}
	s := httptest.NewServer(rt)
	t.Cleanup(rt.CloseIdleConnections)
	t.Cleanup(s.Close)
	return s.URL
}

func newEvidenceRouter(t *testing.T, fast bool, blue, green []string, mutate func(*Config)) (*Router, *evidence) {
	t.Helper()
	ev := &evidence{}
	rt := newRouterOnly(t, blue, green, func(c *Config) {
		c.ColorFailing = ev.report
		if !fast {
			c.Transport = NewTransport(c.Upstream)
		}
		if mutate != nil {
			mutate(c)
		}
	})
	ev.rt = rt
	if err := rt.SetActive("green", 2); err != nil {
		t.Fatal(err)
	}
	return rt, ev
}

func forEachPath(t *testing.T, f func(t *testing.T, fast bool)) {
	for _, fast := range []bool{true, false} {
		name := "net/http"
		if fast {
			name = "fast"
		}
		t.Run(name, func(t *testing.T) { f(t, fast) })
	}
}

// Every green instance refuses: the request that finds out reports it,
// the callback rolls back, and the request is answered by blue.
func TestColorFailingRetriesOnNewColour(t *testing.T) {
	forEachPath(t, func(t *testing.T, fast bool) {
		blue := newBackend(t, "blue", 0)
		rt, ev := newEvidenceRouter(t, fast, []string{blue.URL}, []string{refusingURL(t), refusingURL(t)}, nil)
		ev.rollback = true
		u := front(t, rt, fast)
		c := &http.Client{}
		defer c.CloseIdleConnections()
		code, body, _ := get(t, c, u+"/", nil)
		if code != 200 || body != "blue" {
			t.Fatalf("got %d %q, want 200 from blue", code, body)
		}
		calls := ev.Calls()
		if len(calls) != 1 || !strings.HasPrefix(calls[0], "green: every green instance in rotation (2) refused connections") {
			t.Fatalf("ColorFailing calls = %q", calls)
		}
		if a, _ := rt.Active(); a != "blue" {
			t.Fatalf("active = %s", a)
		}
		for range 5 {
			if code, body, _ := get(t, c, u+"/", nil); code != 200 || body != "blue" {
				t.Fatalf("after the rollback: %d %q", code, body)
			}
		}
		if n := len(ev.Calls()); n != 1 {
			t.Fatalf("%d calls, want 1", n)
		}
	})
}

// Nothing is reported while one green instance answers, for requests to
// the idle colour, or for a colour with no instance in rotation; a callback
// that does not switch leaves the request failing as before (502).
func TestColorFailingOnlyOnEvidence(t *testing.T) {
	forEachPath(t, func(t *testing.T, fast bool) {
		green := newBackend(t, "green", 0)
		rt, ev := newEvidenceRouter(t, fast, []string{refusingURL(t)}, []string{refusingURL(t), green.URL}, nil)
		u := front(t, rt, fast)
		c := &http.Client{}
		defer c.CloseIdleConnections()
		for range 6 {
			if code, body, _ := get(t, c, u+"/", nil); code != 200 || body != "green" {
				t.Fatalf("got %d %q, want green (one instance answers)", code, body)
			}
		}
		// Preview traffic to blue, whose only instance refuses.
		if code, _, _ := get(t, c, u+"/", map[string]string{"X-Bluegreen-Preview": "1"}); code != http.StatusBadGateway {
			t.Fatalf("preview to a refusing blue: %d, want 502", code)
		}
		if calls := ev.Calls(); len(calls) != 0 {
			t.Fatalf("ColorFailing called: %q", calls)
		}
		// The answering instance goes out of rotation: now every green
		// instance in rotation refuses. The callback does not switch.
		rt.Pool("green").SetStatus(green.URL, false)
		if code, _, _ := get(t, c, u+"/", nil); code != http.StatusBadGateway {
			t.Fatalf("got %d, want 502 when nothing switched", code)
		}
		if calls := ev.Calls(); len(calls) != 1 || !strings.Contains(calls[0], "(1) refused") {
			t.Fatalf("ColorFailing calls = %q", calls)
		}
		// No instance in rotation: 503 as always, nothing reported.
		for _, b := range rt.Pool("green").Backends() {
			rt.Pool("green").SetStatus(b.Name(), false)
		}
		if code, _, _ := get(t, c, u+"/", nil); code != http.StatusServiceUnavailable {
			t.Fatalf("got %d, want 503", code)
		}
		if n := len(ev.Calls()); n != 1 {
			t.Fatalf("%d calls, want 1", n)
		}
	})
}

// An instance that answers again is no longer counted as refusing.
func TestColorFailingForgetsAfterAnAnswer(t *testing.T) {
	forEachPath(t, func(t *testing.T, fast bool) {
		// One green instance that refuses until it is started.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		rt, ev := newEvidenceRouter(t, fast, []string{refusingURL(t)}, []string{"http://" + addr}, nil)
		u := front(t, rt, fast)
		c := &http.Client{}
		defer c.CloseIdleConnections()
		if code, _, _ := get(t, c, u+"/", nil); code != http.StatusBadGateway {
			t.Fatalf("got %d, want 502", code)
		}
		b := rt.Pool("green").Backends()[0]
		if !b.refusing.Load() {
			t.Fatal("instance not marked refusing")
		}
		// The instance comes back at its address (free again since ln
		// closed; retried in case the system is slow to release it).
		for try := 0; ; try++ {
			if ln, err = net.Listen("tcp", addr); err == nil {
				break
			}
			if try == 50 {
				t.Fatalf("listen again on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("green")) }))
		srv.Listener = ln
		srv.Start()
		defer srv.Close()
		if code, body, _ := get(t, c, u+"/", nil); code != 200 || body != "green" {
			t.Fatalf("got %d %q", code, body)
		}
		if b.refusing.Load() {
			t.Fatal("still marked refusing after an answer")
		}
		if n := len(ev.Calls()); n != 1 {
			t.Fatalf("%d calls, want 1 (the first refusal)", n)
		}
	})
}

// Every green instance failing by outlier detection (5xx answers) is
// evidence too; the answers themselves reach the client (they were sent).
func TestColorFailingByOutliers(t *testing.T) {
	forEachPath(t, func(t *testing.T, fast bool) {
		var bad []string
		for range 2 {
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
			t.Cleanup(s.Close)
			bad = append(bad, s.URL)
		}
		blue := newBackend(t, "blue", 0)
		rt, ev := newEvidenceRouter(t, fast, []string{blue.URL}, bad, func(c *Config) {
			c.Outlier = OutlierConfig{Consecutive: 2}
		})
		ev.rollback = true
		u := front(t, rt, fast)
		c := &http.Client{}
		defer c.CloseIdleConnections()
		for i := 0; len(ev.Calls()) == 0; i++ {
			if i > 10 {
				t.Fatal("no evidence after 10 failing requests")
			}
			if code, _, _ := get(t, c, u+"/", nil); code != 500 {
				t.Fatalf("got %d, want the instance's 500", code)
			}
		}
		if calls := ev.Calls(); !strings.Contains(calls[0], "failing by outlier detection") {
			t.Fatalf("ColorFailing calls = %q", calls)
		}
		if code, body, _ := get(t, c, u+"/", nil); code != 200 || body != "blue" {
			t.Fatalf("after the rollback: %d %q", code, body)
		}
	})
}
