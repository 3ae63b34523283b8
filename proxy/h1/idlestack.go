package h1

import (
	"sync"
	"time"
)

// IdleStack is a keep-alive pool's idle connections: a LIFO stack (the
// most recently used connection is the warmest and the least likely to
// have been closed by the instance), each with the time it went idle. The
// fast codec's Upstream and the net/http codec's pool (proxy/direct.go)
// both keep theirs in one. The zero value is empty; safe for concurrent
// use.
type IdleStack[C any] struct {
	mu   sync.Mutex
	idle []idleConn[C]
}

type idleConn[C any] struct {
	c     C
	since time.Time
}

// Push adds c, idle since the given time, unless the stack already holds
// limit connections.
func (s *IdleStack[C]) Push(c C, since time.Time, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle) >= limit {
		return false
	}
	s.idle = append(s.idle, idleConn[C]{c, since})
	return true
}

// Pop takes the most recently pushed connection and the time it went idle.
func (s *IdleStack[C]) Pop() (c C, since time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.idle)
	if n == 0 {
		return c, since, false
	}
	e := s.idle[n-1]
	s.idle[n-1] = idleConn[C]{}
	s.idle = s.idle[:n-1]
	return e.c, e.since, true
}

// Remove takes out and returns the connections idle since cutoff or
// earlier, or every one when all; the others keep their order.
func (s *IdleStack[C]) Remove(all bool, cutoff time.Time) []C {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []C
	keep := s.idle[:0]
	for _, e := range s.idle {
		if !all && e.since.After(cutoff) {
			keep = append(keep, e)
		} else {
			out = append(out, e.c)
		}
	}
	clear(s.idle[len(keep):])
	s.idle = keep
	return out
}

// Len is the number of idle connections.
func (s *IdleStack[C]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.idle)
}

// Each calls f on every idle connection, holding the stack's lock.
func (s *IdleStack[C]) Each(f func(C)) {
	s.EachIdleSince(time.Time{}, true, f)
}

// EachIdleSince calls f, holding the stack's lock, on every connection
// idle since cutoff or earlier, or on every one when all.
func (s *IdleStack[C]) EachIdleSince(cutoff time.Time, all bool, f func(C)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.idle {
		if all || !e.since.After(cutoff) {
			f(e.c)
		}
	}
}
