package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/proxy/h2/h2test"
)

// Tests of the HTTP/2 codec on the fast pipeline (fast_h2.go, package h2)
// over real TLS listeners: a Go HTTP/2 client, and raw frames.

// fastH2Front is a proxy.Server serving HTTP/2 over TLS on 127.0.0.1:0.
type fastH2Front struct {
	srv  *Server
	addr string
	url  string
}

// testCert is a self-signed ECDSA certificate for 127.0.0.1.
func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startH2 serves rt's HTTP/2 on a TLS listener with ServeH2 (and
// HTTP/1.1 with ServeTLS), as the TLS listener of cmd/bluegreen does.
func startH2(t testing.TB, rt *Router, mutate func(*Server)) *fastH2Front {
	t.Helper()
	s := newFastServer(rt, mutate)
	cfg := &tls.Config{Certificates: []tls.Certificate{testCert(t)}, NextProtos: []string{"h2", "http/1.1"}}
	ln := testkit.Listen(t, func(nc net.Conn) {
		go func() {
			tc := tls.Server(nc, cfg)
			if tc.Handshake() != nil {
				tc.Close()
				return
			}
			if tc.ConnectionState().NegotiatedProtocol == "h2" {
				_ = s.ServeH2(tc)
				return
			}
			_ = s.ServeTLS(tc)
		}()
	})
	t.Cleanup(func() {
		ln.Close()
		_ = s.Close()
		rt.CloseIdleConnections()
	})
	return &fastH2Front{srv: s, addr: ln.Addr().String(), url: "https://" + ln.Addr().String()}
}

// h2Client is a Go HTTP/2 client trusting any certificate.
func h2Client(t testing.TB) *http.Client {
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func TestH2ForwardsLikeTheFastCodec(t *testing.T) {
	var seen atomic.Value
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Clone(context.Background()))
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Color", "blue")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "dropped")
		fmt.Fprint(w, "hello from blue")
	}))
	defer inst.Close()
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "green")
	}))
	defer green.Close()
	f := newFixture(t, []string{inst.URL}, []string{green.URL}, func(c *Config) { c.StripPreviewHeader = true })
	fr := startH2(t, f.rt, func(s *Server) { s.HSTS = "max-age=60" })
	c := h2Client(t)

	req, _ := http.NewRequest("GET", fr.url+"/a/b?q=1", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	req.Header.Set("X-Custom", "kept")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != 200 || string(body) != "hello from blue" {
		t.Fatalf("got %s %d %q", res.Proto, res.StatusCode, body)
	}
	if res.Header.Get("Strict-Transport-Security") != "max-age=60" || res.Header.Get("X-Color") != "blue" ||
		res.Header.Get("X-Hop") != "" || res.Header.Get("Date") == "" {
		t.Errorf("response header %v", res.Header)
	}
	r := seen.Load().(*http.Request)
	host := strings.TrimPrefix(fr.url, "https://")
	if r.RequestURI != "/a/b?q=1" || r.Host != host || r.Header.Get("X-Forwarded-For") != "127.0.0.1" ||
		r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get("X-Forwarded-Host") != host ||
		r.Header.Get("Cookie") != "a=1; b=2" || r.Header.Get("X-Custom") != "kept" || r.Proto != "HTTP/1.1" {
		t.Errorf("instance saw %s %s host %s header %v", r.Proto, r.RequestURI, r.Host, r.Header)
	}

	// Preview over HTTP/2: the idle colour, and the preview field is not
	// forwarded.
	req, _ = http.NewRequest("GET", fr.url+"/", nil)
	req.Header.Set("X-Bluegreen-Preview", "1")
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "green" {
		t.Errorf("preview request answered %q, want green", body)
	}
}

func TestH2BodiesBothWays(t *testing.T) {
	const size = 10 << 20
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %x %v%s", n, h.Sum(nil), r.TransferEncoding, r.Trailer.Get("X-Sum"))
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		_, _ = io.Copy(w, io.LimitReader(zeros{}, size))
	}))
	defer inst.Close()
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)

	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	sum := sha256.Sum256(payload)
	for _, withLength := range []bool{true, false} {
		var body io.Reader = bytes.NewReader(payload)
		if !withLength {
			body = io.MultiReader(body) // no length known: no content-length, chunked to the instance
		}
		req, _ := http.NewRequest("POST", fr.url+"/upload", body)
		if !withLength {
			req.Trailer = http.Header{"X-Sum": {"sum-in-trailer"}} // forwarded in the last chunk
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		te := "[]"
		if !withLength {
			te = "[chunked]sum-in-trailer"
		}
		if want := fmt.Sprintf("%d %x %s", size, sum, te); string(got) != want {
			t.Errorf("upload (length known %v): instance saw %q, want %q", withLength, got, want)
		}
	}

	res, err := c.Get(fr.url + "/download")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || n != size || res.ContentLength != size {
		t.Errorf("download: %d bytes (length %d), %v", n, res.ContentLength, err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestH2TrailersAndEventStream(t *testing.T) {
	next := make(chan struct{})
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			w.Header().Set("Trailer", "X-Checksum")
			fmt.Fprint(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Checksum", "abc")
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			<-next // the client must have the first event before the second is written
			fmt.Fprint(w, "data: two\n\n")
		}
	}))
	defer inst.Close()
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)

	res, err := c.Get(fr.url + "/trailers")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "body" || res.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("got %q trailer %v", body, res.Trailer)
	}

	res, err = c.Get(fr.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(res.Body, buf, len("data: one\n\n"))
	if err != nil || string(buf[:n]) != "data: one\n\n" {
		t.Fatalf("first event: %q %v", buf[:n], err)
	}
	if open, _ := f.rt.Streams("blue"); open != 1 {
		t.Errorf("%d event streams tracked on blue, want 1", open)
	}
	close(next)
	rest, _ := io.ReadAll(res.Body)
	if string(rest) != "data: two\n\n" {
		t.Errorf("second event: %q", rest)
	}
}

func TestH2ClientResetIsTheClients(t *testing.T) {
	inst := heldInstance(t, "Content-Length", "100000", strings.Repeat("x", 1000)) // the rest never comes
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) { c.Outlier = OutlierConfig{Consecutive: 1, Eject: time.Minute} })
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)
	cf := &codecFronts{rt: f.rt, reg: f.reg}
	before := cf.counters(t)

	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", fr.url+"/slow", nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(res.Body, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		cancel() // RST_STREAM mid-body
		res.Body.Close()
	}
	d := waitCounters(t, cf, before, func(d counters) bool { return d.requests["499"] >= 3 })
	if d.requests["499"] != 3 || len(d.requests) != 1 {
		t.Errorf("requests counted %v, want 3 of 499", d.requests)
	}
	if d.upstreamErrors != 0 || d.ejections != 0 {
		t.Errorf("a client reset charged the instance: %v errors, %v ejections", d.upstreamErrors, d.ejections)
	}
	// The instance is still in use.
	res, err := c.Get(fr.url + "/slow")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("after the resets: %v %v", res, err)
	}
	res.Body.Close()
}

// TestH2StreamViolationIsCountedOnce: a request body longer than its
// content-length, sent while the request waits on the instance, is one
// fault of the client's: the stream is reset (PROTOCOL_ERROR), the request
// counted 400 with one malformed client error, and not also as a client
// that left.
func TestH2StreamViolationIsCountedOnce(t *testing.T) {
	arrived := make(chan struct{}, 1)
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		select {
		case arrived <- struct{}{}:
		default:
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) { c.Outlier = OutlierConfig{Consecutive: 1, Eject: time.Minute} })
	fr := startH2(t, f.rt, nil)
	cf := &codecFronts{rt: f.rt, reg: f.reg}
	for _, tc := range []struct {
		name string
		send func(r *h2test.Client)
	}{
		{"body longer than content-length", func(r *h2test.Client) {
			_ = r.Fr.WriteData(1, false, []byte("x"))
			_ = r.Fr.WriteData(1, true, []byte("yz"))
		}},
		{"body shorter than content-length", func(r *h2test.Client) { _ = r.Fr.WriteData(1, true, []byte("x")) }},
	} {
		before := cf.counters(t)
		r := dialH2(t, fr.addr, true)
		r.Request(1, "/up", false, "content-length", "2")
		tc.send(r)
		ok, _ := r.Until(func(f http2.Frame) bool {
			rs, ok := f.(*http2.RSTStreamFrame)
			return ok && rs.StreamID == 1 && rs.ErrCode == http2.ErrCodeProtocol
		})
		if !ok {
			t.Fatalf("%s: no RST_STREAM PROTOCOL_ERROR", tc.name)
		}
		waitCounters(t, cf, before, func(d counters) bool { return len(d.requests) > 0 })
		time.Sleep(50 * time.Millisecond) // a second count would come now
		d := waitCounters(t, cf, before, func(d counters) bool { return true })
		if len(d.requests) != 1 || d.requests["400"] != 1 || len(d.client) != 1 || d.client["malformed"] != 1 ||
			d.upstreamErrors != 0 || d.ejections != 0 {
			t.Errorf("%s: requests %v, client errors %v, %v upstream errors, %v ejections; want one 400 and one malformed, charging nobody",
				tc.name, d.requests, d.client, d.upstreamErrors, d.ejections)
		}
		select {
		case <-arrived:
		default:
		}
	}
}

// TestH2ResetKeepsTheInstanceConnection: a client that resets a stream
// after its request went to the instance costs the instance no connection
// when the answer is short and comes within h1.AbandonGrace: the answer is
// read and dropped and the connection pooled. Closing it instead let one
// client, for two frames, make the proxy dial a connection per request
// (18,545 connections for 20,000 HEADERS+RST pairs through the binary). A
// long answer, or none, still costs the connection, and none of it is
// charged to the instance.
func TestH2ResetKeepsTheInstanceConnection(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var served servedOn
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		served.note(r.URL.Path, c)
		body := "hello"
		switch r.URL.Path {
		case "/short", "/long", "/never":
			if !held(arrived, release) {
				return false
			}
			if r.URL.Path == "/long" {
				body = strings.Repeat("x", 1<<20)
			}
		}
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) { c.Outlier = OutlierConfig{Consecutive: 1, Eject: time.Minute} })
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)
	cf := &codecFronts{rt: f.rt, reg: f.reg}
	for i, tc := range []struct {
		path     string
		answer   bool // the instance answers, after the reset
		keptConn bool
	}{
		{"/short", true, true},
		{"/long", true, false},   // more than h1.AbandonDrain to drop
		{"/never", false, false}, // no answer within the grace
	} {
		before := cf.counters(t)
		rc := dialH2(t, fr.addr, true)
		rc.Request(1, tc.path, true)
		<-arrived
		_ = rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
		// The PING's answer comes once the reader took the reset.
		_ = rc.Fr.WritePing(false, [8]byte{'r', 's', 't'})
		rc.Until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() })
		if tc.answer {
			release <- struct{}{}
		}
		d := waitCounters(t, cf, before, func(d counters) bool { return d.requests["499"] >= 1 })
		if d.requests["499"] != 1 || d.upstreamErrors != 0 || d.ejections != 0 {
			t.Errorf("%s: requests %v, %v upstream errors, %v ejections; want one 499 charging nobody",
				tc.path, d.requests, d.upstreamErrors, d.ejections)
		}
		if !tc.answer {
			release <- struct{}{} // the instance may end its wait
		}
		// The next request takes the pooled connection, if it was kept.
		after := fmt.Sprintf("/after%d", i)
		res, err := c.Get(fr.url + after)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if got := served.same(tc.path, after); got != tc.keptConn {
			t.Errorf("%s reset: the next request on the same instance connection %v, want %v", tc.path, got, tc.keptConn)
		}
	}
}

func TestH2InstanceFailingMidBodyIsCharged(t *testing.T) {
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
		return false // closes with 993 bytes missing
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)
	cf := &codecFronts{rt: f.rt, reg: f.reg}
	before := cf.counters(t)

	res, err := c.Get(fr.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	var se http2.StreamError
	if !errors.As(err, &se) || se.Code != http2.ErrCodeInternal || string(body) != "partial" {
		t.Errorf("client read %q, %v; want the partial body and RST_STREAM INTERNAL_ERROR", body, err)
	}
	d := waitCounters(t, cf, before, func(d counters) bool { return d.upstreamErrors > 0 && len(d.requests) > 0 })
	if d.upstreamErrors != 1 {
		t.Errorf("%v upstream errors charged, want 1", d.upstreamErrors)
	}
	if d.requests["200"] != 1 {
		t.Errorf("requests counted %v: the status relayed (200) is what is counted", d.requests)
	}
}

// dialH2 opens a raw HTTP/2 client connection over TLS (ALPN h2), for
// malformed frames.
func dialH2(t *testing.T, addr string, preface bool) *h2test.Client {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	return h2test.New(t, tc, preface)
}

func TestH2MalformedFrames(t *testing.T) {
	var inFlight, maxInFlight atomic.Int64
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
			}
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer inst.Close()
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, func(s *Server) {})
	fr.srv.configure()
	fr.srv.h2.MaxConcurrentStreams = 8

	t.Run("bad preface", func(t *testing.T) {
		r := dialH2(t, fr.addr, false)
		_, _ = io.WriteString(r.Conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxxxx")
		if ok, _ := r.Until(func(http2.Frame) bool { return false }); ok {
			t.Error("the connection stayed open")
		}
	})
	connCases := []struct {
		name string
		send func(r *h2test.Client)
		want http2.ErrCode
	}{
		{"DATA on stream 0", func(r *h2test.Client) {
			r.Fr.AllowIllegalWrites = true
			_ = r.Fr.WriteData(0, true, []byte("x"))
		}, http2.ErrCodeProtocol},
		{"DATA on an idle stream", func(r *h2test.Client) { _ = r.Fr.WriteData(5, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"SETTINGS on a stream", func(r *h2test.Client) {
			r.Fr.AllowIllegalWrites = true
			_ = r.Fr.WriteRawFrame(http2.FrameSettings, 0, 3, nil)
		}, http2.ErrCodeProtocol},
		{"connection window overflow", func(r *h2test.Client) {
			_ = r.Fr.WriteWindowUpdate(0, 1<<31-1)
			_ = r.Fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
		{"even stream id", func(r *h2test.Client) {
			_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: r.Headers("/"), EndStream: true, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"frame larger than SETTINGS_MAX_FRAME_SIZE", func(r *h2test.Client) {
			_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.Headers("/"), EndHeaders: true})
			_ = r.Fr.WriteData(1, true, make([]byte, 20000))
		}, http2.ErrCodeFrameSize},
		{"CONTINUATION flood", func(r *h2test.Client) {
			block := r.Headers("/", "x-pad", strings.Repeat("a", 4000))
			_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block})
			// Each byte 0xbe repeats x-pad (dynamic table index 62), 4 KB
			// of header list: far past the limit.
			for i := 0; i < 200; i++ {
				if r.Fr.WriteContinuation(1, false, bytes.Repeat([]byte{0xbe}, 3000)) != nil {
					return
				}
			}
		}, http2.ErrCodeProtocol},
		{"empty DATA flood (CVE-2019-9518)", func(r *h2test.Client) {
			_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.Headers("/"), EndHeaders: true})
			for range 1000 {
				if r.Fr.WriteData(1, false, nil) != nil {
					return
				}
			}
		}, http2.ErrCodeEnhanceYourCalm},
		{"PRIORITY flood", func(r *h2test.Client) {
			for i := range uint32(1000) {
				if r.Fr.WritePriority(1+2*i, http2.PriorityParam{Weight: 1}) != nil {
					return
				}
			}
		}, http2.ErrCodeEnhanceYourCalm},
	}
	for _, tc := range connCases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialH2(t, fr.addr, true)
			tc.send(r)
			if got := r.GoAwayCode(); got != int(tc.want) {
				t.Errorf("GOAWAY code %d, want %v", got, tc.want)
			}
		})
	}

	t.Run("oversized header list", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		block := r.Headers("/", "x-big", strings.Repeat("b", 15000), "x-big2", strings.Repeat("c", 15000),
			"x-big3", strings.Repeat("d", 15000), "x-big4", strings.Repeat("e", 15000), "x-big5", strings.Repeat("f", 15000))
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16000], EndStream: true})
		for rest := block[16000:]; len(rest) > 0; {
			n := min(len(rest), 16000)
			_ = r.Fr.WriteContinuation(1, n == len(rest), rest[:n])
			rest = rest[n:]
		}
		var status string
		ok, _ := r.Until(func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				status = h.PseudoValue("status")
				return true
			}
			return false
		})
		if !ok || status != "431" {
			t.Errorf("got status %q (answered %v), want 431", status, ok)
		}
	})

	t.Run("request answered and connection kept after a stream error", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		// A connection-specific field makes the request malformed: the
		// stream is reset, the connection goes on.
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.Headers("/", "connection", "close"), EndStream: true, EndHeaders: true})
		ok, _ := r.Until(func(f http2.Frame) bool {
			rs, ok := f.(*http2.RSTStreamFrame)
			return ok && rs.StreamID == 1 && rs.ErrCode == http2.ErrCodeProtocol
		})
		if !ok {
			t.Fatal("no RST_STREAM PROTOCOL_ERROR for the malformed request")
		}
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: r.Headers("/"), EndStream: true, EndHeaders: true})
		ok, _ = r.Until(func(f http2.Frame) bool {
			d, ok := f.(*http2.DataFrame)
			return ok && d.StreamID == 3 && string(d.Data()) == "ok"
		})
		if !ok {
			t.Error("the next request was not answered")
		}
	})

	t.Run("Expect 100-continue is answered before the body", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		r.HB.Reset()
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "test"}, {":path", "/up"},
			{"expect", "100-continue"}, {"content-length", "2"}} {
			_ = r.Enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.HB.Bytes(), EndHeaders: true})
		var statuses []string
		match := func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				statuses = append(statuses, h.PseudoValue("status"))
				return true
			}
			return false
		}
		if ok, _ := r.Until(match); !ok || statuses[0] != "100" {
			t.Fatalf("before the body: %v", statuses)
		}
		_ = r.Fr.WriteData(1, true, []byte("hi"))
		if ok, _ := r.Until(match); !ok || statuses[1] != "200" {
			t.Errorf("after the body: %v", statuses)
		}
	})

	t.Run("rapid reset", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		// Streams reset at once keep their slot until their handler ends;
		// a client opening streams past the limit again and again is told
		// to calm down.
		id := uint32(1)
		for i := 0; i < 400; i++ {
			if r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.Headers("/hang"), EndStream: true, EndHeaders: true}) != nil {
				break
			}
			if r.Fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				break
			}
			id += 2
		}
		r.Conn.Close()
		if m := maxInFlight.Load(); m > 8 {
			t.Errorf("the instance had %d requests of the connection at once; the limit is 8", m)
		}
		r2 := dialH2(t, fr.addr, true)
		_ = r2.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r2.Headers("/"), EndStream: true, EndHeaders: true})
		if ok, _ := r2.Until(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }); !ok {
			t.Error("a new connection was not served after the flood")
		}
	})
}

func TestH2IdleTimeoutAndShutdown(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "done "+r.URL.Path)
	}))
	defer inst.Close()
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, func(s *Server) { s.IdleTimeout = 300 * time.Millisecond })

	// An idle connection is told GOAWAY NO_ERROR and closed.
	r := dialH2(t, fr.addr, true)
	if got := r.GoAwayCode(); got != int(http2.ErrCodeNo) {
		t.Errorf("idle connection: GOAWAY code %d, want NO_ERROR", got)
	}

	// Shutdown: GOAWAY at once, the stream in flight finishes, then the
	// connection closes and Shutdown returns.
	c := h2Client(t)
	got := make(chan string, 1)
	go func() {
		res, err := c.Get(fr.url + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- string(b)
	}()
	<-entered // the stream is in flight at the instance
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- fr.srv.Shutdown(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned %v with a stream in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if b := <-got; b != "done /slow" {
		t.Errorf("the stream in flight got %q", b)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestH2EventStreamEndsCleanlyOnDrain(t *testing.T) {
	inst := heldInstance(t, "Content-Type", "text/event-stream", "data: one\n\n")
	f, res := firstEvent(t, inst.URL)
	// The end of a drain (or shutdown) ends tracked streams: END_STREAM,
	// a clean end the client reconnects after, not a reset.
	if n := f.rt.CloseStreams(); n != 1 {
		t.Fatalf("CloseStreams ended %d streams, want 1", n)
	}
	rest, err := io.ReadAll(res.Body)
	if err != nil || len(rest) != 0 {
		t.Errorf("after the drain ending: %q %v, want a clean end", rest, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open, _ := f.rt.Streams("blue"); open != 0 && time.Now().Before(deadline); open, _ = f.rt.Streams("blue") {
		time.Sleep(5 * time.Millisecond)
	}
	if open, _ := f.rt.Streams("blue"); open != 0 {
		t.Errorf("%d streams still tracked", open)
	}
}

func TestH2EarlyAnswerEndsTheUpload(t *testing.T) {
	// An instance that refuses a large upload at once and reads no more of
	// it (RFC 9112 9.5): its answer reaches the client, the proxy stops
	// sending the body.
	hold := make(chan struct{})
	defer close(hold)
	ln := testkit.Listen(t, func(nc net.Conn) {
		go func() {
			defer nc.Close()
			br := bufio.NewReader(nc)
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == "GET" { // health checks and the like
				_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
				return
			}
			_, _ = io.WriteString(nc, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
			<-hold // the rest of the body stays unread
		}()
	})
	url := "http://" + ln.Addr().String()
	f := newFixture(t, []string{url}, []string{url}, nil)
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)
	res, err := c.Post(fr.url+"/upload", "application/octet-stream", io.LimitReader(zeros{}, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 413 || string(body) != "big!" {
		t.Errorf("got %d %q, want the instance's 413", res.StatusCode, body)
	}
}

// TestH2ForwardsAsHTTPS1: the same requests over HTTPS/1.1 (the fast
// codec) and over HTTP/2 reach the instance with the same target, Host
// and fields, from an untrusted and from a trusted peer.
func TestH2ForwardsAsHTTPS1(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			inst := newRawInstance(t, okHandler("blue"))
			f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) {
				c.StripPreviewHeader = true
				if trusted {
					c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				}
			})
			fr := startH2(t, f.rt, nil)
			h1c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			t.Cleanup(h1c.CloseIdleConnections)
			h2c := h2Client(t)
			cases := []map[string]string{
				{},
				{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "other.example", "X-Forwarded-Proto": "http",
					"X-Forwarded-Port": "81", "X-Real-Ip": "7.7.7.7", "Forwarded": "for=8.8.8.8"},
				{"Proxy-Authorization": "Basic eDp5", "Te": "trailers", "X-Bluegreen-Preview": "0", "Accept": "*/*"},
				{"Cookie": "a=1; b=2", "User-Agent": "test", "X-Many": "v"},
			}
			for i, hdr := range cases {
				var seen [2]seenReq
				for j, c := range []*http.Client{h1c, h2c} {
					req, _ := http.NewRequest("GET", fr.url+"/p/a%20th?x=1&y=2", nil)
					for k, v := range hdr {
						req.Header.Set(k, v)
					}
					req.Header.Set("User-Agent", "test") // Go's clients send their own otherwise
					res, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if (res.ProtoMajor == 2) != (j == 1) {
						t.Fatalf("case %d: client %d spoke %s", i, j, res.Proto)
					}
					seen[j] = inst.last()
				}
				a, b := seen[0], seen[1]
				if want := map[bool]string{false: "127.0.0.1", true: "6.6.6.6, 127.0.0.1"}[trusted]; i == 1 && b.Header.Get("X-Forwarded-For") != want {
					t.Errorf("HTTP/2 X-Forwarded-For %q, want %q", b.Header.Get("X-Forwarded-For"), want)
				}
				a.Header.Del("Accept-Encoding") // Go's HTTP/1.1 and HTTP/2 clients ask for gzip differently
				b.Header.Del("Accept-Encoding")
				if a.Method != b.Method || a.RequestURI != b.RequestURI || a.Host != b.Host || fmt.Sprint(a.Header) != fmt.Sprint(b.Header) {
					t.Errorf("case %d:\nHTTPS/1.1: %s %s host %s %v\nHTTP/2:    %s %s host %s %v", i,
						a.Method, a.RequestURI, a.Host, a.Header, b.Method, b.RequestURI, b.Host, b.Header)
				}
			}
		})
	}
}

func TestH2RelaysEarlyHints(t *testing.T) {
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLink: </a.css>; rel=preload\r\n\r\nok")
		return true
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, nil)
	c := h2Client(t)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", fr.url+"/", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "ok" || len(hints) != 1 || hints[0] != "103 </a.css>; rel=preload" {
		t.Errorf("got %d %q, 1xx %q", res.StatusCode, body, hints)
	}
}

// Content-Length fields an instance may send but an HTTP/2 client refuses
// (nghttp2, in curl and h2load: RFC 9113 8.1.1, RFC 9110 8.6) do not reach
// it, from the fast codec or Go's HTTP/2 server: a repeat of one value is
// sent once, a 204's and a 1xx's not at all. curl exited 92 (stream error)
// on each before (Go's server: the 204).
func TestH2ContentLengthClientsAccept(t *testing.T) {
	curl := testkit.Tool(t, "curl", ".ci/apt/ops.txt")
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		answer := map[string]string{
			"/twice": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\ncontent-length: 2\r\n\r\nok",
			"/204":   "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
			"/hints": "HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			"/304":   "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
		}[r.URL.Path]
		_, err := io.WriteString(c, answer)
		return err == nil
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, nil)
	std := httptest.NewUnstartedServer(f.rt) // Go's HTTP/2 server (BLUEGREEN_H2=nethttp)
	std.EnableHTTP2 = true
	std.StartTLS()
	t.Cleanup(std.Close)
	for _, front := range []string{fr.url, std.URL} {
		for path, want := range map[string]string{"/twice": "200 2 ok", "/204": "204 2 ", "/hints": "200 2 ok", "/304": "304 2 "} {
			out, err := exec.Command(curl, "-sSk", "--http2", "-w", " %{http_code} %{http_version}", front+path).CombinedOutput()
			body, status, _ := strings.Cut(string(out), " ")
			if got := status + " " + body; err != nil || got != want {
				t.Errorf("curl %s%s: %q (%v), want %q", front, path, out, err, want)
			}
		}
	}
	// What the client is sent: the length once.
	c := dialH2(t, fr.addr, true)
	c.Request(1, "/twice", true)
	for {
		switch fm := c.Next(1).(type) {
		case *http2.MetaHeadersFrame:
			var lengths []string
			for _, hf := range fm.Fields {
				if hf.Name == "content-length" {
					lengths = append(lengths, hf.Value)
				}
			}
			if !slices.Equal(lengths, []string{"2"}) {
				t.Fatalf("content-length fields %q, want one \"2\"", lengths)
			}
			return
		case nil, *http2.GoAwayFrame, *http2.RSTStreamFrame:
			t.Fatalf("no response head: %v", fm)
		}
	}
}

func TestH2EventStreamEndWaitsForTheChunk(t *testing.T) {
	ended, rest := make(chan struct{}), make(chan struct{})
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"b\r\ndata: one\n\n\r\nb\r\ndata:")
		<-ended // the drain ends the stream while this chunk is under way
		_, _ = io.WriteString(c, " two\n\n\r\n")
		<-rest
		_, _ = io.WriteString(c, "d\r\ndata: three\n\n\r\n") // after the end: never relayed
		return false
	})
	defer close(rest)
	f, res := firstEvent(t, inst.URL)
	// The partial chunk came in the same write as the first event, and the
	// relay passes on what it has before it waits for more: once the client
	// has its first bytes, the ending finds the relay mid-chunk. (Ended
	// before it took them, the relay would end at the boundary before
	// them, which is right too, but not what this test is about.)
	part := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, part); err != nil || string(part) != "data:" {
		t.Fatalf("the chunk's first bytes: %q %v", part, err)
	}
	if n := f.rt.CloseStreams(); n != 1 {
		t.Fatalf("CloseStreams ended %d streams, want 1", n)
	}
	close(ended)
	got, err := io.ReadAll(res.Body)
	if err != nil || string(part)+string(got) != "data: two\n\n" {
		t.Errorf("after the ending: %q %v, want the chunk under way and a clean end", string(part)+string(got), err)
	}
}

// heldInstance answers every request with the field and the first bytes
// of its body, then holds the response open until the client goes or the
// test ends.
func heldInstance(t *testing.T, field, value, first string) *httptest.Server {
	release := make(chan struct{})
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(field, value)
		fmt.Fprint(w, first)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); inst.Close() })
	return inst
}

// firstEvent proxies an event stream of the instance at url over HTTP/2
// and reads its first event, "data: one\n\n".
func firstEvent(t *testing.T, url string) (*fixture, *http.Response) {
	t.Helper()
	f := newFixture(t, []string{url}, []string{url}, nil)
	fr := startH2(t, f.rt, nil)
	res, err := h2Client(t).Get(fr.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	buf := make([]byte, 11)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "data: one\n\n" {
		t.Fatalf("first event %q %v", buf, err)
	}
	return f, res
}

// A client that starts a header block and does not finish it (HEADERS
// without END_HEADERS and no CONTINUATION, or a HEADERS frame sent in
// part), or that sends the preface and nothing more, has its connection
// closed after ReadHeaderTimeout, not held until the idle timeout (or, with
// another stream running, for ever).
func TestH2ReadHeaderTimeout(t *testing.T) {
	held, release := make(chan struct{}, 1), make(chan struct{})
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			<-r.Context().Done()
			return
		case "/held":
			held <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "ok")
	}))
	defer inst.Close()
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	fr := startH2(t, f.rt, func(s *Server) {
		s.IdleTimeout = time.Minute
		s.ReadHeaderTimeout = 200 * time.Millisecond
	})
	// closedByServer reads (acknowledging nothing, which would interrupt
	// the header block) until the connection ends, and fails unless the
	// server ended it (the client's own deadline is 5 s, far above the
	// header timeout and far below the idle timeout).
	closedByServer := func(t *testing.T, r *h2test.Client) {
		t.Helper()
		_ = r.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, err := r.Fr.ReadFrame(); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("the server kept the connection open")
				}
				return
			}
		}
	}
	block := func(r *h2test.Client) []byte { return r.Headers("/") }

	t.Run("preface and nothing", func(t *testing.T) {
		r := dialH2(t, fr.addr, false)
		_, _ = io.WriteString(r.Conn, http2.ClientPreface)
		closedByServer(t, r)
	})
	t.Run("no CONTINUATION", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(r), EndStream: true})
		closedByServer(t, r)
	})
	t.Run("no CONTINUATION while a stream runs", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		r.Request(1, "/hang", true)
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(r), EndStream: true})
		closedByServer(t, r)
	})
	// The last stream ending (which arms the idle timeout) while a
	// header block is pending leaves the block its header timeout.
	t.Run("no CONTINUATION while the last stream ends", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		r.Request(1, "/held", true)
		<-held
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(r), EndStream: true})
		time.Sleep(50 * time.Millisecond) // the reader is in the header block
		close(release)
		closedByServer(t, r)
	})
	t.Run("HEADERS frame in part", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		b := block(r)
		hdr := []byte{0, 0, byte(len(b)), byte(http2.FrameHeaders), byte(http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream), 0, 0, 0, 1}
		_, _ = r.Conn.Write(append(hdr, b[:len(b)/2]...))
		closedByServer(t, r)
	})
	t.Run("a header block in time is served", func(t *testing.T) {
		r := dialH2(t, fr.addr, true)
		b := block(r)
		_ = r.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3], EndStream: true})
		_ = r.Fr.WriteContinuation(1, true, b[3:])
		if fm, isHdr := r.Next(1).(*http2.MetaHeadersFrame); !isHdr || fm.PseudoValue("status") != "200" {
			t.Fatalf("got %v", fm)
		}
	})
}
