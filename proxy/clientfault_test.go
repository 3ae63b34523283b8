package proxy

import (
	"bufio"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Tests of issue 11 parts 2 and 3, run on both codecs: the fast codec
// (proxy/h1, which hands chunked and odd requests to net/http behind the
// framing guard) and a net/http-only front (the Router without the fast
// codec, as with BLUEGREEN_FAST_PATH=false). Each case must give the same
// status, the same requests at the instances and the same counters on both.

// codecFronts serves one Router on both codecs.
type codecFronts struct {
	rt        *Router
	reg       *prometheus.Registry
	blue      [2]*rawInstance
	fast, std string // host:port
}

// newCodecFronts starts two blue instances answering with h (or, with urls,
// uses those as blue), and serves them on both codecs with outlier
// detection ejecting after two failures.
func newCodecFronts(t *testing.T, h rawHandler, urls ...string) *codecFronts {
	t.Helper()
	cf := &codecFronts{}
	if len(urls) == 0 {
		for i := range cf.blue {
			cf.blue[i] = newRawInstance(t, h)
			urls = append(urls, cf.blue[i].URL)
		}
	}
	green := newRawInstance(t, okHandler("green"))
	f := newFixture(t, urls, []string{green.URL}, func(c *Config) {
		c.Outlier = OutlierConfig{Consecutive: 2, Eject: time.Minute}
		c.ClientBodyTimeout = 300 * time.Millisecond
	})
	cf.rt, cf.reg = f.rt, f.reg
	cf.fast = startFast(t, f.rt, nil).addr
	cf.std = startNetHTTPOnly(t, f.rt)
	return cf
}

// startNetHTTPOnly serves rt with net/http only, as Server does when the
// fast codec is off.
func startNetHTTPOnly(t *testing.T, rt *Router) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rt, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); _ = serveNetHTTP(srv, ln, rt) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

// counters is what a case is judged by besides the status.
type counters struct {
	upstreamErrors, ejections, retries float64
	client                             map[string]float64
	requests                           map[string]float64 // by code
}

func sumMetric(t *testing.T, reg *prometheus.Registry, name, byLabel string) (float64, map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total, by := 0.0, map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			total += v
			for _, lp := range m.GetLabel() {
				if lp.GetName() == byLabel && v != 0 {
					by[lp.GetValue()] += v
				}
			}
		}
	}
	return total, by
}

func (cf *codecFronts) counters(t *testing.T) counters {
	var c counters
	c.upstreamErrors, _ = sumMetric(t, cf.reg, "bluegreen_upstream_errors_total", "")
	c.ejections, _ = sumMetric(t, cf.reg, "bluegreen_outlier_ejections_total", "")
	c.retries, _ = sumMetric(t, cf.reg, "bluegreen_upstream_retries_total", "")
	_, c.client = sumMetric(t, cf.reg, "bluegreen_client_errors_total", "kind")
	_, c.requests = sumMetric(t, cf.reg, "bluegreen_requests_total", "code")
	return c
}

func diffMap(after, before map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v-before[k] != 0 {
			d[k] = v - before[k]
		}
	}
	return d
}

// seen lists the requests the blue instances read after the first from[i]
// of instance i, as method, target and body, and the counts now.
func (cf *codecFronts) seen(from [2]int) ([]string, [2]int) {
	var out []string
	var now [2]int
	for i, b := range cf.blue {
		if b == nil {
			continue
		}
		b.mu.Lock()
		for _, r := range b.seen[from[i]:] {
			out = append(out, r.Method+" "+r.RequestURI+" "+string(r.Body))
		}
		now[i] = len(b.seen)
		b.mu.Unlock()
	}
	slices.Sort(out)
	return out, now
}

func (cf *codecFronts) hits() int64 {
	if cf.blue[0] == nil {
		return 0
	}
	return cf.blue[0].hits.Load() + cf.blue[1].hits.Load()
}

// faultCase is one client behaviour: what it sends, then whether it
// half-closes (leaves) or stalls, and what it must get.
type faultCase struct {
	name   string
	send   string
	then   string // "": wait for the answer; "close": half-close; "stall": keep the connection open
	status int    // 0: the connection is closed without an answer
	kind   string // the client error kind counted; "": none
}

var clientFaultCases = []faultCase{
	{name: "bad chunk size", send: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n", status: 400, kind: ClientMalformed},
	{name: "17-digit chunk size", send: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n", status: 400, kind: ClientMalformed},
	{name: "bare-LF chunk line", send: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", status: 400, kind: ClientMalformed},
	{name: "chunk data overrun", send: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", status: 400, kind: ClientMalformed},
	{name: "short body, then leaves", send: "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabcd", then: "close", kind: ClientGone},
	{name: "short body, then stalls", send: "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabcd", then: "stall", status: 408, kind: ClientTimeout},
	{name: "leaves mid chunked body", send: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", then: "close", kind: ClientGone},
}

const smuggle = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

// framingCases are part 3: faulty framing is refused with 400 and the
// connection closed, on every path (including a connection already handed
// to net/http); nothing of it reaches an instance. Before, net/http
// re-framed TE+CL and the instance got two requests (POST, then GET
// /smuggled); an obs-folded or bare-LF variant bypassed the fast codec's
// 400; an HTTP/1.0 chunked body was read as a new request; a Host with
// userinfo was forwarded by the fast codec.
var framingCases = []faultCase{
	{name: "TE and CL", send: "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggle, status: 400, kind: ClientMalformed},
	{name: "TE and CL, obs-fold", send: "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + smuggle, status: 400, kind: ClientMalformed},
	{name: "TE and CL, bare LF before", send: "POST /c HTTP/1.1\r\nHost: a\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggle, status: 400, kind: ClientMalformed},
	{name: "TE and CL after an HTTP/1.0 keep-alive request", send: "GET /one HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n" +
		"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggle, status: 400, kind: ClientMalformed},
	{name: "HTTP/1.0 with TE", send: "POST /c HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggle, status: 400, kind: ClientMalformed},
	{name: "Host with userinfo", send: "GET /c HTTP/1.1\r\nHost: user:pw@evil.example\r\n\r\n", status: 400, kind: ClientMalformed},
	{name: "HTTP/2 preface", send: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 400, kind: ClientMalformed},
	// Refused by net/http itself (after a hand-off on the fast codec):
	// counted all the same.
	{name: "conflicting Content-Length", send: "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", status: 400, kind: ClientMalformed},
	{name: "invalid field name", send: "GET /c HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", status: 400, kind: ClientMalformed},
	{name: "unknown transfer coding", send: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nab", status: 501, kind: ClientMalformed},
	{name: "leading CRLF", send: "\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", status: 200},
}

// runFaultCase runs c on the front at addr and returns the last status
// (0: closed without an answer) and how long the client waited for it.
func runFaultCase(t *testing.T, addr string, c faultCase) (int, time.Duration) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(nc, c.send); err != nil {
		t.Fatal(err)
	}
	if c.then == "close" {
		_ = nc.(*net.TCPConn).CloseWrite()
	}
	br := bufio.NewReader(nc)
	status := 0
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		status = res.StatusCode
		if res.Close {
			break
		}
	}
	return status, time.Since(start)
}

// TestClientFaultsBothCodecs: every client fault of issue 11 part 2 and
// every framing case of part 3 gets the right status on both codecs, is
// counted in bluegreen_client_errors_total, never in
// bluegreen_upstream_errors_total, never ejects an instance (with outlier
// detection ejecting after two failures, each case runs three times), is
// never retried, and the instances see the same requests on both codecs.
// Before the shared pipeline a bad chunk answered 502 and ejected an
// instance within 5 to 9 requests; a short body got 502 on net/http.
func TestClientFaultsBothCodecs(t *testing.T) {
	cf := newCodecFronts(t, okHandler("blue"))
	reps := 3 // outlier detection ejects after 2 failures
	if testing.Short() {
		reps = 1
	}
	for _, c := range append(clientFaultCases, framingCases...) {
		t.Run(c.name, func(t *testing.T) {
			type result struct {
				status int
				hits   int64
				diff   counters
				seen   []string
			}
			var got [2]result
			for i, addr := range []string{cf.fast, cf.std} {
				before, hits := cf.counters(t), cf.hits()
				_, seen := cf.seen([2]int{})
				for range reps {
					status, _ := runFaultCase(t, addr, c)
					if status != c.status {
						t.Errorf("codec %d: status %d, want %d", i, status, c.status)
					}
					got[i].status = status
				}
				// The counts land as the request finishes, which may be just
				// after the client saw the answer.
				var after counters
				want := map[string]float64{}
				if c.kind != "" {
					want[c.kind] = float64(reps)
				}
				deadline := time.Now().Add(3 * time.Second)
				for {
					after = cf.counters(t)
					if equalCounts(diffMap(after.client, before.client), want) || time.Now().After(deadline) {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				got[i].hits = cf.hits() - hits
				got[i].seen, _ = cf.seen(seen)
				got[i].diff = counters{
					upstreamErrors: after.upstreamErrors - before.upstreamErrors,
					ejections:      after.ejections - before.ejections,
					retries:        after.retries - before.retries,
					client:         diffMap(after.client, before.client),
					requests:       diffMap(after.requests, before.requests),
				}
				d := got[i].diff
				if d.upstreamErrors != 0 || d.ejections != 0 || d.retries != 0 {
					t.Errorf("codec %d: %v upstream errors, %v ejections, %v retries; want none", i, d.upstreamErrors, d.ejections, d.retries)
				}
				if !equalCounts(d.client, want) {
					t.Errorf("codec %d: client errors %v, want %v", i, d.client, want)
				}
			}
			if !slices.Equal(got[0].seen, got[1].seen) {
				t.Errorf("the instances read different requests: fast %q, net/http %q", got[0].seen, got[1].seen)
			}
			if got[0].hits != got[1].hits || !equalCounts(got[0].diff.requests, got[1].diff.requests) {
				t.Errorf("the codecs differ: fast %d requests at the instances, counted %v; net/http %d, counted %v",
					got[0].hits, got[0].diff.requests, got[1].hits, got[1].diff.requests)
			}
			t.Logf("status %d on both; instances got %d complete requests; requests_total %v; client errors %v; 0 upstream errors, 0 ejections",
				got[0].status, got[0].hits, got[0].diff.requests, got[0].diff.client)
		})
	}
	for _, b := range cf.blue {
		if n := b.parseErrors.Load(); n != 0 {
			t.Errorf("an instance could not parse %d requests: %v", n, b.lastParseError.Load())
		}
		for _, r := range b.seen {
			if strings.Contains(r.RequestURI, "smuggled") {
				t.Errorf("an instance got a smuggled request: %s %s", r.Method, r.RequestURI)
			}
		}
	}
}

func equalCounts(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestEarlyAnswerBothCodecs: an instance that answers 413 as soon as it has
// the head, without reading an 8 MiB body (RFC 9112 9.5), gets its answer
// to the client on both codecs, quickly, and is not charged with the
// broken upload. Before, the fast codec answered 502 (or hung until the
// instance closed) and ejected the instances in turn.
func TestEarlyAnswerBothCodecs(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 8 MiB several times")
	}
	cf := newCodecFronts(t, nil, earlyInstance(t), earlyInstance(t))
	fronts := []string{cf.fast, cf.std}
	body := strings.Repeat("x", 8<<20)
	for i, addr := range fronts {
		before := cf.counters(t)
		var worst time.Duration
		for range 4 {
			status, took := runEarly(t, addr, body)
			if status != 413 {
				t.Fatalf("codec %d: status %d, want 413", i, status)
			}
			worst = max(worst, took)
			t.Logf("codec %d: 413 after %v", i, took)
		}
		after := cf.counters(t)
		if after.upstreamErrors != before.upstreamErrors || after.ejections != before.ejections {
			t.Errorf("codec %d: %v upstream errors, %v ejections after early answers", i,
				after.upstreamErrors-before.upstreamErrors, after.ejections-before.ejections)
		}
		if worst > 2*time.Second {
			t.Errorf("codec %d: the early 413 took %v", i, worst)
		}
		t.Logf("codec %d (0 fast, 1 net/http): 413 reached the client in at most %v; 0 upstream errors, 0 ejections", i, worst)
	}
}

// earlyInstance answers 413 as soon as it has a request's head, without
// reading the body, then stops reading and closes a second later, as
// net/http does with a large unread body.
func earlyInstance(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
		time.Sleep(time.Second)
	})
	return "http://" + ln.Addr().String()
}

// runEarly sends a head and a large body on one goroutine and reads the
// answer on another; it returns the status and the time to the status
// line.
func runEarly(t *testing.T, addr, body string) (int, time.Duration) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		_, _ = io.WriteString(nc, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8388608\r\n\r\n"+body)
	})
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	res.Body.Close()
	nc.Close() // ends the writer
	return res.StatusCode, took
}

// TestClientsGiveUpBothCodecs: 100 clients that give up on an instance that
// never answers cancel their waits at once, on both codecs: within 2 s the
// in-flight gauge, the instance's open connections and the process's
// descriptors are back where they were, and nothing is counted against the
// instance. Before, on the fast codec each kept an instance connection and
// an in-flight request for 60 s and counted as a 504.
func TestClientsGiveUpBothCodecs(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	var holding atomic.Int64 // requests the instances hold unanswered
	hang := func(c net.Conn, br *bufio.Reader, r *http.Request, body []byte) bool {
		holding.Add(1)
		defer holding.Add(-1)
		_, _ = br.ReadByte() // never answers; returns when the proxy closes the connection
		return false
	}
	cf := newCodecFronts(t, hang)
	for i, addr := range []string{cf.fast, cf.std} {
		before := cf.counters(t)
		fds := openFDs()
		var conns []net.Conn
		for range 100 {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(nc, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
		}
		deadline := time.Now().Add(5 * time.Second)
		for metricValue(t, cf.reg, "bluegreen_inflight_requests", map[string]string{"color": "blue"}) != 100 {
			if time.Now().After(deadline) {
				t.Fatalf("codec %d: 100 requests never in flight", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		gaveUp := time.Now()
		for _, nc := range conns {
			nc.Close()
		}
		var inflight float64
		var open int
		for {
			inflight = metricValue(t, cf.reg, "bluegreen_inflight_requests", map[string]string{"color": "blue"})
			open = int(holding.Load())
			if inflight == 0 && open == 0 || time.Since(gaveUp) > 2*time.Second {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(gaveUp)
		if inflight != 0 || open != 0 {
			t.Fatalf("codec %d: 2 s after 100 clients gave up: %v in flight, %d requests still held by the instances", i, inflight, open)
		}
		after := cf.counters(t)
		d := diffMap(after.client, before.client)
		if after.upstreamErrors != before.upstreamErrors || d[ClientGone] != 100 {
			t.Errorf("codec %d: %v upstream errors, client errors %v; want 0 and gone=100", i, after.upstreamErrors-before.upstreamErrors, d)
		}
		t.Logf("codec %d (0 fast, 1 net/http): in flight 0 and every instance connection of theirs closed %v after 100 clients gave up; descriptors %d before, %d after (kept-alive instance connections included); client errors %v",
			i, took.Round(time.Millisecond), fds, openFDs(), d)
	}
}

// openFDs counts the process's open descriptors (-1 where /proc is not).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}
