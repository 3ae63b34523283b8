package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fuzz targets of the fast path. Seed corpora live in
// testdata/fuzz/<Target>/; run one with
//
//	go test -run '^$' -fuzz '^FuzzParseRequest$' -fuzztime 60s ./proxy/

// fuzzFront is a fast Server over two raw instances, with a logger that
// keeps errors (a recovered panic is logged as one).
type fuzzFront struct {
	ff    *fastFront
	logs  *logRecorder
	blue  *rawInstance
	green *rawInstance
}

func newFuzzFront(f *testing.F, h rawHandler) *fuzzFront {
	logs := &logRecorder{min: slog.LevelError}
	blue := newRawInstance(f, h)
	green := newRawInstance(f, h)
	rt := newRouterOnly(f, []string{blue.URL + "/base/"}, []string{green.URL}, func(c *Config) {
		c.Log = slog.New(logs)
		c.Upstream.ResponseHeaderTimeout = 2 * time.Second
	})
	ff := startFast(f, rt, func(s *Server) {
		s.ReadHeaderTimeout = time.Second
		s.Fallback.ReadHeaderTimeout = time.Second
		s.Fallback.MaxHeaderBytes = 64 << 10
	})
	return &fuzzFront{ff: ff, logs: logs, blue: blue, green: green}
}

// exchange sends data on a new connection, then a last request with
// "Connection: close", and reads everything until the proxy closes. When
// the proxy goes quiet for 50ms (a body still expected, a head never
// finished) it half-closes; the whole exchange must end within 5s. It does
// not half-close at once: net/http takes that for a client gone and cancels
// the request, which would keep fallback requests from the instances.
func (z *fuzzFront) exchange(t *testing.T, data []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", z.ff.addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	wg.Go(func() {
		_, _ = c.Write(append(bytes.Clone(data), "GET /__end HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"...))
	})
	var got bytes.Buffer
	buf := make([]byte, 32<<10)
	deadline := time.Now().Add(5 * time.Second)
	halfClosed := false
	for {
		quiet := time.Now().Add(50 * time.Millisecond)
		if quiet.After(deadline) {
			quiet = deadline
		}
		_ = c.SetReadDeadline(quiet)
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err == nil {
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			break // closed or reset by the proxy
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy neither answered nor closed within 5s; got %q for %q", trunc(got.String()), trunc(string(data)))
		}
		if !halfClosed {
			_ = c.(*net.TCPConn).CloseWrite()
			halfClosed = true
		}
	}
	if p := z.logs.find("panic"); p != "" {
		t.Fatalf("panic serving %q: %s", data, p)
	}
	return got.Bytes()
}

// settle ends the exchange with the instances: the pooled instance
// connections are closed and the instances have finished reading, so what
// they saw is this input's doing.
func (z *fuzzFront) settle(t *testing.T) {
	t.Helper()
	z.ff.srv.Router.CloseIdleConnections()
	deadline := time.Now().Add(2 * time.Second)
	for z.blue.openConns()+z.green.openConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("instance connections still open 2s after the exchange")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// FuzzFastServer sends any bytes to a fast Server: it never panics, answers
// or closes (no hang), answers only in HTTP/1.1 status lines, and never
// desynchronises its instance connections: every request an instance
// reads parses cleanly.
func FuzzFastServer(f *testing.F) {
	// Every request the proxy forwards from this (untrusted) client carries
	// the X-Forwarded-For it set: 127.0.0.1. Bytes of the client that an
	// instance reads as a request of their own (smuggling) do not.
	var smuggled atomic.Int64
	var smuggledLine atomic.Value
	z := newFuzzFront(f, func(c net.Conn, br *bufio.Reader, r *http.Request, body []byte) bool {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
			smuggled.Add(1)
			smuggledLine.Store(fmt.Sprintf("%s %s X-Forwarded-For %q", r.Method, r.RequestURI, xff))
		}
		return okHandler("i")(c, br, r, body)
	})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")) // the corpus: testdata/fuzz/FuzzFastServer
	f.Fuzz(func(t *testing.T, data []byte) {
		got := z.exchange(t, data)
		z.settle(t)
		if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 ")) && !bytes.HasPrefix(got, []byte("HTTP/1.0 ")) {
			t.Fatalf("answer %q to %q", trunc(string(got)), trunc(string(data)))
		}
		if n := smuggled.Swap(0); n != 0 {
			t.Fatalf("an instance read %d request(s) the proxy did not forward (last: %v) after %q", n, smuggledLine.Load(), data)
		}
		for _, ri := range []*rawInstance{z.blue, z.green} {
			if n := ri.parseErrors.Swap(0); n != 0 {
				t.Fatalf("an instance read %d malformed requests (last: %v) after %q", n, ri.lastParseError.Load(), data)
			}
		}
	})
}

// FuzzFastUpstream answers a GET (or HEAD) through a fast Server with any
// bytes from the instance: the relay (response head, 1xx, Content-Length,
// chunked and until-close bodies) never panics and never hangs; where
// net/http reads a final response from the same bytes and the client gets
// that status through the proxy, the client reads the same body.
func FuzzFastUpstream(f *testing.F) {
	var cur atomic.Pointer[[]byte]
	z := newFuzzFront(f, func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		if p := cur.Load(); p != nil {
			_, _ = c.Write(*p)
		}
		return false // the instance closes: an until-close body ends
	})
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false) // the corpus: testdata/fuzz/FuzzFastUpstream
	f.Fuzz(func(t *testing.T, resp []byte, head bool) {
		cur.Store(&resp)
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		got := z.exchange(t, []byte(method+" /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
		if len(got) == 0 {
			return // the relay failed mid-body: the proxy closed
		}
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer %q to instance bytes %q", trunc(string(got)), trunc(string(resp)))
		}
		// The final response through the proxy, and from the same bytes
		// by net/http (skipping 1xx as a client does).
		final := func(b []byte) (int, []byte, error) {
			br := bufio.NewReader(bytes.NewReader(b))
			for {
				res, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					return 0, nil, err
				}
				if res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != 101 {
					continue
				}
				body, err := io.ReadAll(res.Body)
				return res.StatusCode, body, err
			}
		}
		code, body, err := final(got)
		if err != nil {
			return // a truncated relay (the instance's framing broke): the client sees an error, as with net/http
		}
		stdCode, stdBody, stdErr := final(resp)
		if stdErr != nil || stdCode != code || isHTTP10WithTE(resp) {
			return
		}
		if !bytes.Equal(body, stdBody) {
			t.Fatalf("status %d: client got body %q, net/http reads %q from instance bytes %q", code, trunc(string(body)), trunc(string(stdBody)), trunc(string(resp)))
		}
	})
}

// isHTTP10WithTE: faulty framing by RFC 9112 6.1; the two parsers differ
// on purpose (see FuzzParseResponse).
func isHTTP10WithTE(b []byte) bool {
	return bytes.HasPrefix(b, []byte("HTTP/1.0")) && bytes.Contains(bytes.ToLower(b), []byte("transfer-encoding"))
}
