package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of Expect: 100-continue requests on the fast codec, which forwards
// the head with the expectation and relays the body only once the instance
// said 100 Continue, or was silent for h1.ExpectContinueTimeout; a final
// answer before the body is relayed without reading it.

// expectInstance answers, on a raw listener, POST /continue with a 100
// Continue of its own (marked X-Continue: instance) and then the SHA-256
// of the body; /silent with that sum without any 100; /refuse with a 413
// before the body, after which it counts the bytes the proxy still sends
// on that connection until it closes.
type expectInstance struct {
	URL      string
	conns    atomic.Int64 // connections accepted
	leaked   atomic.Int64 // bytes sent after a 413
	refusals atomic.Int64 // 413 connections that ended
	heads    chan string  // the path of each head read, when there is room
}

func newExpectInstance(t *testing.T) *expectInstance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ei := &expectInstance{URL: "http://" + ln.Addr().String(), heads: make(chan string, 16)}
	// Registered before the proxy's, serveEach's cleanup runs after it:
	// the proxy's connections are closed by then, and the deadline bounds
	// any other.
	serveEach(t, ln, func(c net.Conn) {
		ei.conns.Add(1)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		ei.serve(c)
	})
	return ei
}

// serveEach serves each connection ln accepts in a goroutine of its own,
// which closes it after serve; the listener closes, and the goroutines are
// waited for, when the test ends.
func serveEach(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
}

func (ei *expectInstance) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		select {
		case ei.heads <- r.URL.Path:
		default:
		}
		answer := func(s string) bool {
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(s))+"\r\n\r\n"+s)
			return err == nil
		}
		expect := r.Header.Get("Expect")
		switch r.URL.Path {
		case "/continue":
			if expect == "100-continue" {
				if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\nX-Continue: instance\r\n\r\n"); err != nil {
					return
				}
			}
			fallthrough
		case "/silent":
			body, err := io.ReadAll(r.Body)
			if err != nil || !answer(expect+" "+sum(body)) {
				return
			}
		case "/refuse":
			_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
			n, _ := io.Copy(io.Discard, br)
			ei.leaked.Add(n)
			ei.refusals.Add(1)
			return
		default:
			if !answer("ok " + r.URL.Path) {
				return
			}
		}
	}
}

// newExpectFront serves ei on the fast codec; its Fallback answers 500 to
// any request, so that a request handed to net/http shows, and checks at
// the end of the test that none was.
func newExpectFront(t *testing.T, ei *expectInstance) *codecFronts {
	t.Helper()
	f := newFixture(t, []string{ei.URL}, []string{ei.URL}, func(c *Config) {
		c.ClientBodyTimeout = 300 * time.Millisecond
	})
	cf := &codecFronts{rt: f.rt, reg: f.reg}
	var handed atomic.Int64
	cf.fast = startFast(t, f.rt, func(s *Server) {
		s.Fallback.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			handed.Add(1)
			http.Error(w, "handed to net/http", http.StatusInternalServerError)
		})
	}).addr
	t.Cleanup(func() {
		if n := handed.Load(); n != 0 {
			t.Errorf("%d requests were handed to net/http", n)
		}
	})
	return cf
}

// readContinue reads an informational head, which must be 100 Continue,
// and returns its lines.
func readContinue(t *testing.T, rc *rawConn) string {
	t.Helper()
	var head strings.Builder
	for {
		line, err := rc.br.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for 100 Continue: %v (read %q)", err, head.String())
		}
		if line == "\r\n" {
			break
		}
		head.WriteString(line)
	}
	if !strings.HasPrefix(head.String(), "HTTP/1.1 100 Continue\r\n") {
		t.Fatalf("got %q, want a 100 Continue", head.String())
	}
	return head.String()
}

// TestFastExpectContinueRelayed: the instance's 100 Continue reaches the
// client, which only then sends its body (5 bytes, then 2 MiB, spliced),
// and the instance gets it whole; the client connection and the one
// instance connection carry the next requests.
func TestFastExpectContinueRelayed(t *testing.T) {
	ei := newExpectInstance(t)
	cf := newExpectFront(t, ei)
	before := cf.counters(t)
	rc := dialRaw(t, cf.fast)
	for _, n := range []int{5, 2 << 20} {
		body := bigBody(n)
		rc.send("POST /continue HTTP/1.1\r\nHost: app.example\r\nExpect: 100-continue\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n")
		if head := readContinue(t, rc); !strings.Contains(head, "X-Continue: instance\r\n") {
			t.Fatalf("%d bytes: the 100 Continue is not the instance's: %q", n, head)
		}
		rc.send(string(body))
		res, got := rc.mustRead("POST")
		if res.StatusCode != 200 || got != "100-continue "+sum(body) {
			t.Fatalf("%d bytes: %d %q, want the body's sum", n, res.StatusCode, got)
		}
		rc.send("GET /after HTTP/1.1\r\nHost: app.example\r\n\r\n")
		if res, got := rc.mustRead("GET"); res.StatusCode != 200 || got != "ok /after" {
			t.Fatalf("next request: %d %q", res.StatusCode, got)
		}
	}
	if n := ei.conns.Load(); n != 1 {
		t.Errorf("the instance accepted %d connections, want 1 (reused)", n)
	}
	if d := cf.counters(t).upstreamErrors - before.upstreamErrors; d != 0 {
		t.Errorf("%v upstream errors", d)
	}
}

// TestFastExpectContinueRefused: an instance that answers 413 to the head
// gets no byte of the body; the client gets the 413 and a closed
// connection, the instance connection is not reused, and nothing is
// charged to the instance.
func TestFastExpectContinueRefused(t *testing.T) {
	ei := newExpectInstance(t)
	cf := newExpectFront(t, ei)
	before := cf.counters(t)
	rc := dialRaw(t, cf.fast)
	rc.send("PUT /refuse HTTP/1.1\r\nHost: app.example\r\nExpect: 100-continue\r\nContent-Length: 1048576\r\n\r\n")
	res, body := rc.mustRead("PUT")
	if res.StatusCode != 413 || body != "too large" || !res.Close {
		t.Fatalf("%d %q close=%v, want 413 and close", res.StatusCode, body, res.Close)
	}
	if !rc.closedWithin(5 * time.Second) {
		t.Fatal("the client connection stayed open after the early answer")
	}
	for end := time.Now().Add(5 * time.Second); ei.refusals.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the instance connection stayed open after the early answer")
		}
	}
	if n := ei.leaked.Load(); n != 0 {
		t.Errorf("the instance got %d bytes after its 413", n)
	}
	rc = dialRaw(t, cf.fast)
	rc.send("GET /next HTTP/1.1\r\nHost: app.example\r\n\r\n")
	if res, got := rc.mustRead("GET"); res.StatusCode != 200 || got != "ok /next" {
		t.Fatalf("next request: %d %q", res.StatusCode, got)
	}
	after := cf.counters(t)
	if d := after.upstreamErrors - before.upstreamErrors; d != 0 {
		t.Errorf("%v upstream errors after an early 413", d)
	}
}

// TestFastExpectContinueSilent: an instance that never says 100 Continue
// gets the body anyway once h1.ExpectContinueTimeout passed, after the
// proxy told the client 100 Continue itself.
func TestFastExpectContinueSilent(t *testing.T) {
	ei := newExpectInstance(t)
	cf := newExpectFront(t, ei)
	rc := dialRaw(t, cf.fast)
	body := bigBody(100 << 10)
	rc.send("POST /silent HTTP/1.1\r\nHost: app.example\r\nExpect: 100-continue\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	if head := readContinue(t, rc); strings.Contains(head, "X-Continue") {
		t.Fatalf("the proxy relayed a 100 Continue the instance never sent: %q", head)
	}
	rc.send(string(body))
	res, got := rc.mustRead("POST")
	if res.StatusCode != 200 || got != "100-continue "+sum(body) {
		t.Fatalf("%d %q, want the body's sum", res.StatusCode, got)
	}
}

// TestFastExpectContinueClientStalls: a client told 100 Continue that
// never sends its body is answered 408, its fault: no upstream error.
func TestFastExpectContinueClientStalls(t *testing.T) {
	ei := newExpectInstance(t)
	cf := newExpectFront(t, ei)
	before := cf.counters(t)
	for _, part := range []string{"", "half"} {
		rc := dialRaw(t, cf.fast)
		rc.send("POST /continue HTTP/1.1\r\nHost: app.example\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
		readContinue(t, rc)
		rc.send(part)
		res, _ := rc.mustRead("POST")
		if res.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("%q of the body: %s, want 408", part, res.Status)
		}
	}
	after := cf.counters(t)
	if d := after.upstreamErrors - before.upstreamErrors; d != 0 {
		t.Errorf("%v upstream errors for clients that stalled", d)
	}
	if d := diffMap(after.client, before.client); d["timeout"] != 2 {
		t.Errorf("client errors %v, want 2 timeouts", d)
	}
}

// TestFastExpectContinueBodyAlreadySent: a client that sends its body
// without waiting for 100 Continue, with the head (in one write; 32 KiB,
// more than the proxy writes with the head) or once the instance has the
// head, is not made to wait: the silent instance gets the body, and the
// client's first answer is the final one, without a 100 of the proxy's.
func TestFastExpectContinueBodyAlreadySent(t *testing.T) {
	ei := newExpectInstance(t)
	cf := newExpectFront(t, ei)
	for _, how := range []sendHow{together, afterHead} {
		bodyWithoutWaiting(t, ei, dialRaw(t, cf.fast), how)
	}
}

// TestFastExpectContinueBodyAlreadySentTLS: the same over TLS (the fast
// codec's ServeTLS), where the body's records may already sit in the TLS
// connection's buffer, read from the socket with the head's, so that no
// look at the socket sees them: the body sent right after the head, and
// once the instance has the head.
func TestFastExpectContinueBodyAlreadySentTLS(t *testing.T) {
	ei := newExpectInstance(t)
	f := newFixture(t, []string{ei.URL}, []string{ei.URL}, func(c *Config) {
		c.ClientBodyTimeout = 300 * time.Millisecond
	})
	front := startH2(t, f.rt, nil)
	for _, how := range []sendHow{rightAfter, afterHead} {
		tc, err := tls.Dial("tcp", front.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tc.Close() })
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		bodyWithoutWaiting(t, ei, &rawConn{t: t, nc: tc, br: bufio.NewReader(tc)}, how)
	}
}

// sendHow is when a client that expects 100 Continue sends its body.
type sendHow int

const (
	together   sendHow = iota // in one write with the head
	rightAfter                // in the next write
	afterHead                 // once the instance has read the head
)

// bodyWithoutWaiting sends ei's silent path a 32 KiB body with Expect:
// 100-continue on rc, how says when, and requires the final answer first.
func bodyWithoutWaiting(t *testing.T, ei *expectInstance, rc *rawConn, how sendHow) {
	t.Helper()
	body := bigBody(32 << 10)
	head := "POST /silent HTTP/1.1\r\nHost: app.example\r\nExpect: 100-continue\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	switch how {
	case together:
		rc.send(head + string(body))
	case rightAfter:
		rc.send(head)
		rc.send(string(body))
	case afterHead:
		rc.send(head)
		select {
		case <-ei.heads:
		case <-time.After(5 * time.Second):
			t.Fatal("the head did not reach the instance")
		}
		rc.send(string(body))
	}
	res, got := rc.mustRead("POST")
	if res.StatusCode != 200 || got != "100-continue "+sum(body) {
		t.Fatalf("body sent %v: %d %q, want 200 and the body's sum", how, res.StatusCode, got)
	}
	for len(ei.heads) > 0 {
		<-ei.heads
	}
}
