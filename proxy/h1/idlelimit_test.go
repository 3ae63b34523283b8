package h1

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

func TestIdleLimitLearns(t *testing.T) {
	var l IdleLimit
	if got := l.Limit(30 * time.Second); got != 30*time.Second {
		t.Fatalf("knowing nothing: %v, want the configured 30s", got)
	}
	l.ClosedAfter(300 * time.Millisecond) // under MinLearnedIdle: a restart, not a timeout
	l.ClosedAfter(8 * time.Second)
	l.ClosedAfter(12 * time.Second) // later and longer: the shortest stands
	if got := l.Limit(30 * time.Second); got != 6*time.Second {
		t.Fatalf("after closes at 8s and 12s: %v, want 6s", got)
	}
	for _, tc := range []struct {
		field string
		want  time.Duration
	}{
		{"timeout=5", 4500 * time.Millisecond},
		{"max=100, Timeout=3", 2700 * time.Millisecond},
		{"timeout=zz", 2700 * time.Millisecond}, // ignored: the last good one stands
		{"timeout=0", 2700 * time.Millisecond},
		{"timeout=60, max=1000", 6 * time.Second}, // the close seen at 8s is shorter
	} {
		l.KeepAlive([]byte(tc.field))
		if got := l.Limit(30 * time.Second); got != tc.want {
			t.Errorf("Keep-Alive: %s: limit %v, want %v", tc.field, got, tc.want)
		}
	}
	if got := l.Limit(time.Second); got != time.Second {
		t.Errorf("a configured timeout below what was learned: %v, want it (1s)", got)
	}
	var none *IdleLimit
	none.ClosedAfter(time.Minute) // a connection outside any pool: nothing to learn, no panic
	none.KeepAlive([]byte("timeout=1"))
}

// TestPoolLearnsTheInstanceIdleTimeout: an instance closes connections
// idle for 5 s (as Node.js does). The pool finds one closed when it looks
// at it, and from then on does not use a connection idle for 3.75 s or
// more (it could be written to while the instance's close is on its way);
// one idle for less is used.
func TestPoolLearnsTheInstanceIdleTimeout(t *testing.T) {
	var mu sync.Mutex
	var held []net.Conn
	var accepted atomic.Int64
	ln := testkit.Listen(t, func(c net.Conn) {
		accepted.Add(1)
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	})
	defer func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		mu.Unlock()
	}()
	clock := time.Unix(1_000_000, 0)
	u := NewUpstream(ln.Addr().String(), "", 5*time.Second, 30*time.Second, 4, &Buffers{}, func() time.Time { return clock })
	defer u.CloseIdle(false)
	get := func() *UpConn {
		t.Helper()
		c, err := u.Get(false)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	first := get()
	waitAccepted(t, &accepted, 1)
	u.Put(first)
	clock = clock.Add(5 * time.Second)
	mu.Lock()
	_ = held[0].Close() // the instance's idle timeout
	mu.Unlock()
	time.Sleep(20 * time.Millisecond) // its FIN reaches the pooled socket
	second := get()
	if second == first || second.reused {
		t.Fatal("a connection the instance closed was used")
	}
	waitAccepted(t, &accepted, 2)
	if got := u.Limit().Limit(30 * time.Second); got != 3750*time.Millisecond {
		t.Fatalf("learned limit %v, want 3.75s", got)
	}

	u.Put(second)
	clock = clock.Add(3700 * time.Millisecond)
	if c := get(); c != second || !c.reused {
		t.Fatal("a connection idle for 3.7s was not used")
	}
	u.Put(second)
	clock = clock.Add(3800 * time.Millisecond)
	third := get()
	if third == second || third.reused {
		t.Fatal("a connection idle for 3.8s was used; the instance may be closing it")
	}
	waitAccepted(t, &accepted, 3)
	third.Close()
}
