package loglimit

import (
	"testing"
	"time"
)

// TestLogLimit: one line per interval, and the first line after a quiet
// interval says how many were held back.
func TestLogLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	l := Limit{Every: time.Second, Now: func() time.Time { return now }}
	step := func(d time.Duration, wantOK bool, wantHeld int) {
		t.Helper()
		now = now.Add(d)
		if ok, held := l.Allow(); ok != wantOK || held != wantHeld {
			t.Fatalf("at +%v: Allow() = %v, %d; want %v, %d", now.Sub(time.Unix(1000, 0)), ok, held, wantOK, wantHeld)
		}
	}
	step(0, true, 0) // the first line goes through
	for range 5 {
		step(100*time.Millisecond, false, 0) // within the second: held back
	}
	step(500*time.Millisecond, true, 5) // a second after the first: through, with the count
	step(999*time.Millisecond, false, 0)
	step(time.Millisecond, true, 1)
	step(time.Hour, true, 0)
}
