package proxy

import (
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// streamSet tracks the long-lived connections of one colour: upgraded
// connections (WebSocket) and event streams. When the colour stops being
// active, drain marks the ones open at that moment and closes them after the
// drain timeout unless the colour becomes active again first. Safe for
// concurrent use; closers are always called without the lock held.
type streamSet struct {
	color   string
	timeout time.Duration
	log     *slog.Logger
	gauge   prometheus.Gauge // may be nil

	mu       sync.Mutex
	live     map[*stream]struct{}
	draining int
	timer    *time.Timer
}

type stream struct {
	closer   io.Closer
	draining bool // guarded by streamSet.mu
}

func newStreamSet(color string, timeout time.Duration, log *slog.Logger, gauge prometheus.Gauge) *streamSet {
	return &streamSet{color: color, timeout: timeout, log: log, gauge: gauge, live: make(map[*stream]struct{})}
}

func (s *streamSet) add(c io.Closer) *stream {
	st := &stream{closer: c}
	s.mu.Lock()
	s.live[st] = struct{}{}
	s.mu.Unlock()
	return st
}

func (s *streamSet) remove(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[st]; !ok {
		return
	}
	delete(s.live, st)
	if st.draining {
		s.draining--
		s.setGauge()
	}
}

// setGauge publishes the draining count; s.mu must be held.
func (s *streamSet) setGauge() {
	if s.gauge != nil {
		s.gauge.Set(float64(s.draining))
	}
}

// Len is the number of tracked connections.
func (s *streamSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Draining is the number of connections waiting to be closed.
func (s *streamSet) Draining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// drain marks every open connection as draining and arms the timer that
// closes them.
func (s *streamSet) drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.live {
		if !st.draining {
			st.draining = true
			s.draining++
		}
	}
	s.setGauge()
	if s.draining == 0 || s.timer != nil {
		return
	}
	s.log.Info("draining long-lived connections", "color", s.color, "connections", s.draining, "timeout", s.timeout)
	s.timer = time.AfterFunc(s.timeout, s.closeDraining)
}

// undrain cancels a pending drain: the colour is active again.
func (s *streamSet) undrain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	for st := range s.live {
		st.draining = false
	}
	s.draining = 0
	s.setGauge()
}

func (s *streamSet) closeDraining() {
	s.mu.Lock()
	var victims []io.Closer
	for st := range s.live {
		if st.draining {
			victims = append(victims, st.closer)
			delete(s.live, st)
		}
	}
	s.draining = 0
	s.timer = nil
	s.setGauge()
	s.mu.Unlock()
	if len(victims) > 0 {
		s.log.Info("closed drained connections", "color", s.color, "connections", len(victims))
	}
	for _, c := range victims {
		endStream(c)
	}
}

// closeAll closes every tracked connection at once (shutdown).
func (s *streamSet) closeAll() int {
	s.mu.Lock()
	victims := make([]io.Closer, 0, len(s.live))
	for st := range s.live {
		victims = append(victims, st.closer)
		st.draining = false
		if _, ok := st.closer.(ender); !ok {
			delete(s.live, st) // an ender stays listed until it has ended (drainend.go)
		}
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.draining = 0
	s.setGauge()
	s.mu.Unlock()
	for _, c := range victims {
		endStream(c)
	}
	return len(victims)
}
