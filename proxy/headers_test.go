package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// recorder is an instance that keeps the last request's headers and Host.
type recorder struct {
	*httptest.Server
	hits atomic.Int64
	last atomic.Pointer[http.Request]
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		r.last.Store(req.Clone(req.Context()))
	}))
	t.Cleanup(r.Close)
	return r
}

func TestForwardedHeadersTrust(t *testing.T) {
	cases := []struct {
		name    string
		trusted []netip.Prefix
		wantXFF string
		wantXFH string
		wantXFP string
		wantEx  string // X-Forwarded-Port
	}{
		{"untrusted peer", nil, "127.0.0.1", "front.example", "http", ""},
		{"other network trusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "127.0.0.1", "front.example", "http", ""},
		{"trusted peer", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "6.6.6.6, 127.0.0.1", "lb.example", "https", "443"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := newRecorder(t)
			green := newBackend(t, "green", 0)
			f := newFixture(t, []string{be.URL}, []string{green.URL}, func(c *Config) { c.TrustedProxies = tc.trusted })
			req, _ := http.NewRequest(http.MethodGet, f.front.URL, nil)
			req.Host = "front.example"
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			req.Header.Set("X-Forwarded-Host", "lb.example")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Port", "443")
			req.Header.Set("X-Real-Ip", "6.6.6.6")
			res, err := f.front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			h := be.last.Load().Header
			if got := h.Get("X-Forwarded-For"); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", got, tc.wantXFF)
			}
			if got := h.Get("X-Forwarded-Host"); got != tc.wantXFH {
				t.Errorf("X-Forwarded-Host %q, want %q", got, tc.wantXFH)
			}
			if got := h.Get("X-Forwarded-Proto"); got != tc.wantXFP {
				t.Errorf("X-Forwarded-Proto %q, want %q", got, tc.wantXFP)
			}
			if got := h.Get("X-Forwarded-Port"); got != tc.wantEx {
				t.Errorf("X-Forwarded-Port %q, want %q", got, tc.wantEx)
			}
			if tc.trusted == nil && h.Get("X-Real-Ip") != "" {
				t.Error("X-Real-Ip from an untrusted client was forwarded")
			}
		})
	}
}

// A field that reads as X-Forwarded-* or X-Real-IP with underscores for
// hyphens ("X_Forwarded_For") is not passed on by any codec, from any
// peer: a CGI-style app sees it as the proxy's field. Other names with
// underscores pass.
func TestForwardingAliasesDropped(t *testing.T) {
	aliases := []string{"X_Forwarded_For", "x_real_ip", "X-Forwarded_Proto", "X_FORWARDED_HOST", "X_Forwarded_Anything"}
	for _, trusted := range []bool{false, true} {
		inst := newRawInstance(t, okHandler("blue"))
		f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) {
			if trusted {
				c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			}
		})
		ff, fh := startFast(t, f.rt, nil), startH2(t, f.rt, nil)
		var raw strings.Builder
		for _, a := range aliases {
			raw.WriteString(a + ": 6.6.6.6\r\n")
		}
		check := func(codec string) {
			t.Helper()
			seen := inst.last()
			for k := range seen.Header {
				if l := strings.ToLower(k); strings.Contains(l, "_") && (strings.Contains(l, "forwarded") || strings.Contains(l, "real")) {
					t.Errorf("trusted=%v %s: %s passed on", trusted, codec, k)
				}
			}
			if seen.Header.Get("X_custom") != "kept" || seen.Header.Get("X-Forwarded-For") != "127.0.0.1" {
				t.Errorf("trusted=%v %s: X_Custom %q, X-Forwarded-For %q", trusted, codec, seen.Header.Get("X_custom"), seen.Header.Get("X-Forwarded-For"))
			}
		}
		for _, front := range []struct{ name, addr string }{{"net/http", hostOf(t, f.front.URL)}, {"fast", ff.addr}} {
			rc := dialRaw(t, front.addr)
			rc.send("GET / HTTP/1.1\r\nHost: a\r\n" + raw.String() + "X_Custom: kept\r\n\r\n")
			if res, _ := rc.mustRead("GET"); res.StatusCode != 200 {
				t.Fatalf("%s: %s", front.name, res.Status)
			}
			check(front.name)
		}
		req, _ := http.NewRequest("GET", fh.url+"/", nil)
		for _, a := range aliases {
			req.Header[a] = []string{"6.6.6.6"}
		}
		req.Header["X_Custom"] = []string{"kept"}
		res, err := h2Client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		check("HTTP/2")
	}
}

func TestPreviewHeaderStripped(t *testing.T) {
	for _, strip := range []bool{true, false} {
		blue := newRecorder(t)
		green := newRecorder(t)
		f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(c *Config) { c.StripPreviewHeader = strip })
		get(t, f.front.Client(), f.front.URL, map[string]string{"X-Bluegreen-Preview": "1"})
		if green.hits.Load() != 1 {
			t.Fatal("preview request did not reach the idle colour")
		}
		if got := green.last.Load().Header.Get("X-Bluegreen-Preview"); (got == "") != strip {
			t.Errorf("strip=%v: instance saw preview header %q", strip, got)
		}
	}
}

func TestHopByHopHeadersStripped(t *testing.T) {
	be := newRecorder(t)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, nil)
	req, _ := http.NewRequest(http.MethodGet, f.front.URL, nil)
	for _, h := range []string{"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "X-Drop-Me"} {
		req.Header.Set(h, "x")
	}
	req.Header.Set("Connection", "X-Drop-Me")
	req.Header.Set("X-Keep-Me", "y")
	res, err := f.front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := be.last.Load().Header
	for _, k := range []string{"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Trailer", "X-Drop-Me"} {
		if v := h.Get(k); v != "" {
			t.Errorf("hop-by-hop %s=%q forwarded", k, v)
		}
	}
	if h.Get("X-Keep-Me") != "y" {
		t.Error("an end-to-end header was dropped")
	}
}

// TestNoOpenProxy: absolute request URIs for another host, any Host header
// and CONNECT never make the proxy connect anywhere but a configured
// instance.
func TestNoOpenProxy(t *testing.T) {
	be := newRecorder(t)
	other := newRecorder(t) // a listener the proxy must never reach
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, nil)
	otherHost := strings.TrimPrefix(other.URL, "http://")
	front := strings.TrimPrefix(f.front.URL, "http://")
	raw := []string{
		"GET http://" + otherHost + "/steal HTTP/1.1\r\nHost: " + otherHost + "\r\n\r\n",
		"GET /steal HTTP/1.1\r\nHost: " + otherHost + "\r\n\r\n",
		"GET http://" + otherHost + "/steal HTTP/1.1\r\nHost: " + front + "\r\n\r\n",
		"GET //" + otherHost + "/steal HTTP/1.1\r\nHost: " + front + "\r\n\r\n",
		"CONNECT " + otherHost + " HTTP/1.1\r\nHost: " + otherHost + "\r\n\r\n",
	}
	wantBackend := int64(0)
	for i, r := range raw {
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, r)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		res.Body.Close()
		if strings.HasPrefix(r, "CONNECT") {
			if res.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("CONNECT: %s, want 405", res.Status)
			}
			continue
		}
		wantBackend++
		if res.StatusCode != http.StatusOK || be.hits.Load() != wantBackend {
			t.Errorf("request %d: %s, backend hits %d, want 200 and %d", i, res.Status, be.hits.Load(), wantBackend)
		}
	}
	if n := other.hits.Load(); n != 0 {
		t.Fatalf("the proxy connected to a host that is not a configured instance: %d requests", n)
	}
	t.Logf("%d hostile requests: configured instance got %d, other listener got 0", len(raw), be.hits.Load())
}

// The asterisk form is OPTIONS's alone: "GET *" and an HTTP/2 preface
// sent to a plain listener are refused on both codecs, and reach no
// instance (net/http passed them on as "/%2A").
func TestAsteriskFormRefused(t *testing.T) {
	inst := newRawInstance(t, okHandler("blue"))
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	ff := startFast(t, f.rt, nil)
	for _, front := range []string{hostOf(t, f.front.URL), ff.addr} {
		for _, req := range []string{"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"} {
			rc := dialRaw(t, front)
			rc.send(req)
			if res, _ := rc.mustRead("GET"); res.StatusCode != http.StatusBadRequest {
				t.Errorf("%s %q: %s, want 400", front, req, res.Status)
			}
			rc.nc.Close()
		}
		rc := dialRaw(t, front)
		rc.send("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
		if res, _ := rc.mustRead("OPTIONS"); res.StatusCode != http.StatusOK {
			t.Errorf("%s: OPTIONS *: %s, want 200", front, res.Status)
		}
	}
	if n := inst.hits.Load(); n != 0 {
		t.Fatalf("the instance got %d requests, want none", n)
	}
	// Counted once each, as the client's, as HTTP/2 counts "GET *".
	req, _ := http.NewRequest("GET", startH2(t, f.rt, nil).url+"/", nil)
	req.URL.Opaque = "*"
	if res, err := h2Client(t).Do(req); err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("HTTP/2 GET *: %v %v", res, err)
	}
	if _, byKind := sumMetric(t, f.reg, "bluegreen_client_errors_total", "kind"); byKind[ClientMalformed] != 5 {
		t.Fatalf("client errors %v, want 5 malformed (two on each HTTP/1.1 codec, one on HTTP/2)", byKind)
	}
}

// An Upgrade to h2c is not passed on, on either codec: the request is
// served as HTTP/1.1 and the connection stays HTTP/1.1. Passed on, an
// instance that answers 101 (this one does, to any upgrade) let the
// client's next requests reach it through a tunnel, with the client's own
// X-Forwarded-For (h2c smuggling). Other upgrades still pass.
func TestH2CUpgradeNotPassedOn(t *testing.T) {
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		if up := r.Header.Get("Upgrade"); up != "" {
			_, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+up+"\r\n\r\n")
			return err == nil
		}
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	ff := startFast(t, f.rt, nil)
	for _, front := range []struct{ name, addr string }{{"net/http", hostOf(t, f.front.URL)}, {"fast", ff.addr}} {
		for _, up := range []string{"h2c", "H2C", "foo, h2c"} {
			rc := dialRaw(t, front.addr)
			rc.send("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: " + up + "\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
			res, body := rc.mustRead("GET")
			want, wantUp := 200, ""
			if up == "foo, h2c" {
				want, wantUp = 101, "foo"
			}
			seen := inst.last()
			if res.StatusCode != want || seen.Header.Get("Upgrade") != wantUp || seen.Header.Get("Http2-Settings") != "" {
				t.Fatalf("%s: Upgrade %q: %s %q; the instance saw Upgrade %q, HTTP2-Settings %q",
					front.name, up, res.Status, body, seen.Header.Get("Upgrade"), seen.Header.Get("Http2-Settings"))
			}
			if want == 200 {
				rc.send("GET /next HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
				if res, _ := rc.mustRead("GET"); res.StatusCode != 200 {
					t.Fatalf("%s: the next request: %s", front.name, res.Status)
				}
				if xff := inst.last().Header.Get("X-Forwarded-For"); xff != "6.6.6.6, 127.0.0.1" && xff != "127.0.0.1" {
					t.Fatalf("%s: the next request reached the instance with X-Forwarded-For %q", front.name, xff)
				}
			}
			rc.nc.Close()
		}
	}
}

// TestHandBuiltHeaderSpellings: a request handed to the Router by a caller
// other than net/http's servers may file its fields under any spelling.
// They are filed under their canonical names first, so that the checks by
// name see them: a client's "x-forwarded-for" is dropped like
// X-Forwarded-For, and a "HoSt" field is not sent as a second Host (which
// the instance refused with 400).
func TestHandBuiltHeaderSpellings(t *testing.T) {
	be := newRecorder(t)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, nil)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr, req.Host = "127.0.0.1:9", "front.example"
	req.Header = http.Header{"x-forwarded-for": {"6.6.6.6"}, "HoSt": {"evil.example"}}
	rec := httptest.NewRecorder()
	f.rt.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d %q", rec.Code, rec.Body.String())
	}
	got := be.last.Load()
	if xff := got.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the peer alone", xff)
	}
	if got.Host != "front.example" {
		t.Errorf("Host %q, want front.example", got.Host)
	}
}

// An instance whose answer head never ends (a header line it writes
// forever) gets its request a 502 as soon as the head passes
// h1.MaxResponseHead, charged to it, on every codec: on the net/http path
// http.ReadResponse read such a head with no limit, the proxy's memory
// growing for as long as the instance wrote, until the upstream timeout.
func TestEndlessResponseHead(t *testing.T) {
	var sent atomic.Int64
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Endless: "); err != nil {
			return false
		}
		chunk := []byte(strings.Repeat("a", 64<<10))
		for {
			n, err := c.Write(chunk)
			if sent.Add(int64(n)); err != nil {
				return false
			}
		}
	})
	badAnswerOnEveryCodec(t, inst.URL, 0)
	t.Logf("the instance wrote %d KiB in all", sent.Load()>>10)
}

// An instance that sends informational answers forever gets its request
// a 502 after h1.MaxInformational of them, charged to it, on every codec:
// through Go's Transport (requests with a body on the net/http path) they
// were relayed to the client without end until the upstream timeout.
func TestEndlessInformationalAnswers(t *testing.T) {
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		for {
			if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"); err != nil {
				return false
			}
		}
	})
	// ReverseProxy relays the one that fails the exchange too.
	badAnswerOnEveryCodec(t, inst.URL, h1.MaxInformational+1)
}

// codecCase is a request through one of the proxy's codecs.
type codecCase struct {
	name, url, method string
	client            *http.Client
}

// everyCodec starts a fast and an HTTP/2 front for f's Router and returns
// a request for each way a request reaches an instance: a GET through the
// fast codec, a GET and a POST through net/http (the direct leg and the
// Transport) and a GET over HTTP/2.
func everyCodec(t *testing.T, f *fixture) []codecCase {
	ff := startFast(t, f.rt, nil)
	h2 := startH2(t, f.rt, nil)
	return []codecCase{
		{"fast", ff.url, "GET", http.DefaultClient},
		{"net/http GET", f.front.URL, "GET", http.DefaultClient},
		{"net/http POST", f.front.URL, "POST", http.DefaultClient},
		{"HTTP/2", h2.url, "GET", h2Client(t)},
	}
}

// badAnswerOnEveryCodec sends a GET through the fast codec, a GET and a
// POST through net/http (the direct leg and the Transport) and a GET over
// HTTP/2 to an instance at url whose answers are all malformed, and wants
// a 502 for each within 5 s, charged to the instance (kind other), with at
// most max1xx informational answers relayed before it.
func badAnswerOnEveryCodec(t *testing.T, url string, max1xx int) {
	t.Helper()
	f := newFixture(t, []string{url}, []string{url}, nil)
	cases := everyCodec(t, f)
	for _, c := range cases {
		var body io.Reader
		if c.method == "POST" {
			body = strings.NewReader("order")
		}
		n1xx := 0
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(int, textproto.MIMEHeader) error { n1xx++; return nil },
		})
		req, _ := http.NewRequestWithContext(ctx, c.method, c.url+"/", body)
		start := time.Now()
		res, err := c.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway || time.Since(start) > 5*time.Second || n1xx > max1xx {
			t.Errorf("%s: %s after %v and %d informational answers, want 502 at once after at most %d", c.name, res.Status, time.Since(start), n1xx, max1xx)
		}
	}
	if _, byKind := sumMetric(t, f.reg, "bluegreen_upstream_errors_total", "kind"); byKind[KindOther] != float64(len(cases)) {
		t.Errorf("instance errors %v, want %d of kind other", byKind, len(cases))
	}
}

// An answer field whose name is not a token (a space inside it or before
// its colon) is the instance's malformed answer on every codec, a 502
// charged to it, as nginx answers "upstream sent invalid header": Go's
// lenient response parser kept such a field under its odd name, and
// net/http's server then dropped it on the way out, so on the net/http
// path "Content-Length : 2" left the answer without its length, read
// until the instance closed, while the fast codec and HTTP/2 answered 502.
func TestMalformedResponseFieldName(t *testing.T) {
	for _, c := range []struct{ name, head string }{
		{"space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{"space in the name", "HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 2\r\n\r\nok"},
		{"in an informational answer", "HTTP/1.1 103 Early Hints\r\nX Bad: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	} {
		head := c.head
		t.Run(c.name, func(t *testing.T) {
			inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
				_, err := io.WriteString(c, head)
				return err == nil // and the connection stays open
			})
			// ReverseProxy relays an informational answer before the
			// Transport's hook fails it.
			badAnswerOnEveryCodec(t, inst.URL, 1)
		})
	}
}

// A request with an empty Host (RFC 9112 allows one when the target has
// no authority) reaches the instance with the instance's own address as
// Host on both HTTP/1.1 codecs, as a request without a Host does (Go's
// client, on the net/http path, cannot send an empty one): the fast codec
// passed it on empty, so one request reached the app two ways.
func TestEmptyHost(t *testing.T) {
	be := newRecorder(t)
	f := newFixture(t, []string{be.URL}, []string{be.URL}, nil)
	ff := startFast(t, f.rt, nil)
	want := hostOf(t, be.URL)
	for _, front := range []struct{ name, addr string }{{"net/http", hostOf(t, f.front.URL)}, {"fast", ff.addr}} {
		for _, req := range []string{
			"GET / HTTP/1.1\r\nHost:\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: \t\r\nX-A: 1\r\n\r\n",
			"GET / HTTP/1.0\r\n\r\n",
		} {
			be.last.Store(nil)
			rc := dialRaw(t, front.addr)
			rc.send(req)
			res, body := rc.mustRead("GET")
			rc.nc.Close()
			seen := be.last.Load()
			if res.StatusCode != http.StatusOK || seen == nil || seen.Host != want {
				host := "(no request)"
				if seen != nil {
					host = strconv.Quote(seen.Host)
				}
				t.Errorf("%s: %q: %s %q; the instance saw Host %s, want %q", front.name, req, res.Status, body, host, want)
			}
		}
	}
}
