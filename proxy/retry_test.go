package proxy

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// kill stops a backend hard: the listener refuses new connections and the
// open ones are cut, whatever they were doing.
func kill(b *backend) {
	b.Listener.Close()
	b.CloseClientConnections()
}

// TestRetryOnKilledInstance: two instances per colour, one killed hard while
// 64 clients send idempotent requests. Every request succeeds; a POST that
// goes to the dead instance gets 502 and is not sent again.
func TestRetryOnKilledInstance(t *testing.T) {
	blue0, blue1 := newBackend(t, "blue", 0), newBackend(t, "blue", 1)
	green0, green1 := newBackend(t, "green", 0), newBackend(t, "green", 1)
	f := newFixture(t, []string{blue0.URL, blue1.URL}, []string{green0.URL, green1.URL}, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()

	const clients, perClient, killAt = 64, 20, 64 * 5
	methods := []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete}
	var sent, failed atomic.Int64
	var killOnce sync.Once
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				if sent.Add(1) == killAt {
					killOnce.Do(func() { kill(blue1) })
				}
				req, _ := http.NewRequest(methods[(c+i)%len(methods)], f.front.URL+"/x", nil)
				res, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, res.Status)
				}
			}
		})
	}
	wg.Wait()
	retries := testutil.ToFloat64(f.rt.pools[0].metrics.retries)
	t.Logf("%d requests by %d clients, instance killed after %d: %d failed, %d retried, blue-0 served %d, blue-1 served %d",
		sent.Load(), clients, killAt, failed.Load(), int(retries), blue0.hits.Load(), blue1.hits.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	if retries == 0 {
		t.Fatal("no request was retried: the kill did not hit the load")
	}

	// A POST with a body whose connection was refused sent nothing: it goes
	// to the live instance (one retry policy for both codecs, see
	// retryPolicy; net/http answered 502 here before), and reaches it once.
	codes := map[int]int{}
	before := blue0.hits.Load()
	for range 2 {
		res, err := client.Post(f.front.URL+"/order", "text/plain", strings.NewReader("one order"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		codes[res.StatusCode]++
	}
	if codes[http.StatusOK] != 2 || blue0.hits.Load()-before != 2 {
		t.Fatalf("two POSTs: codes %v, live instance got %d; want two 200, each sent once", codes, blue0.hits.Load()-before)
	}
	t.Logf("POST to the dead instance: %v", codes)
}

// resettingBackend answers the first request of each connection and resets
// the connection when a second request arrives on it, without answering: the
// keep-alive race made deterministic.
func resettingBackend(t *testing.T) (addr string, served *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served = new(atomic.Int64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				served.Add(1)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if _, err := br.Peek(1); err != nil {
					return
				}
				c.(*net.TCPConn).SetLinger(0) // RST, no answer
			})
		}
	})
	return "http://" + ln.Addr().String(), served
}

// TestRetryResetOnReusedConnection: PUT and DELETE without a body, which
// net/http itself never replays, are sent again when a kept-alive connection
// is reset before the answer.
func TestRetryResetOnReusedConnection(t *testing.T) {
	be, served := resettingBackend(t)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be}, []string{green.URL}, nil)
	client := f.front.Client()
	const n = 20
	for i := range n {
		m := http.MethodPut
		if i%2 == 1 {
			m = http.MethodDelete
		}
		req, _ := http.NewRequest(m, f.front.URL+"/thing", nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d (%s): %s", i, m, res.Status)
		}
	}
	retries := testutil.ToFloat64(f.rt.pools[0].metrics.retries)
	t.Logf("%d PUT/DELETE requests, %d resets retried, %d answered by the instance, 0 failed", n, int(retries), served.Load())
	if retries == 0 {
		t.Fatal("no reset happened: the test did not exercise the retry")
	}
}

// TestKeepAliveRaceWithIdleTimeout: an instance that closes idle connections
// after 1s, clients that pause about 1s between requests. With the upstream
// idle timeout below the instance's and the retry, nothing fails.
func TestKeepAliveRaceWithIdleTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for seconds")
	}
	var hits atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "blue")
	}))
	be.Config.IdleTimeout = time.Second
	be.Start()
	t.Cleanup(be.Close)
	green := newBackend(t, "green", 0)
	f := newFixture(t, []string{be.URL}, []string{green.URL}, func(c *Config) {
		c.Transport = NewTransport(TransportConfig{IdleConnTimeout: 900 * time.Millisecond})
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	const workers, rounds = 16, 3
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				// The pause is the fault under test: it straddles the
				// instance's idle timeout.
				time.Sleep(900*time.Millisecond + time.Duration(r.IntN(200))*time.Millisecond)
				for _, m := range []string{http.MethodGet, http.MethodPut} {
					req, _ := http.NewRequest(m, f.front.URL, nil)
					sent.Add(1)
					res, err := client.Do(req)
					if err != nil {
						failed.Add(1)
						continue
					}
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						failed.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests after ~1s pauses against a 1s idle timeout: %d failed, %d retried", sent.Load(), failed.Load(),
		int(testutil.ToFloat64(f.rt.pools[0].metrics.retries)))
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), sent.Load())
	}
}

func TestRetarget(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	cases := []struct{ out, from, to, want string }{
		{"http://a:1/x?q=1", "http://a:1", "http://b:2", "http://b:2/x?q=1"},
		{"http://a:1/base/x", "http://a:1/base", "http://b:2/other", "http://b:2/other/x"},
		{"http://a:1/base/", "http://a:1/base/", "http://b:2", "http://b:2/"},
		{"http://a:1/base/a%2Fb", "http://a:1/base", "http://b:2/o", "http://b:2/o/a%2Fb"},
	}
	for _, c := range cases {
		if got := retarget(u(c.out), u(c.from), u(c.to)).String(); got != c.want {
			t.Errorf("retarget(%s, %s, %s) = %s, want %s", c.out, c.from, c.to, got, c.want)
		}
	}
}

// TestRetryableOnlyWhenSafe: the one retry policy of both codecs. A
// refused connection sent nothing: any request whose body was not read yet
// may go again. A reset: only idempotent requests without a body.
func TestRetryableOnlyWhenSafe(t *testing.T) {
	cases := []struct {
		method            string
		hasBody, bodySent bool
		kind              string
		want              bool
	}{
		{http.MethodGet, false, false, KindDial, true},
		{http.MethodGet, false, false, KindReset, true},
		{http.MethodGet, false, false, KindTimeout, false},
		{http.MethodDelete, false, false, KindReset, true},
		{http.MethodPut, true, false, KindDial, true},
		{http.MethodPut, true, true, KindDial, false},
		{http.MethodPut, true, false, KindReset, false},
		{http.MethodPost, false, false, KindDial, true},
		{http.MethodPost, false, false, KindReset, false},
		{http.MethodPatch, false, false, KindReset, false},
		{http.MethodGet, false, false, KindOther, false},
	}
	for _, c := range cases {
		if got := retryPolicy(c.method, c.hasBody, c.bodySent, c.kind); got != c.want {
			t.Errorf("%s body=%v sent=%v %s: %v, want %v", c.method, c.hasBody, c.bodySent, c.kind, got, c.want)
		}
	}
}

type fixedTransport struct{ res *http.Response }

func (f fixedTransport) RoundTrip(*http.Request) (*http.Response, error) { return f.res, nil }

// TestRetryWrapperNoAllocs: the per-instance transport costs no allocation
// when the first attempt succeeds, with outlier detection on.
func TestRetryWrapperNoAllocs(t *testing.T) {
	blue, green := newBackend(t, "blue", 0), newBackend(t, "green", 0)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(c *Config) { c.Outlier = OutlierConfig{Consecutive: 5} })
	b := f.rt.pools[0].backends[0]
	b.direct, b.own = nil, nil // the wrapper around a base transport (the direct leg: TestDirect*)
	tr := &backendTransport{b: b, base: fixedTransport{res: &http.Response{StatusCode: 200}}}
	req := httptest.NewRequest(http.MethodGet, blue.URL, nil)
	if n := testing.AllocsPerRun(1000, func() { _, _ = tr.RoundTrip(req) }); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}
