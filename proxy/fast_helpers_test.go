package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Helpers of the fast-path tests: a proxy.Server on a real loopback
// listener, raw TCP instances that answer exact bytes, and a raw client.

// fastFront is a proxy.Server (the fast path, with Fallback an http.Server
// whose Handler is the Router) serving on 127.0.0.1:0.
type fastFront struct {
	srv  *Server
	addr string // host:port
	url  string // http://host:port
	done chan error
}

// startFast serves rt on a new loopback listener with a fast Server; mutate
// may adjust the Server (timeouts, Fallback settings) before Serve. The
// Server is closed, and its Serve goroutine waited for, in t.Cleanup.
func startFast(t testing.TB, rt *Router, mutate func(*Server)) *fastFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startFastOn(t, rt, ln, mutate)
}

// newFastServer is a Server of rt as the tests use it (a quiet net/http
// Fallback, 5 s header timeouts), adjusted by mutate when set.
func newFastServer(rt *Router, mutate func(*Server)) *Server {
	s := &Server{
		Router: rt,
		Fallback: &http.Server{
			Handler:           rt,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0),
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

// startFastOn is startFast on a given listener.
func startFastOn(t testing.TB, rt *Router, ln net.Listener, mutate func(*Server)) *fastFront {
	t.Helper()
	if !rt.FastPath() {
		t.Fatal("the router cannot use the fast path")
	}
	s := newFastServer(rt, mutate)
	ff := &fastFront{srv: s, addr: ln.Addr().String(), url: "http://" + ln.Addr().String(), done: make(chan error, 1)}
	go func() { ff.done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case err := <-ff.done:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
		rt.CloseIdleConnections()
	})
	return ff
}

// newRouterOnly builds a Router like newFixture but without the net/http
// front, every instance healthy.
func newRouterOnly(t testing.TB, blue, green []string, mutate func(*Config)) *Router {
	t.Helper()
	cfg := Config{
		PreviewHeader: "X-Bluegreen-Preview",
		PreviewCookie: "bluegreen_preview",
		Log:           testLogger(t),
		DrainTimeout:  time.Minute,
	}
	cfg.Colors[0].Name, cfg.Colors[1].Name = "blue", "green"
	for _, s := range blue {
		cfg.Colors[0].URLs = append(cfg.Colors[0].URLs, mustURL(t, s))
	}
	for _, s := range green {
		cfg.Colors[1].URLs = append(cfg.Colors[1].URLs, mustURL(t, s))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	rt, err := NewRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rt.pools {
		for _, b := range p.backends {
			p.SetStatus(b.name, true)
		}
	}
	t.Cleanup(rt.CloseIdleConnections)
	return rt
}

// seenReq is what an instance received.
type seenReq struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
	Body       []byte
	TE         []string
	CL         int64
	Trailer    http.Header
}

// rawHandler answers one request on an instance connection with exact
// bytes; it returns whether the connection stays open for another request.
type rawHandler func(c net.Conn, br *bufio.Reader, r *http.Request, body []byte) (keep bool)

// rawInstance is an instance on a raw TCP listener: it parses requests with
// http.ReadRequest (so it sees them as a Go server does) and lets the test
// write the response bytes.
type rawInstance struct {
	ln     net.Listener
	URL    string
	handle rawHandler

	accepted atomic.Int64
	hits     atomic.Int64
	// parseErrors counts requests the instance could not parse (not a
	// connection that ended between or inside requests): a proxy that
	// desynchronises its instance connections shows as one.
	parseErrors    atomic.Int64
	lastParseError atomic.Value
	badEscapes     atomic.Int64 // requests refused for an invalid %-escape in the target
	mu             sync.Mutex
	seen           []seenReq
	conns          map[net.Conn]struct{}
	wg             sync.WaitGroup
	closed         atomic.Bool
}

func newRawInstance(t testing.TB, h rawHandler) *rawInstance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ri := &rawInstance{ln: ln, URL: "http://" + ln.Addr().String(), handle: h, conns: make(map[net.Conn]struct{})}
	ri.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ri.accepted.Add(1)
			ri.mu.Lock()
			if ri.closed.Load() {
				ri.mu.Unlock()
				c.Close()
				return
			}
			ri.conns[c] = struct{}{}
			ri.mu.Unlock()
			ri.wg.Go(func() {
				defer func() {
					c.Close()
					ri.mu.Lock()
					delete(ri.conns, c)
					ri.mu.Unlock()
				}()
				var raw bytes.Buffer // the connection's bytes, for the report of a parse error
				br := bufio.NewReader(io.TeeReader(c, &limitedWriter{&raw, 64 << 10}))
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						ri.noteError(err, raw.Bytes())
						return
					}
					body, err := io.ReadAll(r.Body)
					if err != nil {
						ri.noteError(err, raw.Bytes())
						return
					}
					ri.hits.Add(1)
					ri.mu.Lock()
					ri.seen = append(ri.seen, seenReq{
						Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(),
						Body: body, TE: r.TransferEncoding, CL: r.ContentLength, Trailer: r.Trailer.Clone(),
					})
					ri.mu.Unlock()
					if !ri.handle(c, br, r, body) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(ri.Close)
	return ri
}

// limitedWriter keeps the first bytes written to it.
type limitedWriter struct {
	b *bytes.Buffer
	n int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if room := w.n - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (ri *rawInstance) noteError(err error, raw []byte) {
	if strings.Contains(err.Error(), "invalid URL escape") {
		ri.badEscapes.Add(1) // see TestFastInvalidTargetEscape
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) {
		return // the connection ended
	}
	ri.parseErrors.Add(1)
	ri.lastParseError.Store(fmt.Sprintf("%v; the connection carried %q", err, raw))
}

// Close stops the instance: the listener and every open connection.
func (ri *rawInstance) Close() {
	ri.mu.Lock()
	ri.closed.Store(true)
	ri.ln.Close()
	for c := range ri.conns {
		c.Close()
	}
	ri.mu.Unlock()
	ri.wg.Wait()
}

func (ri *rawInstance) last() seenReq {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if len(ri.seen) == 0 {
		return seenReq{}
	}
	return ri.seen[len(ri.seen)-1]
}

func (ri *rawInstance) at(i int) seenReq {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return ri.seen[i]
}

func (ri *rawInstance) openConns() int {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	return len(ri.conns)
}

// okHandler answers every request 200 with "<name> <path>".
func okHandler(name string) rawHandler {
	return func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		body := name + " " + r.URL.Path
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		return err == nil
	}
}

// rawConn is a client connection to a front that writes exact bytes and
// reads responses with http.ReadResponse.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.nc, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read reads one response (to a request of method) and its whole body.
func (rc *rawConn) read(method string) (*http.Response, string, error) {
	res, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), err
}

func (rc *rawConn) mustRead(method string) (*http.Response, string) {
	rc.t.Helper()
	res, body, err := rc.read(method)
	if err != nil {
		rc.t.Fatalf("reading the response: %v", err)
	}
	return res, body
}

// closedWithin reports whether the peer closed the connection (EOF or an
// error that is not a timeout) within d, discarding what arrives meanwhile.
func (rc *rawConn) closedWithin(d time.Duration) bool {
	_ = rc.nc.SetReadDeadline(time.Now().Add(d))
	defer rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, rc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// logRecorder is a slog handler that keeps the records at or above a level.
type logRecorder struct {
	mu   sync.Mutex
	recs []string
	min  slog.Level
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= l.min }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) find(sub string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if strings.Contains(r, sub) {
			return r
		}
	}
	return ""
}

// hostOf is the host:port of a URL string.
func hostOf(t testing.TB, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// spyListener hands out connections whose RawConn reports when the
// connection's goroutine parks on the poller: the read callback returned
// false (nothing to read). Callbacks run under the connection's mutex, so a
// test that looks while it is parked (whileParked) reads what they wrote,
// even if a wake-up that finds nothing calls one again.
type spyListener struct {
	net.Listener
}

func (l spyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &spyConn{TCPConn: c.(*net.TCPConn)}, nil
}

type spyConn struct {
	*net.TCPConn
	mu     sync.Mutex // held by the connection's poller callbacks
	parked bool       // the last callback returned false: the goroutine waits on the poller
}

// whileParked calls look while the connection's goroutine waits on the
// poller, and reports whether it did.
func (c *spyConn) whileParked(look func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parked {
		look()
	}
	return c.parked
}

func (c *spyConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return spyRawConn{RawConn: rc, c: c}, nil
}

type spyRawConn struct {
	syscall.RawConn
	c *spyConn
}

func (r spyRawConn) Read(f func(fd uintptr) bool) error {
	return r.RawConn.Read(func(fd uintptr) bool {
		r.c.mu.Lock()
		defer r.c.mu.Unlock()
		ok := f(fd)
		r.c.parked = !ok
		return ok
	})
}

// servedOn records the instance connection that served each path, for
// tests of whether a connection was kept for the next request.
type servedOn struct {
	mu sync.Mutex
	m  map[string]net.Conn
}

func (s *servedOn) note(path string, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]net.Conn{}
	}
	s.m[path] = c
}

// same reports whether paths a and b were served on one connection.
func (s *servedOn) same(a, b string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[a] != nil && s.m[a] == s.m[b]
}

// held is for an instance's handler that holds a request until the test
// lets it go: it signals arrived and waits for release, false when none
// comes within 10 s.
func held(arrived chan<- struct{}, release <-chan struct{}) bool {
	arrived <- struct{}{}
	select {
	case <-release:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}
