package proxy

import (
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
			b.SetParallelism(32) // 64 connections on 2 cores
			runBenchClients(b, serveBenchFast(b, rt), req)
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
