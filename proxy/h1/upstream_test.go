package h1

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// TestUpstreamPoolGrowsToLoad: the pool keeps every connection a burst of
// load opened, up to its limit (here above the fixed 1,024 of earlier
// versions), closes only those beyond it, and the next burst reuses the kept
// ones without dialling.
func TestUpstreamPoolGrowsToLoad(t *testing.T) {
	const limit, burst = 1100, 1200
	var accepted atomic.Int64
	var held []net.Conn
	ln := testkit.Listen(t, func(c net.Conn) {
		accepted.Add(1)
		held = append(held, c) // the instance keeps every connection open
	})
	defer func() {
		_ = ln.Close()
		for _, c := range held {
			_ = c.Close()
		}
	}()

	u := NewUpstream(ln.Addr().String(), "", 5*time.Second, time.Minute, limit, &Buffers{}, time.Now)
	defer u.CloseIdle(false)
	conns := make([]*UpConn, burst)
	for i := range conns {
		var err error
		if conns[i], err = u.Get(false); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		u.Put(c)
	}
	if idle, _ := u.IdleBuffers(); idle != limit {
		t.Fatalf("%d idle after a burst of %d, want the limit %d", idle, burst, limit)
	}
	waitAccepted(t, &accepted, burst)

	for i := range limit {
		c, err := u.Get(false)
		if err != nil {
			t.Fatal(err)
		}
		if !c.reused {
			t.Fatalf("connection %d of the second burst was dialled, not reused", i)
		}
		conns[i] = c
	}
	for _, c := range conns[:limit] {
		u.Put(c)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != burst {
		t.Fatalf("%d connections accepted after the second burst, want %d (no new dial)", n, burst)
	}
}

func waitAccepted(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections accepted, want %d", n.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
