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

// FuzzParseRequest: findHeadEnd and parseRequest never panic on any bytes,
// and a head parseRequest accepts is one the fast path can relay without
// ambiguity: a fast method, an origin-form target, exactly one Host, no
// Transfer-Encoding, at most one Content-Length, no upgrade or expectation.
// net/http's parser accepts the same head, and both agree on the method,
// the target, the Host, the body length and whether the connection closes.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-A, keep-alive\r\nX-A: 1\r\nCookie: bluegreen_preview=1\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := findHeadEnd(data)
		if want := headEndOracle(data); n != want {
			t.Fatalf("findHeadEnd = %d, want %d for %q", n, want, data)
		}
		if n <= 0 {
			return
		}
		var h head
		err := h.parseRequest(data[:n])
		if err != nil {
			if !errors.Is(err, errFallback) && !errors.Is(err, errCLTE) {
				t.Fatalf("parseRequest: unexpected error %v", err)
			}
			if errors.Is(err, errCLTE) && (h.te == 0 || h.nCL == 0) {
				t.Fatalf("errCLTE without both fields: te %d nCL %d", h.te, h.nCL)
			}
			return
		}
		checkAcceptedRequest(t, &h, data[:n])
	})
}

// headEndOracle is findHeadEnd by another route: the end of the first
// CRLF CRLF, unless a bare LF comes before it (-1); 0 when neither is there.
func headEndOracle(b []byte) int {
	p := bytes.Index(b, []byte("\r\n\r\n"))
	q := -1
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			q = i
			break
		}
	}
	switch {
	case q >= 0 && (p < 0 || q < p+3):
		return -1
	case p >= 0:
		return p + 4
	}
	return 0
}

func checkAcceptedRequest(t *testing.T, h *head, raw []byte) {
	t.Helper()
	fast := false
	for _, m := range fastMethods {
		fast = fast || h.method == m
	}
	if !fast {
		t.Fatalf("method %q", h.method)
	}
	if len(h.target) == 0 || h.target[0] != '/' {
		t.Fatalf("target %q", h.target)
	}
	for _, c := range h.target {
		if c <= ' ' || c >= 0x7f || c == '#' {
			t.Fatalf("target %q has byte %q", h.target, c)
		}
	}
	if h.end != len(raw) || len(h.fields) > maxFields {
		t.Fatalf("end %d of %d, %d fields", h.end, len(raw), len(h.fields))
	}
	hosts, cls := 0, 0
	var host []byte
	for _, fl := range h.fields {
		if len(fl.name) == 0 {
			t.Fatal("empty field name")
		}
		for _, c := range fl.name {
			if !isTokenChar(c) {
				t.Fatalf("field name %q", fl.name)
			}
		}
		for _, c := range fl.value {
			if c < ' ' && c != '\t' || c == 0x7f {
				t.Fatalf("field value %q", fl.value)
			}
		}
		if len(fl.value) > 0 && (fl.value[0] == ' ' || fl.value[0] == '\t' || fl.value[len(fl.value)-1] == ' ' || fl.value[len(fl.value)-1] == '\t') {
			t.Fatalf("untrimmed value %q", fl.value)
		}
		if fl.id != classifyField(fl.name) {
			t.Fatalf("field %q classified %d, stored %d", fl.name, classifyField(fl.name), fl.id)
		}
		switch fl.id {
		case fHost:
			hosts++
			host = fl.value
		case fContentLength:
			cls++
		case fTransferEncoding, fUpgrade, fExpect:
			t.Fatalf("accepted a request with %q", fl.name)
		}
	}
	if hosts != 1 || h.hosts != 1 {
		t.Fatalf("%d Host fields (counted %d)", hosts, h.hosts)
	}
	if h.te != 0 || h.chunked {
		t.Fatalf("te %d chunked %v", h.te, h.chunked)
	}
	if h.contentLength < -1 || cls != h.nCL || h.nCL > 1 || (h.nCL == 0) != (h.contentLength == -1) {
		t.Fatalf("contentLength %d, nCL %d, %d fields", h.contentLength, h.nCL, cls)
	}

	// net/http's view of the same head.
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("the fast path accepts a head net/http refuses (%v): %q", err, raw)
	}
	// A query net/http's ReverseProxy would clean (a ';') is not relayed
	// as it is: proxy and instance must read it the same.
	if q := bytes.IndexByte(h.target, '?'); q >= 0 && bytes.IndexByte(h.target[q:], ';') >= 0 {
		t.Fatalf("accepted a query with ';': %q", h.target)
	}
	if r.Method != h.method || r.RequestURI != string(h.target) || r.Host != string(host) {
		t.Fatalf("net/http reads %s %s Host %q; the fast path %s %s Host %q", r.Method, r.RequestURI, r.Host, h.method, h.target, host)
	}
	if len(r.TransferEncoding) != 0 || r.ContentLength != max(h.contentLength, 0) {
		t.Fatalf("framing: net/http TE %v CL %d; the fast path CL %d", r.TransferEncoding, r.ContentLength, h.contentLength)
	}
	if r.Close != h.closeConn {
		t.Fatalf("close: net/http %v, the fast path %v", r.Close, h.closeConn)
	}
}

// FuzzParseResponse: findHeadEnd, parseResponse and the chunked framing the
// relay applies (parseChunkSize on each size line, CRLF after each chunk,
// trailer lines up to the blank line) never panic. An accepted head is
// consistent; where net/http reads the same response, both agree on the
// status and on where a chunked body ends and what it holds.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n5\r\nhello\r\n3;e=1\r\nabc\r\n0\r\nX: y\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := findHeadEnd(data)
		if n <= 0 {
			return
		}
		var h head
		if err := h.parseResponse(data[:n]); err != nil {
			return
		}
		if h.code < 100 || h.code > 999 || h.end != n || len(h.fields) > maxFields {
			t.Fatalf("code %d end %d fields %d", h.code, h.end, len(h.fields))
		}
		for _, c := range h.reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				t.Fatalf("reason %q", h.reason)
			}
		}
		if h.te > 1 || (h.te == 1) != h.chunked || h.contentLength < -1 {
			t.Fatalf("te %d chunked %v cl %d", h.te, h.chunked, h.contentLength)
		}
		body := data[n:]
		if h.te == 0 {
			return
		}
		decoded, used, ok := relayChunked(body)
		// net/http's view; HTTP/1.0 with Transfer-Encoding is faulty
		// framing (RFC 9112 6.1), read to the close by net/http and as
		// chunked by the fast path: not compared.
		if h.http10 || h.code < 200 || h.code == 204 || h.code == 304 {
			return
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), &http.Request{Method: http.MethodGet})
		if err != nil {
			return
		}
		std, err := io.ReadAll(res.Body)
		if err != nil || !ok {
			return
		}
		if !bytes.Equal(std, decoded) {
			t.Fatalf("chunked body: net/http %q, the fast path %q (used %d of %d)", std, decoded, used, len(body))
		}
	})
}

// relayChunked walks a chunked body as Server.copyChunked does and returns
// the decoded data and how many bytes the framing covers.
func relayChunked(b []byte) (data []byte, used int, ok bool) {
	line := func() ([]byte, bool) {
		i := bytes.IndexByte(b[used:], '\n')
		if i < 0 || i > maxChunkLine || i == 0 || b[used+i-1] != '\r' {
			return nil, false
		}
		l := b[used : used+i+1]
		used += i + 1
		return l, true
	}
	for {
		ln, good := line()
		if !good {
			return data, used, false
		}
		size, good := parseChunkSize(ln[:len(ln)-2])
		if !good {
			return data, used, false
		}
		if size == 0 {
			for {
				ln, good := line()
				if !good {
					return data, used, false
				}
				if len(ln) == 2 {
					return data, used, true
				}
			}
		}
		if int64(len(b)-used) < size {
			return data, used, false
		}
		data = append(data, b[used:used+int(size)]...)
		used += int(size)
		ln, good = line()
		if !good || len(ln) != 2 {
			return data, used, false
		}
	}
}

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
