package proxy

import (
	"net"
	"net/http"
	"testing"
)

// BenchmarkFrontRollout is BenchmarkFront's fast path with a rollout
// cookie on every request, without a rollout and at 10 %: the cost of the
// weighted decision (a cookie lookup and a hash) per request.
func BenchmarkFrontRollout(b *testing.B) {
	req := []byte("GET /path HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nCookie: session=abc; " + RolloutCookie + "=3f2a9c1b7d4e5f60718293a4\r\n\r\n")
	for _, weight := range []int{0, 10} {
		b.Run("weight="+map[int]string{0: "off", 10: "10%"}[weight], func(b *testing.B) {
			rt := newBenchRouterFast(b)
			if err := rt.SetActiveWeighted("blue", 1, weight); err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &Server{Router: rt, Fallback: &http.Server{Handler: rt}}
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.Serve(ln) }()
			b.Cleanup(func() { srv.Close(); <-done })
			b.ReportAllocs()
			b.SetParallelism(32) // 64 connections on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				buf := make([]byte, 4096)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if err := readBenchResponse(c, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkOnTarget is the decision alone.
func BenchmarkOnTarget(b *testing.B) {
	key := []byte("3f2a9c1b7d4e5f60718293a4")
	w := weightOf(10)
	n := 0
	for b.Loop() {
		if onTarget(key, w) {
			n++
		}
	}
	_ = n
}
