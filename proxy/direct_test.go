package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// countingBackend is an instance that counts the connections it accepted.
func countingBackend(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	be := httptest.NewUnstartedServer(h)
	be.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	return be, &conns
}

// h2Front serves the router over TLS with HTTP/2, as the TLS listener
// does, and returns its URL and a client for it.
func h2Front(t *testing.T, rt *Router) (string, *http.Client) {
	t.Helper()
	front := httptest.NewUnstartedServer(rt)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	c := front.Client()
	t.Cleanup(c.CloseIdleConnections)
	return front.URL, c
}

// TestDirectLegOverHTTP2: 200 HTTP/2 requests, 16 at a time: every body-less
// request reaches the instance on the direct leg over kept-alive
// connections; answers (fixed length, chunked with trailers, HEAD, 204)
// arrive whole; a POST's body still goes through (http.Transport).
func TestDirectLegOverHTTP2(t *testing.T) {
	be, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "part1-")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part2")
			w.Header().Set("X-Sum", "11")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/post":
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		default:
			w.Header().Set("X-Host", r.Host)
			_, _ = io.WriteString(w, "hello "+r.URL.RequestURI())
		}
	})
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, nil)
	if f.rt.pools[0].backends[0].direct == nil {
		t.Fatal("the default transport did not set up the direct leg")
	}
	tlsURL, c := h2Front(t, f.rt)
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	sem := make(chan struct{}, 16)
	for i := range 200 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if msg := directCheck(c, tlsURL, i); msg != "" {
				errs <- msg
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Each leg (direct, and http.Transport for the POSTs) keeps its own
	// pool: at most 16 connections each for 16 concurrent requests.
	if n := conns.Load(); n > 32 {
		t.Errorf("%d connections to the instance for 200 requests, 16 at a time: not kept alive", n)
	}
	if n := testutil.ToFloat64(f.rt.pools[0].metrics.retries); n != 0 {
		t.Errorf("%v retries", n)
	}
}

// directCheck sends request i (one of five kinds) and says what was wrong.
func directCheck(c *http.Client, base string, i int) string {
	var req *http.Request
	switch i % 5 {
	case 0:
		req, _ = http.NewRequest(http.MethodGet, base+"/x?i=1", nil)
	case 1:
		req, _ = http.NewRequest(http.MethodGet, base+"/chunked", nil)
	case 2:
		req, _ = http.NewRequest(http.MethodHead, base+"/x", nil)
	case 3:
		req, _ = http.NewRequest(http.MethodDelete, base+"/empty", nil)
	case 4:
		req, _ = http.NewRequest(http.MethodPost, base+"/post", strings.NewReader(strings.Repeat("b", 3000)))
	}
	res, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return req.Method + " " + req.URL.Path + ": " + err.Error()
	}
	if res.ProtoMajor != 2 {
		return "not HTTP/2: " + res.Proto
	}
	got := res.Status + " " + string(body)
	var want string
	switch i % 5 {
	case 0:
		want = "200 OK hello /x?i=1"
		if h := res.Header.Get("X-Host"); !strings.HasPrefix(h, "127.0.0.1:") {
			return "X-Host " + h
		}
	case 1:
		want = "200 OK part1-part2"
		if s := res.Trailer.Get("X-Sum"); s != "11" {
			return "trailer X-Sum " + s
		}
	case 2:
		want = "200 OK "
	case 3:
		want = "204 No Content "
	case 4:
		want = "200 OK " + strings.Repeat("b", 3000)
	}
	if got != want {
		return req.Method + " " + req.URL.Path + ": got " + got + ", want " + want
	}
	return ""
}

// TestDirectStaleConnection: an instance that resets every kept-alive
// connection at its second request. A GET is sent again on a fresh
// connection without counting a retry or an instance error (as
// http.Transport does); nothing fails.
func TestDirectStaleConnection(t *testing.T) {
	be, served := resettingBackend(t)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be}, []string{green.URL}, nil)
	client := f.front.Client()
	for i := range 10 {
		code, body, _ := get(t, client, f.front.URL+"/x", nil)
		if code != http.StatusOK || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if n := testutil.ToFloat64(f.rt.pools[0].metrics.retries); n != 0 {
		t.Errorf("%v retries counted for stale connections", n)
	}
	if served.Load() != 10 {
		t.Errorf("the instance served %d, want 10", served.Load())
	}
}

// TestDirectClientLeaves: a client that gives up while the instance thinks
// gets no answer, the instance's connection is closed (not pooled with an
// answer on its way) and no instance error is counted.
func TestDirectClientLeaves(t *testing.T) {
	release := make(chan struct{})
	closed := make(chan struct{}, 1)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done(): // the proxy closed the connection
				closed <- struct{}{}
			case <-release:
			}
			return
		}
		_, _ = io.WriteString(w, "fast")
	}))
	be.Start()
	t.Cleanup(be.Close)
	t.Cleanup(func() { close(release) })
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.front.URL+"/slow", nil)
	if res, err := f.front.Client().Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("got %s, want the client's own timeout", res.Status)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the instance's connection stayed open after the client left")
	}
	if code, body, _ := get(t, f.front.Client(), f.front.URL+"/next", nil); code != 200 || body != "fast" {
		t.Fatalf("next request: %d %q", code, body)
	}
	if n, _ := sumMetric(t, f.reg, "bluegreen_upstream_errors_total", ""); n != 0 {
		t.Errorf("%v instance errors counted for a client that left", n)
	}
}

// TestDirectIdleTimeout: a connection idle for longer than the upstream
// idle timeout is closed by the proxy without further traffic.
func TestDirectIdleTimeout(t *testing.T) {
	closed := make(chan struct{}, 4)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "blue")
	}))
	be.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, func(c *Config) {
		c.Upstream.IdleConnTimeout = 150 * time.Millisecond
	})
	start := time.Now()
	if code, body, _ := get(t, f.front.Client(), f.front.URL+"/", nil); code != 200 || body != "blue" {
		t.Fatalf("%d %q", code, body)
	}
	select {
	case <-closed:
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection to the instance was not closed")
	}
}

// TestDirectRefusesUnsendableFields: a Host or a header field that
// http.Transport would refuse to send (the codecs in front refuse them too;
// a handler can still be given one) never reaches the instance from the
// direct leg: 400, counted as the client's malformed request, nothing
// charged to the instance.
func TestDirectRefusesUnsendableFields(t *testing.T) {
	be, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, nil)
	for _, c := range []struct{ name, value, host string }{
		{"X-Note", "a\x00b", "app.example"},
		{"Bad Name", "v", "app.example"},
		{"X-Smuggle: 1\r\nX-Other", "v", "app.example"},
		{"X-Note", "v", "app\x03.example"},
	} {
		req := httptest.NewRequest(http.MethodGet, "http://app.example/x", nil)
		req.Header = http.Header{c.name: {c.value}}
		req.Host = c.host
		rec := httptest.NewRecorder()
		f.rt.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%q: %q, Host %q: status %d, want 400", c.name, c.value, c.host, rec.Code)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the instance got %d connections, want none", n)
	}
	if n, _ := sumMetric(t, f.reg, "bluegreen_upstream_errors_total", ""); n != 0 {
		t.Errorf("%v instance errors counted for the client's malformed requests", n)
	}
	if _, byKind := sumMetric(t, f.reg, "bluegreen_client_errors_total", "kind"); byKind[ClientMalformed] != 4 {
		t.Errorf("client errors by kind %v, want 4 %q", byKind, ClientMalformed)
	}
	if code, body, _ := get(t, f.front.Client(), f.front.URL+"/x", nil); code != 200 || body != "ok" {
		t.Fatalf("a well-formed request after them: %d %q", code, body)
	}
}
