package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// failing is an instance whose answers turn 500 while bad is set.
func failing(t *testing.T, bad *atomic.Bool, hits *atomic.Int64) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if bad.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

func TestOutlierEjectionGrowsAndExpires(t *testing.T) {
	var bad atomic.Bool
	var badHits, goodHits atomic.Int64
	bad.Store(true)
	b0 := failing(t, &bad, &badHits)
	var never atomic.Bool
	b1 := failing(t, &never, &goodHits)
	green := newBackend(t, "green", 0)
	clock := newFakeClock()
	f := newFixture(t, []string{b0.URL, b1.URL}, []string{green.URL}, func(c *Config) {
		c.Outlier = OutlierConfig{Consecutive: 3, Eject: 10 * time.Second, MaxEject: 30 * time.Second}
		c.Now = clock.Now
	})
	be := f.rt.pools[0].backends[0]
	c := f.front.Client()
	// sendUntilEjected sends requests until the bad instance is out and
	// returns how many 500s it answered.
	sendUntilEjected := func() int64 {
		t.Helper()
		start := badHits.Load()
		for i := 0; i < 20; i++ {
			if ej, _ := be.Ejected(); ej {
				return badHits.Load() - start
			}
			get(t, c, f.front.URL, nil)
		}
		t.Fatal("bad instance never ejected")
		return 0
	}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second} {
		if n := sendUntilEjected(); n != 3 {
			t.Fatalf("ejection %d after %d failures, want 3", i+1, n)
		}
		_, until := be.Ejected()
		if got := until.Sub(clock.Now()); got != want {
			t.Fatalf("ejection %d: cool-down %v, want %v", i+1, got, want)
		}
		before := badHits.Load()
		for range 10 {
			if code, _, _ := get(t, c, f.front.URL, nil); code != 200 {
				t.Fatalf("ejected instance still answered: %d", code)
			}
		}
		if badHits.Load() != before {
			t.Fatal("an ejected instance got traffic")
		}
		clock.Advance(want)
	}
	if got := testutil.ToFloat64(be.out.counter); got != 4 {
		t.Fatalf("bluegreen_outlier_ejections_total = %v, want 4", got)
	}
	// Back in after the cool-down; healthy answers reset the count, and
	// staying in longer than MaxEject starts the cool-downs over.
	bad.Store(false)
	for range 4 {
		get(t, c, f.front.URL, nil)
	}
	if ej, _ := be.Ejected(); ej || badHits.Load() == 0 {
		t.Fatal("instance not back after its cool-down")
	}
	clock.Advance(31 * time.Second)
	bad.Store(true)
	sendUntilEjected()
	if _, until := be.Ejected(); until.Sub(clock.Now()) != 10*time.Second {
		t.Fatalf("cool-down did not start over: %v", until.Sub(clock.Now()))
	}
}

func TestOutlierNeverEjectsLastInstance(t *testing.T) {
	var bad0, bad1 atomic.Bool
	bad0.Store(true)
	bad1.Store(true)
	var h0, h1 atomic.Int64
	b0, b1 := failing(t, &bad0, &h0), failing(t, &bad1, &h1)
	green := newBackend(t, "green", 0)
	clock := newFakeClock()
	f := newFixture(t, []string{b0.URL, b1.URL}, []string{green.URL}, func(c *Config) {
		c.Outlier = OutlierConfig{Consecutive: 2, Eject: time.Minute}
		c.Now = clock.Now
	})
	maxEjected := 0
	for range 20 {
		if code, _, _ := get(t, f.front.Client(), f.front.URL, nil); code != 500 {
			t.Fatalf("status %d: with every instance failing the answers pass through, never 503", code)
		}
		ejected := 0
		for _, b := range f.rt.pools[0].backends {
			if ej, _ := b.Ejected(); ej {
				ejected++
			}
		}
		maxEjected = max(maxEjected, ejected)
		if ejected > 1 {
			t.Fatalf("%d instances ejected: the last one must stay", ejected)
		}
	}
	if maxEjected != 1 {
		t.Fatalf("no instance was ever ejected")
	}
}

// TestOutlierEjectedInstancesServeWhenNothingElseCan: an instance ejected
// earlier but healthy by its probes takes the traffic (and the retries)
// when the only instance in rotation dies, instead of a 502 or a 503 for the
// rest of the cool-down.
func TestOutlierEjectedInstancesServeWhenNothingElseCan(t *testing.T) {
	var bad0 atomic.Bool
	bad0.Store(true)
	var h0 atomic.Int64
	b0 := failing(t, &bad0, &h0)
	b1 := newBackend(t, "blue", 1)
	green := newBackend(t, "green", 0)
	clock := newFakeClock()
	f := newFixture(t, []string{b0.URL, b1.URL}, []string{green.URL}, func(c *Config) {
		c.Outlier = OutlierConfig{Consecutive: 2, Eject: time.Hour}
		c.Now = clock.Now
	})
	pool := f.rt.pools[0]
	for i := 0; ; i++ {
		if ej, _ := pool.backends[0].Ejected(); ej {
			break
		}
		if i == 20 {
			t.Fatal("the failing instance was never ejected")
		}
		get(t, f.front.Client(), f.front.URL, nil)
	}
	bad0.Store(false) // it recovers, its probes pass, but the cool-down runs on
	b1.Close()        // and now the only instance in rotation dies
	failed := 0
	for range 20 {
		if code, _, _ := get(t, f.front.Client(), f.front.URL, nil); code != 200 {
			failed++
		}
	}
	if failed != 0 {
		t.Fatalf("%d of 20 requests failed with the dead instance still marked up: the retry must use the ejected one", failed)
	}
	pool.SetStatus(pool.backends[1].name, false) // the probes notice the death
	for range 10 {
		if code, _, _ := get(t, f.front.Client(), f.front.URL, nil); code != 200 {
			t.Fatalf("status %d with one healthy (ejected) instance left: want it to serve, not 503", code)
		}
	}
}

func TestOutlierDisabledAndDialFailures(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	for _, consecutive := range []int{0, 5} {
		live := newBackend(t, "blue", 1)
		green := newBackend(t, "green", 0)
		clock := newFakeClock()
		f := newFixture(t, []string{deadURL, live.URL}, []string{green.URL}, func(c *Config) {
			c.Outlier = OutlierConfig{Consecutive: consecutive}
			c.Now = clock.Now
		})
		for range 20 {
			if code, _, _ := get(t, f.front.Client(), f.front.URL, nil); code != 200 {
				t.Fatalf("consecutive=%d: status %d; a refused connection is retried", consecutive, code)
			}
		}
		ej, until := f.rt.pools[0].backends[0].Ejected()
		if want := consecutive > 0; ej != want {
			t.Fatalf("consecutive=%d: ejected=%v, want %v", consecutive, ej, want)
		}
		if ej && until.Sub(clock.Now()) != 30*time.Second {
			t.Fatalf("default cool-down %v, want 30s", until.Sub(clock.Now()))
		}
		t.Logf("consecutive=%d: 20 requests, 0 failed, %d retried, dead instance ejected=%v",
			consecutive, int(testutil.ToFloat64(f.rt.pools[0].metrics.retries)), ej)
	}
}

// An instance that breaks every answer off after its head (here: half of
// the announced length, then a close) is ejected after Consecutive of
// them, on every codec, as one answering 500 is: the success counted at
// each head reset its failures, and it was never ejected.
func TestOutlierEjectsInstanceBreakingBodies(t *testing.T) {
	var brokenHits atomic.Int64
	broken := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		brokenHits.Add(1)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
		return false
	})
	good := newRawInstance(t, okHandler("blue"))
	for i := range everyCodec(t, newFixture(t, []string{good.URL}, []string{good.URL}, nil)) {
		f := newFixture(t, []string{broken.URL, good.URL}, []string{good.URL}, func(c *Config) {
			c.Outlier = OutlierConfig{Consecutive: 3, Eject: time.Minute, MaxEject: time.Minute}
		})
		c := everyCodec(t, f)[i]
		be := f.rt.pools[0].backends[0]
		start := brokenHits.Load()
		for n := 0; ; n++ {
			if ej, _ := be.Ejected(); ej {
				break
			}
			if n == 20 {
				t.Fatalf("%s: the instance breaking its answers was never ejected (%d of them)", c.name, brokenHits.Load()-start)
			}
			var body io.Reader
			if c.method == "POST" {
				body = strings.NewReader("order")
			}
			req, _ := http.NewRequest(c.method, c.url+"/", body)
			if res, err := c.client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
		if got := brokenHits.Load() - start; got != 3 {
			t.Errorf("%s: ejected after %d broken answers, want 3", c.name, got)
		}
	}
}

// A request retried on another instance (its first refused the
// connection) whose answer that instance then breaks off charges the
// instance that answered: on the net/http codec the body was charged to
// the instance the request was routed to first.
func TestBrokenBodyAfterRetryChargesTheInstanceThatAnswered(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	broken := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
		return false
	})
	f := newFixture(t, []string{deadURL, broken.URL}, []string{broken.URL}, nil)
	for range 6 {
		if res, err := f.front.Client().Get(f.front.URL + "/"); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
	count := func(b *Backend) (dial, other float64) {
		for i, k := range kinds {
			if v := testutil.ToFloat64(b.errs[i]); k == KindDial {
				dial += v
			} else {
				other += v
			}
		}
		return dial, other
	}
	deadB, brokenB := f.rt.pools[0].backends[0], f.rt.pools[0].backends[1]
	dDial, dOther := count(deadB)
	_, bOther := count(brokenB)
	if dDial == 0 || dOther != 0 || bOther != 6 {
		t.Errorf("the refusing instance: %v dial errors, %v others; the one breaking its answers: %v; want some, none and 6", dDial, dOther, bOther)
	}
}
