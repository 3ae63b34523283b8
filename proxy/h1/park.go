package h1

import (
	"errors"
	"time"
)

// Parking of idle keep-alive connections (Linux: park_linux.go; elsewhere
// park_other.go parks nothing): what does not depend on the system.

// defaultParkAfter is ParkAfter's default; parkMin is the shortest grace
// before a connection parks (see serveConn).
const (
	defaultParkAfter = time.Second
	parkMin          = 20 * time.Millisecond
)

// When the parker returns freed memory to the system (releaser): after
// releaseParked parks since the last time, once parks and resumes have
// stopped for releaseQuiet, and no sooner after the last release than
// releaseEvery or releaseShare times what it took.
const (
	releaseParked = 256
	releaseQuiet  = 200 * time.Millisecond
	releaseEvery  = time.Second
	releaseShare  = 100
)

// releaser decides when the parker gives the memory that a wave of parking
// freed back to the system. A connection that parks ends its goroutine:
// its stack and the garbage of its first requests go back to the Go heap,
// which keeps those pages (resident) for minutes before its scavenger
// returns them, so right after a wave the process holds about 1 MiB per
// thousand connections that no connection uses. Returning it costs one
// full collection of the live heap (release is
// runtime/debug.FreeOSMemory), hence the conditions: many parks since the
// last time (the wave is worth it), a quiet moment (the wave is over and
// no load would fault the pages back in at once: no park or resume for a
// while, and, as the parker checks, most connections parked), and a pause
// after each release of at least every and share times the release's own
// duration, which bounds the time spent releasing to 1/share of the time.
// Times are unix nanoseconds; the parker's lock guards it.
type releaser struct {
	minParked int
	quiet     int64
	every     int64
	share     int64
	release   func()

	parked int   // parks since the last release
	last   int64 // the last park or resume
	next   int64 // no release before
	count  int   // releases so far
}

// active records a park (parked) or a resume at now.
func (r *releaser) active(now int64, parked bool) {
	r.last = now
	if parked {
		r.parked++
	}
}

// due reports whether a release is due at now; if not, at is when one
// will be unless a park or resume comes first (0: none is pending).
func (r *releaser) due(now int64) (ok bool, at int64) {
	if r.release == nil || r.parked < r.minParked {
		return false, 0
	}
	at = max(r.last+r.quiet, r.next)
	return now >= at, at
}

// start records a release begun at now; the caller then calls release and
// reports its end to finish.
func (r *releaser) start(now int64) {
	r.parked = 0
	r.next = now + r.every
	r.count++
}

// finish records that the release begun at start ended at end.
func (r *releaser) finish(start, end int64) {
	r.next = max(r.next, end+r.share*(end-start))
}

// startParker sets ParkAfter's default and starts the parker where the
// system has one; once, with s.mu held, after IdleTimeout's default is set.
func (s *Server) startParker() {
	if s.ParkAfter == 0 {
		s.ParkAfter = defaultParkAfter
	}
	s.ParkAfter = min(s.ParkAfter, s.IdleTimeout/2)
	if s.ParkAfter <= 0 {
		return
	}
	p, err := newParker(s)
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			s.Log.Warn("idle connections will not be parked", "err", err)
		}
		return
	}
	s.park = p
	go p.run()
}

// closeParked closes c if it is parked and reports whether it did; forget:
// also take it out of the connection set (a caller holding s.mu does that
// itself).
func (s *Server) closeParked(c *Conn, forget bool) bool {
	if !c.state.CompareAndSwap(stateParked, stateClosed) {
		return false
	}
	s.park.drop(c)
	c.nc.Close()
	if forget {
		s.forget(c)
	}
	return true
}

// Parked reports how many connections are parked.
func (s *Server) Parked() int {
	s.mu.Lock()
	p := s.park
	s.mu.Unlock()
	return p.count()
}
