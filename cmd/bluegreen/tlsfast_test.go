package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/certs/certtest"
	"github.com/cryoprotect/bluegreen/proxy/h1"
	"github.com/cryoprotect/bluegreen/proxy/h2/h2test"
)

// echoApp answers 200 "ok" with its colour, the X-Forwarded-Proto it was
// sent and a field named in lower case: the fast codec relays field names
// as the instance wrote them, net/http canonicalizes them (X-Lower-Case).
// GET /hang answers nothing until the proxy gives up the request (then
// cancelled is told) or 10 s pass.
func echoApp(t *testing.T, color string, cancelled ...chan<- struct{}) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			select {
			case <-r.Context().Done():
				for _, c := range cancelled {
					c <- struct{}{}
				}
			case <-time.After(10 * time.Second):
			}
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header()["x-lower-case"] = []string{"1"}
		w.Header().Set("X-Color", color)
		w.Header().Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

// dialTLS opens an HTTPS connection offering protos by ALPN.
func (st *tlsStack) dialTLS(t *testing.T, protos ...string) *tls.Conn {
	t.Helper()
	tc, err := tls.Dial("tcp", st.a.tls, &tls.Config{ServerName: "site.test", RootCAs: st.ca.Pool, NextProtos: protos})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

// rawAnswer is a response read byte for byte: its head lines as sent.
type rawAnswer struct {
	status string
	lines  []string
	body   string
}

func (a rawAnswer) has(line string) bool {
	for _, l := range a.lines {
		if l == line {
			return true
		}
	}
	return false
}

func (a rawAnswer) field(name string) string {
	for _, l := range a.lines {
		if k, v, ok := strings.Cut(l, ": "); ok && strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// readRaw reads one response with a Content-Length body (or none).
func readRaw(br *bufio.Reader) (rawAnswer, error) {
	var a rawAnswer
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return a, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		if a.status == "" {
			a.status = l
			continue
		}
		a.lines = append(a.lines, l)
	}
	n, _ := strconv.Atoi(a.field("Content-Length"))
	b := make([]byte, n)
	_, err := io.ReadFull(br, b)
	a.body = string(b)
	return a, err
}

// HTTPS/1.1 takes the fast codec (the instance's field names arrive as
// written), with X-Forwarded-Proto https and HSTS, on one keep-alive
// connection; what it hands to net/http is known there as TLS too; HTTP/2
// stays on net/http; BLUEGREEN_FAST_PATH=false keeps everything on it.
func TestServeTLSFastCodec(t *testing.T) {
	blue, green := echoApp(t, "blue"), echoApp(t, "green")
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_path=%v", fast), func(t *testing.T) {
			st := startTLSStack(t, blue.URL, green.URL, "BLUEGREEN_HSTS=max-age=60", "BLUEGREEN_PREVIEW=true",
				"BLUEGREEN_FAST_PATH="+strconv.FormatBool(fast))
			for _, alpn := range [][]string{{"http/1.1"}, nil} {
				tc := st.dialTLS(t, alpn...)
				br := bufio.NewReader(tc)
				ask := func(req string) rawAnswer {
					t.Helper()
					tc.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.WriteString(tc, req); err != nil {
						t.Fatal(err)
					}
					a, err := readRaw(br)
					if err != nil {
						t.Fatalf("%q: %v %+v", req, err, a)
					}
					return a
				}
				for i := range 3 {
					a := ask("GET /x HTTP/1.1\r\nHost: site.test\r\n\r\n")
					if a.status != "HTTP/1.1 200 OK" || a.body != "ok" || a.field("X-Color") != "blue" ||
						a.field("X-Seen-Proto") != "https" || a.field("Strict-Transport-Security") != "max-age=60" || a.field("Connection") == "close" {
						t.Fatalf("ALPN %v, request %d: %+v", alpn, i, a)
					}
					if a.has("x-lower-case: 1") != fast {
						t.Fatalf("ALPN %v, request %d: fast codec %v, want %v: %q", alpn, i, !fast, fast, a.lines)
					}
				}
				a := ask("GET /x HTTP/1.1\r\nHost: site.test\r\nX-Bluegreen-Preview: 1\r\n\r\n")
				if a.field("X-Color") != "green" || a.has("x-lower-case: 1") != fast {
					t.Fatalf("preview: %+v", a)
				}
				// A chunked body: the codec hands the connection to net/http,
				// which must still know it is TLS.
				a = ask("POST /up HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
				if a.status != "HTTP/1.1 200 OK" || a.field("X-Seen-Proto") != "https" || a.field("Strict-Transport-Security") != "max-age=60" ||
					a.has("x-lower-case: 1") {
					t.Fatalf("handed-off request: %+v", a)
				}
				a = ask("GET /x HTTP/1.1\r\nHost: site.test\r\n\r\n")
				if a.field("X-Seen-Proto") != "https" || a.has("x-lower-case: 1") {
					t.Fatalf("request after the hand-off: %+v", a)
				}
			}
			res, err := st.client(true, 1).Get("https://" + st.a.tls + "/x")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.ProtoMajor != 2 || res.Header.Get("X-Seen-Proto") != "https" || res.Header.Get("Strict-Transport-Security") != "max-age=60" {
				t.Fatalf("h2: %+v", res)
			}
		})
	}
}

// metricSum adds up the samples of the metric lines that start with
// prefix (a name, or a name and the start of its labels).
func metricSum(text, prefix string) float64 {
	var sum float64
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			sum += v
		}
	}
	return sum
}

// waitMetric waits until the sum of the metric lines starting with prefix
// reaches want.
func waitMetric(t *testing.T, adm, prefix string, want float64) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := metricsText(t, "http://"+adm)
		if metricSum(m, prefix) >= want {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v, want %v", prefix, metricSum(m, prefix), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client faults over TLS are the client's, as on the plain listener:
// faulty framing gets 400, a client that leaves in the middle of its body
// is a 499 and no instance error; plain HTTP on the TLS port gets a 400
// and, like other failed handshakes, is counted without an error log.
func TestServeTLSClientFaults(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	blue, green := echoApp(t, "blue", cancelled), echoApp(t, "green")
	st := startTLSStack(t, blue.URL, green.URL)

	// A client that leaves while its request waits for the instance: the
	// request is given up at once, not when the instance answers.
	tc := st.dialTLS(t, "http/1.1")
	io.WriteString(tc, "GET /hang HTTP/1.1\r\nHost: site.test\r\n\r\n")
	time.Sleep(200 * time.Millisecond)
	tc.Close() // with a close_notify alert ahead of the FIN
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the instance's request went on 3 s after its client left")
	}

	tc = st.dialTLS(t, "http/1.1")
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(tc, "POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
	a, err := readRaw(bufio.NewReader(tc))
	if err != nil || !strings.HasPrefix(a.status, "HTTP/1.1 400 ") {
		t.Fatalf("CL with TE: %v %+v", err, a)
	}
	waitMetric(t, st.a.admin, `bluegreen_client_errors_total{kind="malformed"}`, 1)

	tc = st.dialTLS(t, "http/1.1")
	io.WriteString(tc, "POST /up HTTP/1.1\r\nHost: site.test\r\nContent-Length: 100000\r\n\r\n0123456789")
	time.Sleep(100 * time.Millisecond) // the request reaches the instance
	tc.Close()
	m := waitMetric(t, st.a.admin, `bluegreen_requests_total{code="499"`, 2)
	if n := metricSum(m, "bluegreen_upstream_errors_total"); n != 0 {
		t.Fatalf("a client leaving mid-body counted %v instance errors:\n%s", n, grep(m, "bluegreen_upstream_errors_total"))
	}

	nc, err := net.Dial("tcp", st.a.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
	b, _ := io.ReadAll(nc)
	if !strings.HasPrefix(string(b), "HTTP/1.0 400 Bad Request") || !strings.Contains(string(b), "Client sent an HTTP request to an HTTPS server") {
		t.Fatalf("plain HTTP on the TLS port: %q", b)
	}
	// The default certificate does not cover nobody.test: the client
	// gives up, and the handshake counts as failed.
	if _, err := tls.Dial("tcp", st.a.tls, &tls.Config{ServerName: "nobody.test", RootCAs: st.ca.Pool}); err == nil {
		t.Fatal("handshake for an unknown name succeeded")
	}
	waitMetric(t, st.a.admin, `bluegreen_tls_handshakes_total{result="plaintext_http"}`, 1)
	m = waitMetric(t, st.a.admin, `bluegreen_tls_handshakes_total{result="failed"}`, 1)
	if n := metricSum(m, `bluegreen_tls_handshakes_total{result="ok"}`); n < 2 {
		t.Fatalf("%v handshakes ok, want at least 2", n)
	}
	for _, l := range strings.Split(st.logs.String(), "\n") {
		if strings.Contains(l, "handshake") && !strings.Contains(l, `"level":"DEBUG"`) {
			t.Fatalf("a failed handshake logged above debug: %s", l)
		}
	}
}

// Keep-alive HTTPS/1.1 clients through ten cutovers: none fails, each
// answer comes from the colour active when it was sent.
func TestServeTLSHTTP1CutoversUnderLoad(t *testing.T) {
	blue, _ := newApps(t, "blue", 2, nil)
	green, _ := newApps(t, "green", 2, nil)
	st := startTLSStack(t, urls(blue), urls(green))
	c := st.client(false, 16)
	get := func() (*http.Response, error) {
		res, err := c.Get("https://" + st.a.tls + "/")
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		return res, err
	}
	if total := st.cutoversUnderLoad(t, 16, get, 1); total < 320 {
		t.Fatalf("%d HTTPS/1.1 requests across 10 cutovers, want at least 320", total)
	}
}

// cutoversUnderLoad runs get in a loop on workers goroutines through ten
// cutovers (blue to green and back) and fails t if a request fails, is
// answered by a colour that was not active when it was sent, or does not
// speak HTTP/protoMajor. It returns how many requests were sent.
func (st *tlsStack) cutoversUnderLoad(t *testing.T, workers int, get func() (*http.Response, error), protoMajor int) int64 {
	t.Helper()
	var started, done atomic.Int64
	colorOf := func(g int64) string { return [2]string{"blue", "green"}[g%2] }
	var total, failed, wrong, otherProto atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				before := done.Load()
				res, err := get()
				total.Add(1)
				if err != nil || res.StatusCode != 200 {
					failed.Add(1)
					if err != nil {
						t.Log(err)
					}
					continue
				}
				if res.ProtoMajor != protoMajor {
					otherProto.Add(1)
				}
				if res.Header.Get(app.ColorHeader) != colorOf(before) && started.Load() == before {
					wrong.Add(1)
				}
			}
		})
	}
	for i := range int64(10) {
		time.Sleep(150 * time.Millisecond)
		started.Store(i + 1)
		st.cutover(t, colorOf(i+1))
		done.Store(i + 1)
	}
	time.Sleep(150 * time.Millisecond)
	cancel()
	wg.Wait()
	t.Logf("%d requests, %d failed, %d on the wrong colour, %d not HTTP/%d, across 10 cutovers", total.Load(), failed.Load(), wrong.Load(), otherProto.Load(), protoMajor)
	if failed.Load() != 0 || wrong.Load() != 0 || otherProto.Load() != 0 {
		t.Fatalf("%d requests: %d failed, %d wrong colour, %d not HTTP/%d", total.Load(), failed.Load(), wrong.Load(), otherProto.Load(), protoMajor)
	}
	return total.Load()
}

// The graceful stop treats HTTPS/1.1 connections like plain ones: during
// the delay a kept-alive connection's next answer says Connection: close,
// an event stream gets its last chunk, and the listener then stops.
func TestServeTLSHTTP1GracefulShutdown(t *testing.T) {
	blue, _ := newApps(t, "blue", 1, nil)
	green, _ := newApps(t, "green", 1, nil)
	st := startTLSStack(t, urls(blue), urls(green), "BLUEGREEN_SHUTDOWN_DELAY=1s")
	reuse := &rawConn{nc: st.dialTLS(t, "http/1.1")}
	reuse.br = bufio.NewReader(reuse.nc)
	if res, _, err := reuse.get("/"); err != nil || res.StatusCode != 200 || res.Close {
		t.Fatalf("before: %v %+v", err, res)
	}
	events := st.dialTLS(t, "http/1.1")
	events.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(events, "GET /events HTTP/1.1\r\nHost: site.test\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(events), nil)
	if err != nil || res.StatusCode != 200 || len(res.TransferEncoding) == 0 {
		t.Fatalf("event stream: %v %+v", err, res)
	}
	streamEnd := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, res.Body)
		streamEnd <- err
	}()

	stopped := make(chan error, 1)
	go func() { stopped <- st.stop() }()
	for !strings.Contains(st.logs.String(), logDelay) {
		time.Sleep(10 * time.Millisecond)
	}
	if res, _, err := reuse.get("/"); err != nil || res.StatusCode != 200 || !res.Close {
		t.Fatalf("kept-alive request during the delay: %v %+v, want 200 with Connection: close", err, res)
	}
	if err := reuse.closedByPeer(5 * time.Second); err != nil {
		t.Fatalf("connection after its Connection: close answer: %v", err)
	}
	if err := <-streamEnd; err != nil {
		t.Fatalf("event stream at shutdown: %v, want a clean last chunk", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", st.a.tls, time.Second); err == nil {
		c.Close()
		t.Fatal("the TLS listener still accepts after the stop")
	}
}

// The edge's own accept loop: a connection that negotiates acme-tls/1
// (a TLS-ALPN-01 validation, answered by the handshake) never reaches
// HTTP; one that never finishes its handshake is closed after the
// handshake timeout and counted as closed by the client.
func TestTLSEdgeALPNAndHandshakeTimeout(t *testing.T) {
	ca := certtest.NewCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logged sync.Mutex
	var lines []string
	e := &tlsEdge{ln: ln, handshakeTimeout: 200 * time.Millisecond, h2: h1.NewConnQueue(ln.Addr())}
	cert, err := tls.X509KeyPair(ca.Leaf(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "site.test"))
	if err != nil {
		t.Fatal(err)
	}
	e.srv = &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}},
		ErrorLog: log.New(writerFunc(func(p []byte) (int, error) {
			logged.Lock()
			defer logged.Unlock()
			lines = append(lines, string(p))
			return len(p), nil
		}), "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- e.serve() }()

	tc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "site.test", RootCAs: ca.Pool, NextProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if p := tc.ConnectionState().NegotiatedProtocol; p != "acme-tls/1" {
		t.Fatalf("negotiated %q", p)
	}
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
	if b, err := io.ReadAll(tc); len(b) != 0 || isTimeout(err) {
		t.Fatalf("acme-tls/1 connection: read %q %v, want closed without an answer", b, err)
	}

	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); isTimeout(err) || time.Since(start) > 3*time.Second {
		t.Fatalf("silent connection: %v after %v, want closed after the 200ms handshake timeout", err, time.Since(start))
	}
	logged.Lock()
	got := strings.Join(lines, "")
	logged.Unlock()
	if !strings.Contains(got, "TLS handshake error from ") || !strings.Contains(got, "timeout") {
		t.Fatalf("error log: %q", got)
	}

	// A connection in its handshake is closed when the listener stops.
	nc2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	time.Sleep(50 * time.Millisecond)
	e.stopAccepting()
	nc2.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := nc2.Read(make([]byte, 1)); isTimeout(err) {
		t.Fatal("a connection in its handshake stayed open after the stop")
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("serve: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestServeTLSH2Servers: h2 connections go to the proxy's HTTP/2 codec by
// default and to Go's HTTP/2 server with BLUEGREEN_H2=nethttp. A request
// with a connection-specific field tells them apart: RFC 9113 makes it
// malformed, a stream error, and the codec resets the stream; Go's server
// answers it (400).
func TestServeTLSH2Servers(t *testing.T) {
	blue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "blue") }))
	defer blue.Close()
	for _, tc := range []struct {
		env    string
		answer bool
	}{{"BLUEGREEN_H2=fast", false}, {"BLUEGREEN_H2=nethttp", true}} {
		t.Run(tc.env, func(t *testing.T) {
			st := startTLSStack(t, blue.URL, blue.URL, tc.env, "BLUEGREEN_SHUTDOWN_DELAY=0s")
			tc2, err := tls.Dial("tcp", st.a.tls, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			if err != nil {
				t.Fatal(err)
			}
			c := h2test.New(t, tc2, true)
			c.Request(1, "/", true, "connection", "keep-alive")
			switch f := c.Next(1).(type) {
			case *http2.MetaHeadersFrame:
				if !tc.answer || f.PseudoValue("status") == "" {
					t.Fatalf("answered %s", f.PseudoValue("status"))
				}
			case *http2.RSTStreamFrame:
				if tc.answer || f.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("stream reset with %v", f.ErrCode)
				}
			default:
				t.Fatalf("got %v", f)
			}
		})
	}
}
