package h1

import (
	"testing"
	"time"
)

// TestReleaserDue: the parker returns freed memory only after enough
// parks since the last time, once parks and resumes have stopped for the
// quiet time, and after a release not before the interval nor before a
// hundred times the release's duration; times are given, not waited for.
func TestReleaserDue(t *testing.T) {
	calls := 0
	r := releaser{minParked: 3, quiet: int64(200 * time.Millisecond), every: int64(time.Second), share: 100, release: func() { calls++ }}
	ms := func(n int64) int64 { return 1_000_000_000 + n*int64(time.Millisecond) }
	check := func(step string, now int64, wantOK bool, wantAt int64) {
		t.Helper()
		if ok, at := r.due(now); ok != wantOK || at != wantAt {
			t.Fatalf("%s: due(%d) = %v, %d; want %v, %d", step, now, ok, at, wantOK, wantAt)
		}
	}
	check("nothing parked", ms(0), false, 0)
	r.active(ms(0), true)
	r.active(ms(10), true)
	check("two parks of three", ms(1000), false, 0)
	r.active(ms(20), false) // a resume is activity, not a park
	check("a resume does not count", ms(1000), false, 0)
	r.active(ms(30), true)
	check("three parks, not quiet yet", ms(100), false, ms(230))
	check("three parks and quiet", ms(230), true, ms(230))
	r.start(ms(230))
	if r.parked != 0 || r.count != 1 {
		t.Fatalf("after a release began: %d parks counted, %d releases; want 0 and 1", r.parked, r.count)
	}
	r.finish(ms(230), ms(233)) // 3 ms: a hundred times that is within the interval
	check("just released", ms(240), false, 0)
	for i := range int64(5) {
		r.active(ms(300+i), true)
	}
	check("a new wave within the interval", ms(600), false, ms(1230))
	check("the interval passed", ms(1230), true, ms(1230))
	r.active(ms(1300), false)
	check("a resume restarts the quiet time", ms(1300), false, ms(1500))

	r.start(ms(1500))
	r.finish(ms(1500), ms(1520)) // 20 ms: the next waits 2 s after its end
	for i := range int64(3) {
		r.active(ms(1600+i), true)
	}
	check("a slow release pushes the next one back", ms(2000), false, ms(3520))
	check("and then it comes", ms(3520), true, ms(3520))

	r.release = nil
	check("no release function", ms(20000), false, 0)
	if calls != 0 {
		t.Fatal("due called release")
	}
}
