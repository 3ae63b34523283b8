package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// The differential test sends the same request through a fast Server and
// through a plain httptest.NewServer(router) front (the net/http path) on
// the same Router, and compares what the instance saw and what the client
// got. The instance is a raw TCP listener: it parses requests as a Go server
// does and answers exact bytes, so both paths get byte-identical responses.
//
// Intended differences, asserted where they show:
//   - Header names: the fast path forwards field names as the client (and
//     the instance) sent them; net/http canonicalises them. Go parsers on
//     either side canonicalise again, so the comparison cannot see it; the
//     raw-bytes test below checks the fast path keeps the names as sent.
//   - Reason phrase: the fast path relays the instance's reason phrase;
//     net/http writes its own (http.StatusText).
//   - A response framed by the end of the connection (no Content-Length,
//     not chunked): the fast path relays it the same way and closes the
//     client connection ("Connection: close"); net/http re-frames it as
//     chunked and keeps the client connection.
//   - A response without Content-Type: net/http sniffs one and adds it; the
//     fast path adds nothing.
//   - The answer to HEAD: the fast path drops Transfer-Encoding and Trailer
//     (there is no body to frame); net/http passes the Trailer names on.
//   - The target: the fast path forwards it byte for byte; net/http
//     re-escapes characters such as " { } | ^ ` in the path.

// diffRespond answers the differential requests by path (below the base).
func diffRespond(name string) rawHandler {
	return func(c net.Conn, _ *bufio.Reader, r *http.Request, body []byte) bool {
		p := r.URL.Path
		if i := strings.LastIndexByte(p, '/'); i >= 0 {
			p = p[i:]
		}
		var w bytes.Buffer
		keep := true
		std := func(code int, extra string, b string) {
			fmt.Fprintf(&w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nX-Instance: %s\r\n%sContent-Length: %d\r\n\r\n", code, http.StatusText(code), name, extra, len(b))
			if r.Method != http.MethodHead {
				w.WriteString(b)
			}
		}
		switch p {
		case "/echo":
			std(200, "X-Body-Len: "+strconv.Itoa(len(body))+"\r\n", string(body))
		case "/big":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			std(200, "", strings.Repeat("x", n))
		case "/head":
			// A HEAD answer announcing the length of the GET body.
			fmt.Fprintf(&w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Instance: %s\r\nContent-Length: 1234\r\n\r\n", name)
			if r.Method != http.MethodHead {
				w.WriteString(strings.Repeat("h", 1234))
			}
		case "/chunked":
			fmt.Fprintf(&w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Instance: %s\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n", name)
			if r.Method != http.MethodHead {
				w.WriteString("5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Checksum: abc123\r\n\r\n")
			}
		case "/bigchunked":
			fmt.Fprintf(&w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Instance: %s\r\nTransfer-Encoding: chunked\r\n\r\n", name)
			for i := range 25 {
				chunk := strings.Repeat(string(rune('a'+i)), 4096)
				fmt.Fprintf(&w, "%x\r\n%s\r\n", len(chunk), chunk)
			}
			w.WriteString("0\r\n\r\n")
		case "/untilclose":
			fmt.Fprintf(&w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Instance: %s\r\n\r\nread until the instance closes", name)
			keep = false
		case "/204":
			fmt.Fprintf(&w, "HTTP/1.1 204 No Content\r\nX-Instance: %s\r\nX-Custom: empty\r\n\r\n", name)
		case "/304":
			fmt.Fprintf(&w, "HTTP/1.1 304 Not Modified\r\nX-Instance: %s\r\nEtag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n", name)
		case "/early":
			w.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n")
			std(200, "Link: </style.css>; rel=preload; as=style\r\n", "after hints")
		case "/hop":
			// Hop-by-hop fields the proxy must not pass on, one named by
			// Connection; X-End survives.
			std(200, "Connection: X-Hop-Res, keep-alive\r\nX-Hop-Res: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTe: trailers\r\nUpgrade: h2c\r\nX-End: kept\r\n", "hop")
		case "/reason":
			fmt.Fprintf(&w, "HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nX-Instance: %s\r\nContent-Length: 2\r\n\r\nok", name)
		case "/notype":
			fmt.Fprintf(&w, "HTTP/1.1 200 OK\r\nX-Instance: %s\r\nContent-Length: 15\r\n\r\n<html></html>\r\n", name)
		case "/multi":
			std(200, "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nVary: Accept\r\nVary: Cookie\r\n", "multi")
		case "/bighead":
			// A response head of about n bytes (a wall of cookies).
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			std(200, "X-Big: "+strings.Repeat("c", n)+"\r\n", "big head")
		case "/status099", "/status000":
			// Go's client takes these for a final answer, and net/http's
			// server panicked on writing them.
			fmt.Fprintf(&w, "HTTP/1.1 %s Odd\r\nContent-Length: 2\r\n\r\nok", p[len("/status"):])
		default:
			std(200, "", name+" "+r.URL.Path)
		}
		if _, err := c.Write(w.Bytes()); err != nil {
			return false
		}
		return keep
	}
}

// diffResult is one side of a differential run.
type diffResult struct {
	instance  string // blue or green
	seen      seenReq
	status    int
	statusTxt string
	header    http.Header
	trailer   http.Header
	body      string
	length    int64
	close     bool
	early     []int
	earlyHdr  []textproto.MIMEHeader
}

type diffCase struct {
	name   string
	cfg    func(*Config)
	base   string // instance base path
	method string
	target string
	host   string
	hdr    [][2]string // sent in order, repeated names allowed
	body   []byte
	close  bool
	wantTo string // the colour that must answer; default blue
	// sameClient lists response fields allowed to differ (documented).
	clientDiff []string
	// closeDiff allows the client connection's fate to differ.
	closeDiff bool
	// statusTextDiff allows the reason phrase to differ.
	statusTextDiff bool
	// opaque, when set, is the request target written as it is.
	opaque string
	// uriDiff allows the target the instance sees to differ (documented).
	uriDiff bool
	// earlyDiff allows the 1xx answers the client got to differ.
	earlyDiff bool
	check     func(t *testing.T, fast, std diffResult)
}

func TestFastDifferential(t *testing.T) {
	trusted := func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }
	xfHeaders := [][2]string{
		{"X-Forwarded-For", "6.6.6.6"}, {"X-Forwarded-For", "7.7.7.7"},
		{"X-Forwarded-Host", "lb.example"}, {"X-Forwarded-Proto", "https"},
		{"X-Forwarded-Port", "443"}, {"X-Real-Ip", "6.6.6.6"}, {"Forwarded", "for=6.6.6.6"},
	}
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		return b
	}
	wantStatus := func(code int) func(t *testing.T, fast, std diffResult) {
		return func(t *testing.T, fast, std diffResult) {
			if fast.status != code || std.status != code {
				t.Errorf("status %d via the fast path, %d via net/http; want %d", fast.status, std.status, code)
			}
		}
	}
	seenHdr := func(want map[string]string) func(t *testing.T, fast, std diffResult) {
		return func(t *testing.T, fast, std diffResult) {
			for k, v := range want {
				if got := strings.Join(fast.seen.Header.Values(k), " | "); got != v {
					t.Errorf("instance saw %s %q via the fast path, want %q", k, got, v)
				}
			}
		}
	}
	cases := []diffCase{
		{name: "GET", method: "GET", target: "/plain"},
		{name: "GET query", method: "GET", target: "/plain?q=1&x=a%20b&empty=&u=%E2%9C%93&sp=a+b"},
		{name: "GET encoded path", method: "GET", target: "/a%2Fb/c%20d"},
		{name: "HEAD with Content-Length", method: "HEAD", target: "/head", check: func(t *testing.T, fast, _ diffResult) {
			if fast.length != 1234 || fast.body != "" {
				t.Errorf("HEAD: Content-Length %d, body %q; want 1234 and none", fast.length, fast.body)
			}
		}},
		{name: "HEAD of a body", method: "HEAD", target: "/echo"},
		{name: "POST small", method: "POST", target: "/echo", body: []byte("one order")},
		{name: "POST empty", method: "POST", target: "/echo", body: []byte{}},
		{name: "POST 9KiB", method: "POST", target: "/echo", body: body(9 << 10)},
		{name: "POST 70KiB", method: "POST", target: "/echo", body: body(70 << 10)},
		{name: "POST 1MiB", method: "POST", target: "/echo?big=1", body: body(1 << 20)},
		{name: "PUT", method: "PUT", target: "/echo", body: []byte("put body")},
		// The client flushes the head, then at once the body
		// (ExpectContinueTimeout 0); the instance sends no 100. Both paths
		// forward the expectation. Intended: whether the client is told
		// 100 Continue differs; net/http's front tells it as the body is
		// read, the fast path only when the instance does, or after 1 s of
		// silence from both the instance and the client (not expected
		// here, but a loaded machine may stall the client that long).
		{name: "Expect 100-continue", method: "PUT", target: "/echo", body: body(70 << 10), hdr: [][2]string{{"Expect", "100-continue"}},
			earlyDiff: true, check: func(t *testing.T, fast, std diffResult) {
				if fast.seen.Header.Get("Expect") != "100-continue" || len(fast.early) > 1 || len(fast.early) == 1 && fast.early[0] != 100 {
					t.Errorf("via the fast path the instance saw Expect %q, the client got 1xx %v", fast.seen.Header.Get("Expect"), fast.early)
				}
			}},
		{name: "PATCH", method: "PATCH", target: "/echo", body: []byte("{}")},
		{name: "DELETE", method: "DELETE", target: "/thing/1"},
		{name: "OPTIONS", method: "OPTIONS", target: "/thing"},
		{name: "big response", method: "GET", target: "/big?n=100000"},
		{name: "preview header", method: "GET", target: "/p", hdr: [][2]string{{"X-Bluegreen-Preview", "1"}}, wantTo: "green",
			check: seenHdr(map[string]string{"X-Bluegreen-Preview": "1"})},
		{name: "preview header true", method: "GET", target: "/p", hdr: [][2]string{{"x-bluegreen-preview", "TRUE"}}, wantTo: "green"},
		{name: "preview header 0", method: "GET", target: "/p", hdr: [][2]string{{"X-Bluegreen-Preview", "0"}}},
		{name: "preview header stripped", method: "GET", target: "/p", hdr: [][2]string{{"X-Bluegreen-Preview", "1"}}, wantTo: "green",
			cfg: func(c *Config) { c.StripPreviewHeader = true }, check: seenHdr(map[string]string{"X-Bluegreen-Preview": ""})},
		{name: "preview cookie", method: "GET", target: "/p", hdr: [][2]string{{"Cookie", "a=b; bluegreen_preview=1; c=d"}}, wantTo: "green",
			check: seenHdr(map[string]string{"Cookie": "a=b; bluegreen_preview=1; c=d"})},
		{name: "preview cookie quoted", method: "GET", target: "/p", hdr: [][2]string{{"Cookie", `bluegreen_preview="true"`}}, wantTo: "green"},
		{name: "other cookie", method: "GET", target: "/p", hdr: [][2]string{{"Cookie", "bluegreen_preview_x=1; xbluegreen_preview=1"}}},
		{name: "forwarded untrusted", method: "GET", target: "/xf", host: "front.example", hdr: xfHeaders,
			check: seenHdr(map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "front.example",
				"X-Forwarded-Proto": "http", "X-Forwarded-Port": "", "X-Real-Ip": "", "Forwarded": ""})},
		{name: "forwarded trusted", method: "GET", target: "/xf", host: "front.example", hdr: xfHeaders, cfg: trusted,
			check: seenHdr(map[string]string{"X-Forwarded-For": "6.6.6.6, 7.7.7.7, 127.0.0.1", "X-Forwarded-Host": "lb.example",
				"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Real-Ip": "6.6.6.6", "Forwarded": "for=6.6.6.6"})},
		// Every codec takes a response head up to 16 KiB and answers a
		// larger one 502 (nginx's proxy_buffer_size is 4–8 KiB).
		{name: "response head under 16 KiB", method: "GET", target: "/bighead?n=15900", check: wantStatus(200)},
		{name: "response head over 16 KiB", method: "GET", target: "/bighead?n=16400", check: wantStatus(502)},
		{name: "response head of 1 MiB", method: "GET", target: "/bighead?n=1048576", check: wantStatus(502)},
		{name: "status below 100", method: "GET", target: "/status099", check: wantStatus(502)},
		{name: "status 000", method: "DELETE", target: "/status000", check: wantStatus(502)},
		{name: "forwarding aliases", method: "GET", target: "/xf", cfg: trusted,
			hdr:   [][2]string{{"X_Forwarded_For", "6.6.6.6"}, {"X-Real_Ip", "6.6.6.6"}, {"X_Custom", "kept"}},
			check: seenHdr(map[string]string{"X-Forwarded-For": "127.0.0.1", "X_forwarded_for": "", "X-Real_ip": "", "X_custom": "kept"})},
		{name: "forwarded trusted none sent", method: "GET", target: "/xf", host: "front.example", cfg: trusted,
			check: seenHdr(map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "front.example", "X-Forwarded-Proto": "http"})},
		{name: "Host as sent", method: "GET", target: "/h", host: "app.example:8080",
			check: func(t *testing.T, fast, _ diffResult) {
				if fast.seen.Host != "app.example:8080" {
					t.Errorf("instance saw Host %q", fast.seen.Host)
				}
			}},
		{name: "Connection close", method: "GET", target: "/c", close: true, check: func(t *testing.T, fast, std diffResult) {
			if !fast.close || !std.close {
				t.Errorf("Connection: close not answered with close: fast %v, net/http %v", fast.close, std.close)
			}
		}},
		{name: "hop-by-hop request fields", method: "GET", target: "/hopreq", hdr: [][2]string{
			{"Keep-Alive", "timeout=5"}, {"Proxy-Connection", "keep-alive"}, {"Proxy-Authorization", "Basic eDp5"},
			{"Trailer", "X-T"}, {"Te", "trailers"}, {"X-End", "kept"}},
			check: seenHdr(map[string]string{"Keep-Alive": "", "Proxy-Connection": "", "Proxy-Authorization": "",
				"Trailer": "", "Te": "trailers", "X-End": "kept", "Connection": ""})},
		{name: "TE other than trailers", method: "GET", target: "/hopreq", hdr: [][2]string{{"Te", "gzip"}},
			check: seenHdr(map[string]string{"Te": ""})},
		// Fields the client's Connection field names are hop-by-hop (failed
		// at b420011: send() ignored the request's Connection tokens).
		{name: "Connection-listed request field", method: "GET", target: "/hopreq",
			hdr:   [][2]string{{"Connection", "X-Hop-Req, keep-alive"}, {"X-Hop-Req", "secret"}, {"X-End", "kept"}},
			check: seenHdr(map[string]string{"X-Hop-Req": "", "X-End": "kept", "Connection": ""})},
		{name: "repeated fields", method: "GET", target: "/multi", hdr: [][2]string{{"X-Multi", "1"}, {"X-Multi", "2"}, {"x-lower", "v"}},
			check: func(t *testing.T, fast, std diffResult) {
				seenHdr(map[string]string{"X-Multi": "1 | 2", "X-Lower": "v"})(t, fast, std)
				if got := fast.header.Values("Set-Cookie"); len(got) != 2 {
					t.Errorf("Set-Cookie %q, want two fields", got)
				}
			}},
		{name: "hop-by-hop response fields", method: "GET", target: "/hop", check: func(t *testing.T, fast, _ diffResult) {
			for _, k := range []string{"X-Hop-Res", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade", "Connection"} {
				if v := fast.header.Get(k); v != "" {
					t.Errorf("response hop-by-hop %s=%q passed on", k, v)
				}
			}
			if fast.header.Get("X-End") != "kept" {
				t.Error("an end-to-end response field was dropped")
			}
		}},
		{name: "chunked with trailers", method: "GET", target: "/chunked", check: func(t *testing.T, fast, _ diffResult) {
			if fast.body != "hello, world" || fast.trailer.Get("X-Checksum") != "abc123" {
				t.Errorf("body %q trailer %v", fast.body, fast.trailer)
			}
		}},
		{name: "chunked 100KiB", method: "GET", target: "/bigchunked"},
		// Intended: a HEAD answer has no body to frame, so the fast path drops
		// Transfer-Encoding and Trailer from it; net/http announces the
		// trailer names it would send.
		{name: "HEAD of chunked", method: "HEAD", target: "/chunked", clientDiff: []string{"Trailer"}},
		{name: "read until close", method: "GET", target: "/untilclose", closeDiff: true, clientDiff: []string{"Transfer-Encoding"},
			check: func(t *testing.T, fast, std diffResult) {
				// Intended: the fast path relays the framing and closes the
				// client connection; net/http re-frames as chunked.
				if !fast.close || fast.length != -1 {
					t.Errorf("fast path: close %v length %d; want Connection: close and no length", fast.close, fast.length)
				}
			}},
		{name: "204", method: "GET", target: "/204"},
		{name: "304", method: "GET", target: "/304", hdr: [][2]string{{"If-None-Match", `"v1"`}}},
		{name: "103 Early Hints", method: "GET", target: "/early", check: func(t *testing.T, fast, std diffResult) {
			if !slices.Equal(fast.early, []int{103}) || !slices.Equal(std.early, []int{103}) {
				t.Fatalf("1xx seen: fast %v, net/http %v; want [103]", fast.early, std.early)
			}
			if fast.earlyHdr[0].Get("Link") != "</style.css>; rel=preload; as=style" {
				t.Errorf("103 Link %q", fast.earlyHdr[0].Get("Link"))
			}
		}},
		{name: "base path", base: "/base/", method: "GET", target: "/x/y?q=1", check: func(t *testing.T, fast, _ diffResult) {
			if fast.seen.RequestURI != "/base/x/y?q=1" {
				t.Errorf("instance saw %q", fast.seen.RequestURI)
			}
		}},
		{name: "base path root", base: "/base/", method: "GET", target: "/", check: func(t *testing.T, fast, _ diffResult) {
			if fast.seen.RequestURI != "/base/" {
				t.Errorf("instance saw %q", fast.seen.RequestURI)
			}
		}},
		{name: "base path without slash", base: "/base", method: "POST", target: "/echo", body: []byte("b")},
		{name: "reason phrase", method: "GET", target: "/reason", statusTextDiff: true, check: func(t *testing.T, fast, std diffResult) {
			// Intended: the fast path relays the reason phrase as sent.
			if fast.statusTxt != "200 Fine Thanks" || std.statusTxt != "200 OK" {
				t.Errorf("status lines: fast %q, net/http %q", fast.statusTxt, std.statusTxt)
			}
		}},
		// Intended: the fast path forwards the target byte for byte; net/http
		// re-escapes what url.URL would escape in a path.
		{name: "raw path characters", method: "GET", target: "/", opaque: "/a\"b{c}|d^e`f", uriDiff: true,
			check: func(t *testing.T, fast, std diffResult) {
				if fast.seen.RequestURI != "/a\"b{c}|d^e`f" || std.seen.RequestURI != "/a%22b%7Bc%7D%7Cd%5Ee%60f" {
					t.Errorf("instance saw: fast %q, net/http %q", fast.seen.RequestURI, std.seen.RequestURI)
				}
			}},
		// ReverseProxy (Rewrite) drops query parameters it cannot parse (a
		// ';', a bad escape) so that it and the instance never read a query
		// differently; the fast path hands such targets to net/http
		// (d7bdeb1), so the instance sees the same through both.
		{name: "unparsable query", method: "GET", target: "/q?a=1;b=2&c=%zz&d=4",
			check: func(t *testing.T, fast, std diffResult) {
				if std.seen.RequestURI != "/q?d=4" {
					t.Errorf("instance saw %q through net/http", std.seen.RequestURI)
				}
			}},
		{name: "no Content-Type", method: "GET", target: "/notype", check: func(t *testing.T, fast, std diffResult) {
			// Neither codec adds one: net/http sniffed "text/html" here.
			if _, ok := std.header["Content-Type"]; ok || fast.header.Get("Content-Type") != "" {
				t.Errorf("Content-Type: fast %q, net/http %q", fast.header.Get("Content-Type"), std.header.Get("Content-Type"))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runDiff(t, tc)
		})
	}
}

func runDiff(t *testing.T, tc diffCase) {
	blue := newRawInstance(t, diffRespond("blue"))
	green := newRawInstance(t, diffRespond("green"))
	f := newFixture(t, []string{blue.URL + tc.base}, []string{green.URL + tc.base}, tc.cfg)
	ff := startFast(t, f.rt, nil)
	want := tc.wantTo
	if want == "" {
		want = "blue"
	}
	do := func(front string) diffResult {
		t.Helper()
		nb, ng := blue.hits.Load(), green.hits.Load()
		r := doDiffRequest(t, front, tc)
		switch {
		case blue.hits.Load() == nb+1 && green.hits.Load() == ng:
			r.instance, r.seen = "blue", blue.last()
		case green.hits.Load() == ng+1 && blue.hits.Load() == nb:
			r.instance, r.seen = "green", green.last()
		default:
			t.Fatalf("%s: instance hits blue %d→%d, green %d→%d; want exactly one", front, nb, blue.hits.Load(), ng, green.hits.Load())
		}
		return r
	}
	std := do(f.front.URL)
	fast := do(ff.url)
	if fast.instance != want || std.instance != want {
		t.Fatalf("answered by fast %s, net/http %s; want %s", fast.instance, std.instance, want)
	}

	// What the instance saw.
	a, b := fast.seen, std.seen
	if a.Method != b.Method || (a.RequestURI != b.RequestURI && !tc.uriDiff) || a.Host != b.Host || !bytes.Equal(a.Body, b.Body) ||
		a.CL != b.CL || !slices.Equal(a.TE, b.TE) {
		t.Errorf("instance saw different requests:\nfast:     %s %s Host=%q body=%d CL=%d TE=%v\nnet/http: %s %s Host=%q body=%d CL=%d TE=%v",
			a.Method, a.RequestURI, a.Host, len(a.Body), a.CL, a.TE, b.Method, b.RequestURI, b.Host, len(b.Body), b.CL, b.TE)
	}
	if !bytes.Equal(a.Body, tc.body) && len(a.Body)+len(tc.body) > 0 {
		t.Errorf("instance got a body of %d bytes, sent %d", len(a.Body), len(tc.body))
	}
	if d := headerDiff(a.Header, b.Header, nil); d != "" {
		t.Errorf("instance saw different fields (fast vs net/http):\n%s", d)
	}

	// What the client got.
	if fast.status != std.status || fast.body != std.body || fast.length != std.length {
		t.Errorf("client got: fast %d len=%d body %q; net/http %d len=%d body %q",
			fast.status, fast.length, trunc(fast.body), std.status, std.length, trunc(std.body))
	}
	if !tc.statusTextDiff && fast.statusTxt != std.statusTxt {
		t.Errorf("status line: fast %q, net/http %q", fast.statusTxt, std.statusTxt)
	}
	if !tc.closeDiff && fast.close != std.close {
		t.Errorf("connection close: fast %v, net/http %v", fast.close, std.close)
	}
	if d := headerDiff(fast.header, std.header, append([]string{"Date"}, tc.clientDiff...)); d != "" {
		t.Errorf("client got different fields (fast vs net/http):\n%s", d)
	}
	if fast.header.Get("Date") == "" || std.header.Get("Date") == "" {
		t.Error("a response without Date")
	}
	if d := headerDiff(fast.trailer, std.trailer, nil); d != "" {
		t.Errorf("client got different trailers:\n%s", d)
	}
	if !tc.earlyDiff && !slices.Equal(fast.early, std.early) {
		t.Errorf("1xx responses: fast %v, net/http %v", fast.early, std.early)
	}
	if tc.check != nil {
		tc.check(t, fast, std)
	}
}

func doDiffRequest(t *testing.T, front string, tc diffCase) diffResult {
	t.Helper()
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	var r diffResult
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			r.early = append(r.early, code)
			r.earlyHdr = append(r.earlyHdr, h)
			return nil
		},
	})
	var rb io.Reader
	if tc.body != nil {
		rb = bytes.NewReader(tc.body)
	}
	req, err := http.NewRequestWithContext(ctx, tc.method, front+tc.target, rb)
	if err != nil {
		t.Fatal(err)
	}
	if tc.body != nil {
		req.ContentLength = int64(len(tc.body))
	}
	if tc.opaque != "" {
		req.URL.Opaque = tc.opaque
	}
	req.Host = "app.example" // the fronts' addresses differ
	if tc.host != "" {
		req.Host = tc.host
	}
	for _, kv := range tc.hdr {
		req.Header[kv[0]] = append(req.Header[kv[0]], kv[1]) // names as given
	}
	req.Close = tc.close
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s: %v", front, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s: reading the body: %v", front, err)
	}
	r.status, r.statusTxt, r.header, r.trailer = res.StatusCode, res.Status, res.Header, res.Trailer
	r.body, r.length, r.close = string(b), res.ContentLength, res.Close
	return r
}

// headerDiff lists the fields whose values differ, ignoring the names in
// skip (their presence is not compared either).
func headerDiff(a, b http.Header, skip []string) string {
	keys := map[string]bool{}
	for k := range a {
		keys[http.CanonicalHeaderKey(k)] = true
	}
	for k := range b {
		keys[http.CanonicalHeaderKey(k)] = true
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if slices.ContainsFunc(skip, func(s string) bool { return strings.EqualFold(s, k) }) {
			continue
		}
		va, vb := a.Values(k), b.Values(k)
		if !slices.Equal(va, vb) {
			out = append(out, fmt.Sprintf("  %s: %q vs %q", k, va, vb))
		}
	}
	return strings.Join(out, "\n")
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return s
}

// TestFastForwardsRawBytes checks, on the bytes the instance reads, that the
// fast path forwards field names and values as sent (no canonicalisation),
// rebuilds only the forwarding fields, and writes the request line against
// the instance's base path.
func TestFastForwardsRawBytes(t *testing.T) {
	got := make(chan string, 1)
	ln := testkit.Listen(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		got <- head.String()
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nx-lower-response: yes\r\nContent-Length: 0\r\n\r\n")
		_, _ = br.ReadByte() // until the proxy closes
	})
	green := newRawInstance(t, okHandler("green"))
	rt := newRouterOnly(t, []string{"http://" + ln.Addr().String() + "/base/"}, []string{green.URL}, nil)
	ff := startFast(t, rt, nil)
	rc := dialRaw(t, ff.addr)
	rc.send("GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\nx-lower: a\r\nX-MiXeD: b\r\nKeep-Alive: 1\r\n\r\n")
	res, _ := rc.mustRead("GET")
	var head string
	select {
	case head = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the instance got no request")
	}
	want := "GET /base/p?q=1 HTTP/1.1\r\nhost: app.example\r\nx-lower: a\r\nX-MiXeD: b\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: app.example\r\nX-Forwarded-Proto: http\r\n\r\n"
	if head != want {
		t.Errorf("instance read\n%q\nwant\n%q", head, want)
	}
	if res.Header.Get("X-Lower-Response") != "yes" {
		t.Errorf("response field lost: %v", res.Header)
	}
}
