package h1

import (
	"slices"
	"testing"
	"time"
)

// TestIdleStack: last in, first out; the limit; Remove takes the expired
// (idle since the cutoff or earlier) or all, keeping the others in order.
func TestIdleStack(t *testing.T) {
	var s IdleStack[int]
	t0 := time.Unix(1000, 0)
	for i := range 4 {
		if !s.Push(i, t0.Add(time.Duration(i)*time.Second), 4) {
			t.Fatalf("push %d refused under the limit", i)
		}
	}
	if s.Push(9, t0, 4) {
		t.Fatal("push over the limit accepted")
	}
	if c, since, ok := s.Pop(); !ok || c != 3 || !since.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("pop: %d %v %v, want the last pushed", c, since, ok)
	}
	if got := s.Remove(false, t0.Add(time.Second)); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("expired: %v, want [0 1]", got)
	}
	if s.Len() != 1 {
		t.Fatalf("len %d after removing the expired, want 1", s.Len())
	}
	if got := s.Remove(true, time.Time{}); !slices.Equal(got, []int{2}) {
		t.Fatalf("all: %v", got)
	}
	if _, _, ok := s.Pop(); ok {
		t.Fatal("pop from an empty stack")
	}
}
