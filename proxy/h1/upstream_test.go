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

// TestPooledConnectionKeepsItsBufferForAGrace: a connection back in the
// pool keeps its read buffer, so that the next request on it (under load
// within microseconds: the pool is LIFO) does not borrow one again; the
// reap gives it back once the connection has been idle for BufferGrace,
// and the connection stays pooled and usable.
func TestPooledConnectionKeepsItsBufferForAGrace(t *testing.T) {
	var held []net.Conn
	ln := testkit.Listen(t, func(c net.Conn) {
		_, _ = c.Write([]byte("x"))
		held = append(held, c)
	})
	defer func() {
		_ = ln.Close()
		for _, c := range held {
			_ = c.Close()
		}
	}()
	clock := time.Unix(1_000_000, 0)
	u := NewUpstream(ln.Addr().String(), "", 5*time.Second, time.Minute, 4, &Buffers{}, func() time.Time { return clock })
	defer u.CloseIdle(false)
	c, err := u.Get(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cr.fill(); err != nil { // the instance's byte, read into a lent buffer
		t.Fatal(err)
	}
	c.cr.discard(c.cr.buffered())
	u.Put(c)
	holding := func(want int, when string) {
		t.Helper()
		idle, h := u.IdleBuffers()
		if idle != 1 || h != want {
			t.Fatalf("%s: %d idle, %d holding a buffer; want 1 and %d", when, idle, h, want)
		}
	}
	holding(1, "just put back")
	clock = clock.Add(BufferGrace / 2)
	u.CloseIdle(true)
	holding(1, "reaped within the grace")
	clock = clock.Add(BufferGrace)
	u.CloseIdle(true)
	holding(0, "reaped after the grace")
	again, err := u.Get(false)
	if err != nil {
		t.Fatal(err)
	}
	if again != c || !again.reused {
		t.Fatal("the connection that gave back its buffer was not reused")
	}
	again.Close()
}
