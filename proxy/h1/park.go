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
