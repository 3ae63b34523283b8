package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// Fuzz targets of the codec's parsers. Seed corpora live in
// testdata/fuzz/<Target>/; run one with
//
//	go test -run '^$' -fuzz '^FuzzParseRequest$' -fuzztime 60s ./proxy/h1/

// FuzzParseRequest: findHeadEnd and parseRequest never panic on any bytes,
// and a head parseRequest accepts is one the fast path can relay without
// ambiguity: a fast method, an origin-form target, exactly one Host, no
// Transfer-Encoding, at most one Content-Length, no upgrade, no expectation but one
// 100-continue.
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
		n := FindHeadEnd(data)
		if want := headEndOracle(data); n != want {
			t.Fatalf("findHeadEnd = %d, want %d for %q", n, want, data)
		}
		if n <= 0 {
			return
		}
		var h Head
		err := h.ParseRequest(data[:n])
		if err != nil {
			if errors.Is(err, errUserinfo) {
				if !h.userinfo {
					t.Fatalf("errUserinfo without a Host holding '@': %q", data[:n])
				}
				return // refused with 400 (RFC 9112 §3.2), as the guard does on net/http
			}
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

func checkAcceptedRequest(t *testing.T, h *Head, raw []byte) {
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
	hosts, cls, expects := 0, 0, 0
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
		case fExpect:
			expects++
			if !equalFold(fl.value, "100-continue") {
				t.Fatalf("accepted a request with Expect: %q", fl.value)
			}
		case fTransferEncoding, fUpgrade:
			t.Fatalf("accepted a request with %q", fl.name)
		}
	}
	if hosts != 1 || h.hosts != 1 {
		t.Fatalf("%d Host fields (counted %d)", hosts, h.hosts)
	}
	if h.te != 0 || h.chunked {
		t.Fatalf("te %d chunked %v", h.te, h.chunked)
	}
	if expects > 1 || (expects == 1) != h.continue100 {
		t.Fatalf("%d Expect fields, 100-continue %v", expects, h.continue100)
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
		n := FindHeadEnd(data)
		if n <= 0 {
			return
		}
		var h Head
		if err := h.ParseResponse(data[:n]); err != nil {
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

// relayChunked walks a chunked body as Conn.copyChunked does and returns
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
