package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// postStatus sends a POST with a body to the net/http codec at url and
// returns its status.
func postStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Post(url+"/", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// Requests with a body on the net/http codec go through the instance's
// own Transport, whose pool keeps to what was learned of the instance's
// keep-alive timeout, as the fast codec's and the direct leg's do: from
// the Keep-Alive field of an answer to such a request.
func TestInstanceTransportKeepsToAnnouncedTimeout(t *testing.T) {
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	if code := postStatus(t, f.front.URL); code != 200 {
		t.Fatalf("first POST: %d", code)
	}
	if got := f.rt.pools[0].backends[0].conns.Limit().Limit(time.Minute); got != 900*time.Millisecond {
		t.Fatalf("limit after Keep-Alive: timeout=1: %v, want 900ms", got)
	}
	postStatus(t, f.front.URL) // on the Transport for the new limit: a new connection
	before := inst.accepted.Load()
	if code := postStatus(t, f.front.URL); code != 200 || inst.accepted.Load() != before {
		t.Fatalf("POST at once: %d, %d new connections, want 200 on the pooled one", code, inst.accepted.Load()-before)
	}
	time.Sleep(1100 * time.Millisecond) // idle beyond 0.9 s
	if code := postStatus(t, f.front.URL); code != 200 || inst.accepted.Load() != before+1 {
		t.Fatalf("POST after 1.1 s idle: %d, %d new connections, want 200 on a new one", code, inst.accepted.Load()-before)
	}
}

// An instance that closes a connection idle for 1.2 s just as a POST is
// written to it (the keep-alive race, played deterministically) fails
// that POST (its body is sent and cannot go again), and teaches the
// limit: the next POST after as long an idle time goes on a new
// connection and succeeds.
func TestInstanceTransportLearnsFromClose(t *testing.T) {
	var mu sync.Mutex
	answered := map[net.Conn]time.Time{}
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		mu.Lock()
		last, ok := answered[c]
		mu.Unlock()
		if ok && time.Since(last) >= time.Second {
			return false // closed as if its idle timeout had fired first
		}
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		mu.Lock()
		answered[c] = time.Now()
		mu.Unlock()
		return err == nil
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	limit := f.rt.pools[0].backends[0].conns.Limit()
	if code := postStatus(t, f.front.URL); code != 200 {
		t.Fatalf("first POST: %d", code)
	}
	time.Sleep(1200 * time.Millisecond)
	if code := postStatus(t, f.front.URL); code != http.StatusBadGateway {
		t.Fatalf("POST into the closing connection: %d, want 502", code)
	}
	if got := limit.Limit(time.Minute); got < 900*time.Millisecond || got >= time.Second {
		t.Fatalf("limit after a close at 1.2 s idle: %v, want three quarters of it", got)
	}
	if code := postStatus(t, f.front.URL); code != 200 {
		t.Fatalf("POST after the close: %d", code)
	}
	time.Sleep(1200 * time.Millisecond)
	before := inst.accepted.Load()
	if code := postStatus(t, f.front.URL); code != 200 || inst.accepted.Load() != before+1 {
		t.Fatalf("POST after 1.2 s idle: %d, %d new connections, want 200 on a new one", code, inst.accepted.Load()-before)
	}
}

// An answer with a status code below 100 to a request with a body (on
// the instance's Transport) is the instance's malformed answer: 502, as
// on the direct leg and the fast codec (TestFastDifferential). Go's
// client takes it for a final answer, and net/http's server panicked on
// writing it.
func TestInstanceTransportStatusBelow100(t *testing.T) {
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		_, err := io.WriteString(c, "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
	if code := postStatus(t, f.front.URL); code != http.StatusBadGateway {
		t.Fatalf("POST answered 099: %d, want 502", code)
	}
}

// An instance whose answers announce different keep-alive timeouts (two
// processes behind one address, say) does not cost a new Transport and a
// new connection on every request: a shorter limit is taken at once, a
// longer one at most once per relaxEvery.
func TestInstanceTransportDisagreeingTimeouts(t *testing.T) {
	var n atomic.Int64
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		timeout := 1 + n.Add(1)%2 // 1, 2, 1, 2, …
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=%d\r\nContent-Length: 2\r\n\r\nok", timeout)
		return err == nil
	})
	clock := newFakeClock()
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) { c.Now = clock.Now })
	for range 20 {
		if code := postStatus(t, f.front.URL); code != 200 {
			t.Fatalf("POST: %d", code)
		}
	}
	if got := inst.accepted.Load(); got > 3 {
		t.Fatalf("%d instance connections for 20 POSTs whose answers alternate timeout=1 and 2, want at most 3", got)
	}
	b := f.rt.pools[0].backends[0]
	clock.Advance(relaxEvery)
	postStatus(t, f.front.URL) // the longer limit may now be taken
	if idle := b.own.cur.Load().idle; idle != 900*time.Millisecond && idle != 1800*time.Millisecond {
		t.Fatalf("idle timeout %v, want one of the announced limits", idle)
	}
}
