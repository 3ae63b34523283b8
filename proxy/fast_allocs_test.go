package proxy

import (
	"net"
	"net/http"
	"testing"
)

// TestFastZeroAllocs: a proxied keep-alive request on the fast path
// allocates nothing, client and instance connections warm (with metrics
// on). It failed with one allocation per request when the check for an
// ended stream declared its errors.As target before its early return.
func TestFastZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful with the race detector (sync.Pool drops items)")
	}
	rt := newBenchRouterFast(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Router: rt, Fallback: &http.Server{Handler: rt}}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /path HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 4096)
	one := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := readBenchResponse(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // warm: pools, buffers, metric series
		one()
	}
	if n := testing.AllocsPerRun(500, one); n != 0 {
		t.Fatalf("%.2f allocations per request, want 0", n)
	}
}
