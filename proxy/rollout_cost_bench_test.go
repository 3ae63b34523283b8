//go:build unix

package proxy

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// BenchmarkRolloutCost measures what a running rollout costs per request
// on the fast path at 64 connections, in CPU time of the whole process
// (clients, proxy and instances), so that the proxy's own share can be
// computed within one run: direct (clients straight to an instance), off
// (the proxy, no rollout) and w50 (the proxy, a rollout at 50 %). Every
// client connection carries its own rollout cookie in all three, as a
// returning client does, so w50 differs from off only by the weighted
// decision: at 50 % about half the connections go to green.
//
// Proxy CPU per request is cpu-ns/op of off or w50 minus that of direct;
// bench/results/2026-12-02-rollout-cost.md runs the three alternately.
func BenchmarkRolloutCost(b *testing.B) {
	run := func(b *testing.B, addr string) {
		var next atomic.Int64
		b.SetParallelism(32) // 64 connections on 2 cores
		start := cpuTime()
		b.ResetTimer()
		runBenchClientsWith(b, addr, func() []byte {
			return fmt.Appendf(nil, "GET /path HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nCookie: session=abc; %s=client%020d\r\n\r\n", RolloutCookie, next.Add(1))
		})
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
	b.Run("direct", func(b *testing.B) { run(b, newBenchBackend(b).Host) })
	for _, weight := range []int{0, 50} {
		name := map[int]string{0: "off", 50: "w50"}[weight]
		b.Run(name, func(b *testing.B) {
			rt := newBenchRouterFast(b)
			if err := rt.SetActiveWeighted("blue", 1, weight); err != nil {
				b.Fatal(err)
			}
			run(b, serveBenchFast(b, rt))
		})
	}
}

// cpuTime is the CPU time the process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRolloutDecision is the per-request work of the fast path that
// depends on the rollout, alone: the codec's hand-off check (needsRolloutID),
// reading the client's key (rolloutKeyH1) and routing by it (route), on a
// head with a rollout cookie, parsed anew for every request (as the codec
// does; the head remembers its last cookie lookup). w50 minus off is the
// CPU the weighted path adds to a request; BenchmarkRolloutCost gives what
// the proxy spends on the whole request, in the same run.
func BenchmarkRolloutDecision(b *testing.B) {
	var h h1.Head
	head := []byte("GET /path HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nCookie: session=abc; " + RolloutCookie + "=client00000000000000000017\r\n\r\n")
	for _, weight := range []int{0, 50} {
		b.Run(map[int]string{0: "off", 50: "w50"}[weight], func(b *testing.B) {
			rt := newBenchRouterFast(b)
			if err := rt.SetActiveWeighted("blue", 1, weight); err != nil {
				b.Fatal(err)
			}
			var green int
			for b.Loop() {
				if err := h.ParseRequest(head); err != nil {
					b.Fatal(err)
				}
				if rt.needsRolloutID(&h) {
					b.Fatal("a client with its cookie handed off")
				}
				var key []byte
				if rt.rolloutRunning() {
					key = rt.rolloutKeyH1(&h, "127.0.0.1:40000")
				}
				if rt.route(false, key).color == "green" {
					green++
				}
			}
			if weight == 0 && green > 0 {
				b.Fatal("no rollout, yet routed to green")
			}
		})
	}
}
