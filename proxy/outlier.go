package proxy

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OutlierConfig configures passive outlier detection, as Envoy's
// consecutive-failure detector: an instance that fails Consecutive requests
// in a row (connection failure, timeout, reset or a 5xx answer) is ejected
// from balancing for a cool-down. Each further ejection doubles the
// cool-down up to MaxEject; the count starts over once the instance has
// stayed in for MaxEject. Passive evidence alone never ejects the last
// instance of a colour that is healthy and not ejected; when that last one
// keeps failing, the cool-downs of the healthy ejected instances end early,
// and while every healthy instance is ejected, Pick uses them anyway.
type OutlierConfig struct {
	// Consecutive failures that eject an instance; 0 disables detection.
	Consecutive int
	// Eject is the first cool-down; default 30s.
	Eject time.Duration
	// MaxEject caps the cool-down; default 10 times Eject.
	MaxEject time.Duration
}

// outlierPolicy is OutlierConfig with defaults applied, shared by a pool.
type outlierPolicy struct {
	consecutive int32
	eject, max  time.Duration
}

func (c OutlierConfig) policy() outlierPolicy {
	if c.Consecutive <= 0 {
		return outlierPolicy{}
	}
	if c.Eject <= 0 {
		c.Eject = 30 * time.Second
	}
	if c.MaxEject < c.Eject {
		c.MaxEject = 10 * c.Eject
	}
	return outlierPolicy{consecutive: int32(min(c.Consecutive, 1<<30)), eject: c.Eject, max: c.MaxEject}
}

// outlierState is one instance's passive health, in atomics so the request
// path never locks. Changes to ejected happen under the pool's ejectMu, or by
// a compare-and-swap when a cool-down has run out.
type outlierState struct {
	fails     atomic.Int32 // consecutive failures
	ejected   atomic.Bool
	until     atomic.Int64       // end of the current or last cool-down, Unix ns
	ejections atomic.Int32       // ejections in a row, for the growing cool-down
	counter   prometheus.Counter // nil without metrics
}

// Ejected reports whether passive outlier detection has taken the instance
// out of balancing, and until when.
func (b *Backend) Ejected() (bool, time.Time) {
	p := b.pool
	if !b.out.ejected.Load() {
		return false, time.Time{}
	}
	until := b.out.until.Load()
	if p.now().UnixNano() >= until {
		return false, time.Time{}
	}
	return true, time.Unix(0, until)
}

// available reports whether b may take a request: up by the health checker
// and not ejected. A cool-down that has run out ends here, once.
func (p *Pool) available(b *Backend) bool {
	if !b.up.Load() {
		return false
	}
	if p.nEjected.Load() == 0 || !b.out.ejected.Load() {
		return true
	}
	if p.now().UnixNano() < b.out.until.Load() {
		return false
	}
	if b.out.ejected.CompareAndSwap(true, false) {
		p.nEjected.Add(-1)
		p.log.Info("instance back from outlier ejection", "color", p.color, "instance", b.name)
	}
	return true
}

// succeeded records an answer below 500.
func (b *Backend) succeeded() {
	if b.pool.outlier.consecutive > 0 && b.out.fails.Load() != 0 {
		b.out.fails.Store(0)
	}
}

// failed records a failed attempt; enough in a row eject the instance.
func (b *Backend) failed() {
	p := b.pool
	if p.outlier.consecutive == 0 {
		return
	}
	if b.out.fails.Add(1) >= p.outlier.consecutive {
		p.eject(b)
	}
}

// eject takes b out of balancing unless it is the last available instance.
func (p *Pool) eject(b *Backend) {
	p.ejectMu.Lock()
	defer p.ejectMu.Unlock()
	if b.out.fails.Load() < p.outlier.consecutive || !p.available(b) {
		return // another goroutine got here first, or b is out already
	}
	others := 0
	for _, o := range p.backends {
		if o != b && p.available(o) {
			others++
		}
	}
	if others == 0 {
		// b is failing and nothing else is in rotation: the instances
		// ejected earlier, healthy by their probes, are a better bet than
		// b. End their cool-downs now.
		for _, o := range p.backends {
			if o != b && o.up.Load() && o.out.ejected.CompareAndSwap(true, false) {
				p.nEjected.Add(-1)
				p.log.Info("outlier ejection ended early: the last instance in rotation is failing",
					"color", p.color, "instance", o.name, "failing", b.name)
			}
		}
		return
	}
	now := p.now()
	n := b.out.ejections.Load()
	if last := b.out.until.Load(); last != 0 && now.Sub(time.Unix(0, last)) > p.outlier.max {
		n = 0 // stayed in long enough: start over
	}
	d := p.outlier.eject
	for i := int32(0); i < n && d < p.outlier.max; i++ {
		d *= 2
	}
	d = min(d, p.outlier.max)
	b.out.ejections.Store(n + 1)
	b.out.until.Store(now.Add(d).UnixNano())
	b.out.fails.Store(0)
	b.out.ejected.Store(true)
	p.nEjected.Add(1)
	if b.out.counter != nil {
		b.out.counter.Inc()
	}
	p.log.Warn("instance ejected by outlier detection", "color", p.color, "instance", b.name,
		"consecutive_failures", p.outlier.consecutive, "cool_down", d.String(), "ejections", n+1)
}

// poolOutliers is the pool's share of outlier detection.
type poolOutliers struct {
	outlier  outlierPolicy
	now      func() time.Time
	log      *slog.Logger
	nEjected atomic.Int32 // instances with ejected set; 0 keeps Pick cheap
	ejectMu  sync.Mutex   // serialises ejections so two never take the last two instances
}
