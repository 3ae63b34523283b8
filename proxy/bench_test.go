package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// benchBody is the ~100-byte answer of the benchmark backend, as in bench/.
var benchBody = []byte(strings.Repeat("b", 99) + "\n")

// newBenchBackend is a loopback instance answering benchBody with a
// Content-Length, like bench/backend. It is a minimal HTTP/1.1 responder on
// a raw listener that allocates nothing per request, so -benchmem counts
// the proxy's allocations only (the benchmark runs in one process).
func newBenchBackend(tb testing.TB) *url.URL {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + string(benchBody))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serveBenchConn(c, resp) })
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// serveBenchConn answers every bodiless request on c (each ends with an
// empty line) with resp.
func serveBenchConn(c net.Conn, resp []byte) {
	defer c.Close()
	buf := make([]byte, 8192)
	have := 0
	for {
		n, err := c.Read(buf[have:])
		if err != nil {
			return
		}
		have += n
		for {
			i := bytes.Index(buf[:have], []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
			have = copy(buf, buf[i+4:have])
		}
		if have == len(buf) {
			return // a header block larger than the buffer: not a bench request
		}
	}
}

// newBenchRouter is a Router with one healthy instance per colour, both
// colours on real loopback backends.
func newBenchRouter(tb testing.TB, metrics bool) *Router {
	tb.Helper()
	tr := NewTransport(TransportConfig{})
	tb.Cleanup(tr.CloseIdleConnections)
	cfg := Config{
		PreviewHeader: "X-Bluegreen-Preview",
		PreviewCookie: "bluegreen_preview",
		Transport:     tr,
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if metrics {
		m, err := NewMetrics(prometheus.NewRegistry())
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Metrics = m
	}
	cfg.Colors[0] = ColorConfig{Name: "blue", URLs: []*url.URL{newBenchBackend(tb)}}
	cfg.Colors[1] = ColorConfig{Name: "green", URLs: []*url.URL{newBenchBackend(tb)}}
	rt, err := NewRouter(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	for _, color := range []string{"blue", "green"} {
		p := rt.Pool(color)
		for _, b := range p.Backends() {
			p.SetStatus(b.Name(), true)
		}
	}
	return rt
}

// discardWriter is a reusable http.ResponseWriter that throws the answer
// away, so the benchmark counts the proxy's allocations and not a recorder's.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) WriteHeader(code int) {
	if d.code == 0 {
		d.code = code
	}
}
func (d *discardWriter) Write(p []byte) (int, error) {
	if d.code == 0 {
		d.code = http.StatusOK
	}
	d.n += len(p)
	return len(p), nil
}
func (d *discardWriter) Flush() {}

func (d *discardWriter) reset() {
	clear(d.h)
	d.code, d.n = 0, 0
}

// benchServeHTTP drives Router.ServeHTTP directly: the inbound request is
// built once per goroutine (the server's parsing is not counted), the
// upstream round trip is real (loopback, keep-alive).
func benchServeHTTP(b *testing.B, metrics bool, hdr http.Header) {
	rt := newBenchRouter(b, metrics)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "http://bench.example/path?q=1", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("User-Agent", "bench")
		req.Header.Set("Accept", "*/*")
		for k, v := range hdr {
			req.Header[k] = v
		}
		w := &discardWriter{h: make(http.Header)}
		for pb.Next() {
			w.reset()
			rt.ServeHTTP(w, req)
			if w.code != http.StatusOK || w.n != len(benchBody) {
				b.Fatalf("status %d, %d bytes", w.code, w.n)
			}
		}
	})
}

// BenchmarkServeHTTP is the request path of one proxied request.
func BenchmarkServeHTTP(b *testing.B) {
	b.Run("metrics=off", func(b *testing.B) { benchServeHTTP(b, false, nil) })
	b.Run("metrics=on", func(b *testing.B) { benchServeHTTP(b, true, nil) })
	b.Run("metrics=on/preview", func(b *testing.B) {
		benchServeHTTP(b, true, http.Header{"X-Bluegreen-Preview": {"1"}})
	})
	b.Run("metrics=on/cookie", func(b *testing.B) {
		benchServeHTTP(b, true, http.Header{"Cookie": {"session=abc; theme=dark"}})
	})
}

// BenchmarkLoopback is the whole path over real sockets: a keep-alive
// client → http.Server with the Router → backend. The client's own cost is
// included, so it is an upper bound on the proxy's.
func BenchmarkLoopback(b *testing.B) {
	rt := newBenchRouter(b, true)
	front := httptest.NewServer(rt)
	b.Cleanup(front.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 512)
		for pb.Next() {
			res, err := client.Get(front.URL + "/path")
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for {
				m, err := res.Body.Read(buf)
				n += m
				if err != nil {
					break
				}
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK || n != len(benchBody) {
				b.Fatalf("status %d, %d bytes", res.StatusCode, n)
			}
		}
	})
}

// BenchmarkFront compares the two front ends over real sockets with the
// same Router and instances: the fast path (Server) and net/http
// (http.Server with the Router as handler). The clients are raw keep-alive
// connections that allocate nothing, so -benchmem counts the proxy and the
// instance only (the instance allocates nothing either).
func BenchmarkFront(b *testing.B) {
	req := []byte("GET /path HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\n\r\n")
	run := func(b *testing.B, addr string) {
		b.SetBytes(int64(len(benchBody)))
		runBenchClients(b, addr, req)
	}
	b.Run("fast", func(b *testing.B) {
		run(b, serveBenchFast(b, newBenchRouterFast(b)))
	})
	b.Run("nethttp", func(b *testing.B) {
		rt := newBenchRouter(b, true)
		front := httptest.NewServer(rt)
		b.Cleanup(front.Close)
		run(b, front.Listener.Addr().String())
	})
}

// serveBenchFast serves rt on a loopback listener with the fast path until
// the benchmark ends, and returns the address.
func serveBenchFast(b *testing.B, rt *Router) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &Server{Router: rt, Fallback: &http.Server{Handler: rt}}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	b.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// runBenchClients sends req over raw keep-alive connections to addr, one
// per parallel goroutine, and reads each answer; the clients allocate
// nothing, so -benchmem counts the proxy and the instance only.
func runBenchClients(b *testing.B, addr string, req []byte) {
	runBenchClientsWith(b, addr, func() []byte { return req })
}

// runBenchClientsWith is runBenchClients with a request of its own for each
// client connection (made once, before its first request).
func runBenchClientsWith(b *testing.B, addr string, newReq func() []byte) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := newReq()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if err := readBenchResponse(c, buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// newBenchRouterFast is newBenchRouter with metrics and without a custom
// Transport, so Server uses the fast path.
func newBenchRouterFast(tb testing.TB) *Router {
	tb.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{
		PreviewHeader: "X-Bluegreen-Preview",
		PreviewCookie: "bluegreen_preview",
		Metrics:       m,
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	cfg.Colors[0] = ColorConfig{Name: "blue", URLs: []*url.URL{newBenchBackend(tb)}}
	cfg.Colors[1] = ColorConfig{Name: "green", URLs: []*url.URL{newBenchBackend(tb)}}
	rt, err := NewRouter(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if !rt.FastPath() {
		tb.Fatal("router cannot use the fast path")
	}
	for _, color := range []string{"blue", "green"} {
		p := rt.Pool(color)
		for _, b := range p.Backends() {
			p.SetStatus(b.Name(), true)
		}
	}
	tb.Cleanup(rt.CloseIdleConnections)
	return rt
}

// readBenchResponse reads one response with a Content-Length body of
// len(benchBody) bytes from c.
func readBenchResponse(c net.Conn, buf []byte) error {
	have := 0
	for {
		n, err := c.Read(buf[have:])
		if err != nil {
			return err
		}
		have += n
		i := bytes.Index(buf[:have], []byte("\r\n\r\n"))
		if i < 0 {
			continue
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) {
			return fmt.Errorf("unexpected answer %q", buf[:i])
		}
		want := i + 4 + len(benchBody)
		for have < want {
			n, err := c.Read(buf[have:])
			if err != nil {
				return err
			}
			have += n
		}
		if have != want {
			return fmt.Errorf("%d bytes more than the response", have-want)
		}
		return nil
	}
}
