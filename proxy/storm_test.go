package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/stats"
)

// The storms: every fault of one side at once, on every codec, beside
// requests that must not notice, for a few seconds. Each fault has its own
// test; these prove the blame holds when they meet on shared pools,
// buffers and instance connections: whose fault a failure is decides
// what is counted, retried and ejected.

// stormFor runs each of loops in its own goroutine, again and again, for d.
func stormFor(d time.Duration, loops ...func()) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, loop := range loops {
		wg.Go(func() {
			for !stop.Load() {
				loop()
			}
		})
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
}

// stormFront is one way into a Router, with a client of its own.
type stormFront struct {
	name, url, addr string
	c               *http.Client
}

// stormFronts serves rt on the fast codec, on net/http only and over
// HTTP/2; the fast codec and HTTP/2 give a client 300 ms for its headers
// (net/http only: 5 s, startNetHTTPOnly).
func stormFronts(t *testing.T, rt *Router) []stormFront {
	short := func(s *Server) { s.ReadHeaderTimeout = 300 * time.Millisecond }
	fast := startFast(t, rt, short)
	std := startNetHTTPOnly(t, rt)
	h2 := startH2(t, rt, short)
	return []stormFront{
		{"fast", fast.url, fast.addr, ownClient(t)},
		{"net/http", "http://" + std, std, ownClient(t)},
		{"HTTP/2", h2.url, h2.addr, h2Client(t)},
	}
}

// ownClient is an HTTP/1.1 client with connections of its own, closed
// when the test ends.
func ownClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// rudeClient is a client fault on a raw HTTP/1.1 connection: it sends
// send, then ends as then says.
type rudeClient struct {
	name, send string
	then       string // "close", "reset", "wait" (reads until the proxy ends it), "read-stall", "read-reset", "one-answer"
}

func (rc rudeClient) run(t *testing.T, addr string) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("%s: %v", rc.name, err)
		return
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	if strings.HasPrefix(rc.then, "read-") {
		_ = c.SetReadBuffer(4096) // the answer must not fit in the kernel's buffers
	}
	if _, err := io.WriteString(c, rc.send); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	switch rc.then {
	case "close":
	case "reset":
		time.Sleep(20 * time.Millisecond)
		_ = c.SetLinger(0)
	case "wait":
		_, _ = io.Copy(io.Discard, c)
	case "read-stall", "read-reset":
		_, _ = c.Read(make([]byte, 1000))
		if rc.then == "read-reset" {
			_ = c.SetLinger(0)
			return
		}
		time.Sleep(1200 * time.Millisecond) // past the client send timeout
	case "one-answer":
		if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			res.Body.Close()
		}
	}
}

// Clients that vanish, reset, stall, send malformed framing or stop
// reading, on the fast codec, on net/http and over HTTP/2, all at once:
// the requests beside them are all answered, and no instance is charged,
// ejected or counted against its colour.
func TestClientStormChargesNoInstance(t *testing.T) {
	big := strings.Repeat("b", 4<<20)
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(100 * time.Millisecond)
			fallthrough
		case "/small":
			_, _ = io.WriteString(w, strings.Repeat("s", 100))
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = io.WriteString(w, big)
		case "/echo":
			if n, err := io.Copy(io.Discard, r.Body); err == nil {
				fmt.Fprint(w, n)
			}
		}
	}))
	t.Cleanup(inst.Close)
	rec := stats.New([]string{"blue", "green"}, nil)
	f := newFixture(t, []string{inst.URL}, []string{inst.URL + "/"}, func(c *Config) {
		c.Outlier = OutlierConfig{Consecutive: 2, Eject: time.Minute}
		c.ClientBodyTimeout = 300 * time.Millisecond
		c.ClientSendTimeout = 300 * time.Millisecond
		c.Stats = rec
	})
	fronts := stormFronts(t, f.rt)
	h2 := fronts[2]

	post := func(cl int, part string) string {
		return "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(cl) + "\r\n\r\n" + part
	}
	const chunked = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	rude := []rudeClient{
		{"gone before the answer", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", "close"},
		{"reset before the answer", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", "reset"},
		{"gone mid-body", post(100000, strings.Repeat("p", 1000)), "close"},
		{"reset mid-body", post(100000, strings.Repeat("p", 1000)), "reset"},
		{"body stalls", post(100000, strings.Repeat("p", 1000)), "wait"},
		{"chunked body stalls", chunked + "5\r\nhello\r\n", "wait"},
		{"malformed chunk", chunked + "5\r\nhello\r\nzz\r\n", "wait"},
		{"expects 100, then goes", "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", "close"},
		{"stops reading", "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", "read-stall"},
		{"resets mid-answer", "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", "read-reset"},
		{"half a head", "GET /small HTTP/1.1\r\nHo", "wait"},
		{"pipelined, gone after one", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n" + post(5, "ab"), "one-answer"},
	}
	h2Rude := func(method, path string, body io.Reader, give func(cancel func(), res *http.Response)) func() {
		return func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, method, h2.url+path, body)
			if res, err := h2.c.Do(req); err == nil {
				give(cancel, res)
				res.Body.Close()
			}
		}
	}
	readThen := func(wait time.Duration) func(func(), *http.Response) {
		return func(cancel func(), res *http.Response) {
			_, _ = io.CopyN(io.Discard, res.Body, 10000)
			time.Sleep(wait)
			cancel()
		}
	}
	uploadThen := func(wait time.Duration) func() {
		return func() {
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte(strings.Repeat("u", 1000)))
				time.Sleep(wait)
				pw.CloseWithError(io.ErrUnexpectedEOF)
			}()
			h2Rude("POST", "/echo", pr, func(func(), *http.Response) {})()
		}
	}
	var loops []func()
	for _, rc := range rude {
		for _, front := range fronts[:2] {
			loops = append(loops, func() { rc.run(t, front.addr) })
		}
	}
	loops = append(loops,
		func() { // cancels while waiting for the answer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", h2.url+"/slow", nil)
			if res, err := h2.c.Do(req); err == nil {
				res.Body.Close()
			}
		},
		h2Rude("GET", "/big", nil, readThen(0)),                     // cancels mid-answer
		h2Rude("GET", "/big", nil, readThen(1200*time.Millisecond)), // stops reading
		uploadThen(30*time.Millisecond),                             // ends an upload early
		uploadThen(1000*time.Millisecond),                           // stalls an upload
		func() { // a connection that ends after the preface
			if c, err := tls.Dial("tcp", h2.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}); err == nil {
				_, _ = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
				c.Close()
			}
		},
	)
	var good atomic.Int64
	for _, front := range fronts {
		var i int
		loops = append(loops, func() {
			i++
			var res *http.Response
			var err error
			want := "5"
			if i%2 == 0 {
				res, err = front.c.Get(front.url + "/small")
				want = strings.Repeat("s", 100)
			} else {
				res, err = front.c.Post(front.url+"/echo", "text/plain", strings.NewReader("hello"))
			}
			if err != nil {
				t.Errorf("%s: %v", front.name, err)
				return
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != 200 || string(b) != want {
				t.Errorf("%s: %d %q %v, want 200 %q", front.name, res.StatusCode, b, err, want)
				return
			}
			good.Add(1)
		})
	}
	stormFor(3*time.Second, loops...)

	_, byClient := sumMetric(t, f.reg, "bluegreen_client_errors_total", "kind")
	t.Logf("%d good requests answered; client errors %v", good.Load(), byClient)
	if good.Load() == 0 {
		t.Error("no good request answered")
	}
	for _, kind := range []string{ClientGone, ClientTimeout, ClientMalformed} {
		if byClient[kind] == 0 {
			t.Errorf("no client error of kind %s counted", kind)
		}
	}
	if total, byKind := sumMetric(t, f.reg, "bluegreen_upstream_errors_total", "kind"); total != 0 {
		t.Errorf("instance errors %v, want none", byKind)
	}
	if total, _ := sumMetric(t, f.reg, "bluegreen_outlier_ejections_total", "instance"); total != 0 {
		t.Errorf("%v ejections, want none", total)
	}
	if w := rec.Window("blue", time.Now().Add(-time.Minute)); w.InstanceErrors != 0 || w.ClientErrors == 0 {
		t.Errorf("blue's traffic %+v: want client errors and no instance error", w)
	}
}

// Instances that reset, close, stall, break framing or answer garbage, on
// every codec at once, with well-behaved clients: every codec gives each
// fault the same answer, no client is ever counted at fault, and the
// good answer beside them comes whole.
func TestInstanceStormBlamesNoClient(t *testing.T) {
	answers := map[string]string{
		"/ok":           "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/garbage":      "HTTP/1.1 2oo OK\r\nContent-Length: 2\r\n\r\nok",
		"/short":        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		"/badchunk":     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
		"/bothframings": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"/5xx":          "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno",
		"/extra":        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
		"/100s":         strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 50) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/stallbody":    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		"/shortreset":   "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		"/reset":        "",
		"/close":        "",
		"/stallhead":    "",
	}
	h := func(c net.Conn, _ *bufio.Reader, r *http.Request, _ []byte) bool {
		p := r.URL.Path
		if _, err := io.WriteString(c, answers[p]); err != nil {
			return false
		}
		switch p {
		case "/stallhead", "/stallbody":
			time.Sleep(1500 * time.Millisecond) // well past the upstream timeout and its watch
		case "/shortreset":
			time.Sleep(5 * time.Millisecond)
			fallthrough
		case "/reset":
			_ = c.(*net.TCPConn).SetLinger(0)
		}
		return p == "/ok" || p == "/5xx" || p == "/extra" || p == "/100s"
	}
	a, b := newRawInstance(t, h), newRawInstance(t, h)
	rec := stats.New([]string{"blue", "green"}, nil)
	f := newFixture(t, []string{a.URL, b.URL}, []string{a.URL + "/"}, func(c *Config) {
		c.Upstream.ResponseHeaderTimeout = 300 * time.Millisecond
		c.Stats = rec
	})
	paths := make([]string, 0, len(answers))
	for p := range answers {
		paths = append(paths, p)
	}
	slices.Sort(paths)

	var mu sync.Mutex
	got := map[string]map[string]map[string]int{} // path, client, outcome
	var loops []func()
	for _, front := range stormFronts(t, f.rt) {
		for _, method := range []string{"GET", "POST"} {
			var i int
			loops = append(loops, func() {
				p := paths[i%len(paths)]
				i++
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("hello")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, method, front.url+p, body)
				out := "no answer"
				if res, err := front.c.Do(req); err == nil {
					b, err := io.ReadAll(res.Body)
					res.Body.Close()
					out = fmt.Sprintf("%d %q", res.StatusCode, b)
					if err != nil {
						out += " cut"
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if got[p] == nil {
					got[p] = map[string]map[string]int{}
				}
				who := front.name + " " + method
				if got[p][who] == nil {
					got[p][who] = map[string]int{}
				}
				got[p][who][out]++
			})
		}
	}
	stormFor(3*time.Second, loops...)

	want := map[string]string{
		"/ok": `200 "ok"`, "/extra": `200 "ok"`, "/bothframings": `200 "hello"`, "/5xx": `503 "no"`,
		"/garbage": `502 "Bad Gateway\n"`, "/100s": `502 "Bad Gateway\n"`, "/reset": `502 "Bad Gateway\n"`, "/close": `502 "Bad Gateway\n"`,
		"/stallhead": `504 "Gateway Timeout\n"`,
		"/short":     `200 "hello" cut`, "/shortreset": `200 "hello" cut`, "/stallbody": `200 "hello" cut`, "/badchunk": `200 "hello" cut`,
	}
	for _, p := range paths {
		if len(got[p]) != 6 {
			t.Errorf("%s: asked by %d of 6 clients", p, len(got[p]))
		}
		for who, outs := range got[p] {
			if len(outs) != 1 || outs[want[p]] == 0 {
				t.Errorf("%s, %s: %v, want each %s", p, who, outs, want[p])
			}
		}
	}
	if total, byKind := sumMetric(t, f.reg, "bluegreen_client_errors_total", "kind"); total != 0 {
		t.Errorf("client errors %v, want none", byKind)
	}
	w := rec.Window("blue", time.Now().Add(-time.Minute))
	if w.ClientErrors != 0 || w.InstanceErrors == 0 {
		t.Errorf("blue's traffic %+v: want instance errors and no client error", w)
	}
}
