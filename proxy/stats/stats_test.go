package stats

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) {
	c.ns.Add(int64(d))
}

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func TestHistIndexBounds(t *testing.T) {
	for i := 0; i < histBuckets-1; i++ {
		if got := histIndex(bounds[i]); got != i {
			t.Fatalf("histIndex(bounds[%d]=%v) = %d", i, bounds[i], got)
		}
		if got := histIndex(bounds[i] + 1); got != i+1 {
			t.Fatalf("histIndex(bounds[%d]+1) = %d, want %d", i, got, i+1)
		}
	}
	for _, d := range []time.Duration{0, 1, histBase} {
		if histIndex(d) != 0 {
			t.Fatalf("histIndex(%v) = %d, want 0", d, histIndex(d))
		}
	}
	if got := histIndex(time.Hour); got != histBuckets-1 {
		t.Fatalf("histIndex(1h) = %d, want overflow bucket %d", got, histBuckets-1)
	}
}

func TestWindowCountsAndQuantiles(t *testing.T) {
	c := newClock(t0)
	r := New([]string{"blue", "green"}, c.now)
	// 1000 requests with a latency on blue: 500 at 1 ms, 489 at 10 ms, 11
	// at 500 ms, so p50 ≈ 1 ms and p99 ≈ 500 ms.
	for i := 0; i < 500; i++ {
		r.Record("blue", 200, time.Millisecond, FaultNone)
	}
	for i := 0; i < 489; i++ {
		r.Record("blue", 200, 10*time.Millisecond, FaultNone)
	}
	for i := 0; i < 11; i++ {
		r.Record("blue", 502, 500*time.Millisecond, FaultInstance)
	}
	r.Record("blue", 499, -1, FaultClient) // long-lived: counted, no latency
	r.Record("green", 200, time.Millisecond, FaultNone)
	r.Record("purple", 200, time.Millisecond, FaultNone) // ignored

	s := r.Window("blue", t0.Add(-time.Minute))
	if s.Requests != 1001 || s.InstanceErrors != 11 || s.ClientErrors != 1 || s.Latencies != 1000 {
		t.Fatalf("summary %+v", s)
	}
	within := func(got, want time.Duration) bool {
		return float64(got) >= float64(want)*0.8 && float64(got) <= float64(want)*1.2
	}
	if !within(s.P50, time.Millisecond) {
		t.Errorf("p50 = %v, want ~1ms", s.P50)
	}
	if !within(s.P99, 500*time.Millisecond) {
		t.Errorf("p99 = %v, want ~500ms", s.P99)
	}
	if got := s.ErrorRatio(); got < 0.0109 || got > 0.0111 {
		t.Errorf("error ratio = %v", got)
	}
	if g := r.Window("green", t0); g.Requests != 1 {
		t.Errorf("green %+v", g)
	}
	if u := r.Window("purple", t0); u != (Summary{}) {
		t.Errorf("unknown colour %+v", u)
	}
	if !r.Started().Equal(t0) {
		t.Errorf("Started() = %v, want %v", r.Started(), t0)
	}
	var nilRec *Recorder
	nilRec.Record("blue", 200, time.Millisecond, FaultNone) // must not panic
}

func TestWindowSlidesAndRingReuses(t *testing.T) {
	c := newClock(t0)
	r := New([]string{"blue"}, c.now)
	for s := 0; s < 10; s++ {
		r.Record("blue", 200, time.Millisecond, FaultNone)
		r.Record("blue", 200, time.Millisecond, FaultNone)
		c.add(time.Second)
	}
	// now = t0+10s; seconds t0..t0+9 hold 2 each.
	if got := r.Window("blue", t0.Add(5*time.Second)).Requests; got != 10 {
		t.Fatalf("last 5 s: %d requests, want 10", got)
	}
	if got := r.Window("blue", time.Time{}).Requests; got != 20 {
		t.Fatalf("all: %d, want 20", got)
	}
	// Jump ahead by exactly one span: every old bucket is out of the window
	// and the one reused for "now" starts from zero.
	c.add(Span - time.Second) // the bucket of now last held t0+9s
	if got := r.Window("blue", time.Time{}).Requests; got != 0 {
		t.Fatalf("after a span: %d, want 0", got)
	}
	r.Record("blue", 500, time.Second, FaultInstance)
	s := r.Window("blue", time.Time{})
	if s.Requests != 1 || s.InstanceErrors != 1 {
		t.Fatalf("after reuse: %+v", s)
	}
	// A sample stamped with an old second whose bucket was reused is dropped.
	late := New([]string{"blue"}, func() time.Time { return t0 })
	late.Record("blue", 200, 0, FaultNone)
	c2 := newClock(t0.Add(Span))
	late.now = c2.now
	late.Record("blue", 200, 0, FaultNone) // reuses t0's bucket
	late.now = func() time.Time { return t0 }
	late.Record("blue", 200, 0, FaultNone) // t0 again: dropped
	late.now = c2.now
	if got := late.Window("blue", time.Time{}).Requests; got != 1 {
		t.Fatalf("late sample: %d, want 1", got)
	}
}

func TestSeries(t *testing.T) {
	c := newClock(t0.Add(-Span + 5*time.Second))
	r := New([]string{"blue"}, c.now)
	for range Slots {
		r.Record("blue", 200, 2*time.Millisecond, FaultNone)
		c.add(time.Second)
	}
	c.add(-time.Second) // now is the last second recorded
	pts := r.Series("blue", 10*time.Second)
	if len(pts) != Slots/10 {
		t.Fatalf("%d points, want %d", len(pts), Slots/10)
	}
	var total int64
	for i, p := range pts {
		if p.Time.Unix()%10 != 0 {
			t.Fatalf("point %d at %v: not aligned to 10 s", i, p.Time)
		}
		if i > 0 && p.Time.Sub(pts[i-1].Time) != 10*time.Second {
			t.Fatalf("point %d: step %v", i, p.Time.Sub(pts[i-1].Time))
		}
		if p.Requests > 0 && (p.P50 < time.Millisecond || p.P50 > 3*time.Millisecond) {
			t.Fatalf("point %d p50 %v", i, p.P50)
		}
		total += p.Requests
	}
	// The first partial step (the span does not start on a multiple of 10 s)
	// is left out; every other second is in.
	if total < Slots-10 || total > Slots {
		t.Fatalf("series total %d", total)
	}
	if last := pts[len(pts)-1]; last.Time.After(c.now()) {
		t.Fatalf("last point %v after now %v", last.Time, c.now())
	}
	if one := r.Series("blue", 0); len(one) != Slots {
		t.Fatalf("1 s steps: %d points", len(one))
	}
	if r.Series("purple", time.Second) != nil {
		t.Fatal("unknown colour has a series")
	}
}

// TestConcurrentRecord runs writers across second boundaries and readers at
// once (for -race) and checks no request is lost within the window.
func TestConcurrentRecord(t *testing.T) {
	c := newClock(t0)
	r := New([]string{"blue", "green"}, c.now)
	const writers, each = 4, 5000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			color := []string{"blue", "green"}[w%2]
			for i := range each {
				r.Record(color, 200, time.Duration(i)*time.Microsecond, FaultOf(200+i%400))
			}
		})
	}
	var rd sync.WaitGroup
	rd.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				r.Window("blue", time.Time{})
				r.Series("green", 30*time.Second)
				c.add(10 * time.Millisecond)
			}
		}
	})
	wg.Wait()
	close(stop)
	rd.Wait()
	for _, color := range []string{"blue", "green"} {
		s := r.Window(color, time.Time{})
		if s.Requests != writers/2*each {
			t.Errorf("%s: %d requests, want %d", color, s.Requests, writers/2*each)
		}
	}
}

func TestFaultOf(t *testing.T) {
	for status, want := range map[int]Fault{200: FaultNone, 404: FaultNone, 499: FaultClient, 500: FaultInstance, 502: FaultInstance, 504: FaultInstance} {
		if got := FaultOf(status); got != want {
			t.Errorf("FaultOf(%d) = %d, want %d", status, got, want)
		}
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	r := New([]string{"blue", "green"}, nil)
	if n := testing.AllocsPerRun(1000, func() { r.Record("green", 200, 3*time.Millisecond, FaultNone) }); n != 0 {
		t.Fatalf("Record allocates %v times per call", n)
	}
	end := time.Now()
	if n := testing.AllocsPerRun(1000, func() { r.RecordAt("blue", end, 504, time.Second, FaultInstance) }); n != 0 {
		t.Fatalf("RecordAt allocates %v times per call", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	r := New([]string{"blue", "green"}, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d += 7 * time.Microsecond
			r.Record("green", 200, d%time.Second, FaultNone)
		}
	})
}

// BenchmarkRecordAt is the request path's cost: the end time is known.
func BenchmarkRecordAt(b *testing.B) {
	r := New([]string{"blue", "green"}, nil)
	end := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d += 7 * time.Microsecond
			r.RecordAt("green", end, 200, d%time.Second, FaultNone)
		}
	})
}

func BenchmarkWindow15m(b *testing.B) {
	r := New([]string{"blue"}, nil)
	r.Record("blue", 200, time.Millisecond, FaultNone)
	b.ReportAllocs()
	for b.Loop() {
		r.Window("blue", time.Time{})
	}
}
