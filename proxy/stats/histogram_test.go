package stats

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The traffic of a fleet split across replicas: the sum of the replicas'
// window histograms is exactly the histogram of the merged traffic, so
// the fleet p99 computed from it equals the p99 one recorder would report
// for all of it. A p99 averaged over replicas would not.
func TestHistogramSumIsMergedTraffic(t *testing.T) {
	c := newClock(t0)
	colors := []string{"blue", "green"}
	whole := New(colors, c.now)
	parts := []*Recorder{New(colors, c.now), New(colors, c.now), New(colors, c.now)}
	rng := rand.New(rand.NewPCG(1, 2))
	// Replica 0 is fast, replica 2 slow: their own p99s are far apart.
	for sec := 0; sec < 30; sec++ {
		for range 400 {
			i := rng.IntN(len(parts))
			d := time.Duration(rng.ExpFloat64()*float64(time.Millisecond)) * time.Duration(1+4*i)
			fault := FaultNone
			if rng.IntN(50) == 0 {
				fault = FaultInstance
			}
			parts[i].Record("green", 200, d, fault)
			whole.Record("green", 200, d, fault)
		}
		c.add(time.Second)
	}
	since := t0
	want, wantH := whole.WindowHistogram("green", since)
	var sum Histogram
	var req, errs int64
	var p99s []time.Duration
	for _, p := range parts {
		s, h := p.WindowHistogram("green", since)
		sum.Add(&h)
		req += s.Requests
		errs += s.InstanceErrors
		p99s = append(p99s, s.P99)
	}
	if sum != wantH {
		t.Fatalf("summed histogram differs from the merged traffic's:\n%v\n%v", sum, wantH)
	}
	if req != want.Requests || errs != want.InstanceErrors || sum.Count() != want.Latencies {
		t.Fatalf("sums %d requests %d errors %d latencies, merged %+v", req, errs, sum.Count(), want)
	}
	if got := sum.Quantile(0.99); got != want.P99 {
		t.Fatalf("fleet p99 %s, merged traffic p99 %s", got, want.P99)
	}
	if got := sum.Quantile(0.50); got != want.P50 {
		t.Fatalf("fleet p50 %s, merged traffic p50 %s", got, want.P50)
	}
	var mean time.Duration
	for _, p := range p99s {
		mean += p / time.Duration(len(p99s))
	}
	t.Logf("fleet p99 %s (= merged); per replica %v; their mean %s", want.P99, p99s, mean)
	if mean == want.P99 {
		t.Fatalf("the replicas' p99s average to the fleet p99 %s: the test does not tell summing from averaging", mean)
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Count() != 0 {
		t.Fatal("an empty histogram has a p99")
	}
}

// WindowHistogram reads the same ring as Window and allocates nothing.
func TestWindowHistogramAllocs(t *testing.T) {
	c := newClock(t0)
	r := New([]string{"green"}, c.now)
	r.Record("green", 200, time.Millisecond, FaultNone)
	if n := testing.AllocsPerRun(100, func() { _, _ = r.WindowHistogram("green", t0) }); n != 0 {
		t.Fatalf("WindowHistogram allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { r.Record("green", 200, time.Millisecond, FaultNone) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}
