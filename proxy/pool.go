// Package proxy is the data plane of bluegreen: the routing snapshot, the
// instance pools of each colour, balancing, the reverse proxy itself and the
// draining of long-lived connections after a switch.
//
// The request path reads only atomics: one routing snapshot behind an
// atomic.Pointer and per-instance health and load counters. Health reaches a
// pool through Pool.SetStatus; the pool never imports the health checker.
//
// Both codecs (the fast HTTP/1.1 codec in proxy/h1 and net/http) run one
// request pipeline (pipeline.go): route, pick, attempt and retry, finish.
// Every attempt's failure is judged once (fault.go): a client's fault is
// counted in bluegreen_client_errors_total and never charged to an
// instance; an instance's feeds its error counter and passive outlier
// detection (OutlierConfig), which takes an instance that keeps failing out
// of balancing for a growing cool-down. A request that is safe to send
// again (retryPolicy: refused with its body unread, or an idempotent
// request without a body reset before any response byte) is retried once
// on another instance of the same colour.
package proxy

import (
	"fmt"
	"net/http/httputil"
	"net/url"
	"sync/atomic"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// Balance names a policy for choosing among the healthy instances of a colour.
type Balance string

// The balancing policies.
const (
	RoundRobin    Balance = "round-robin"
	LeastInflight Balance = "least-inflight"
)

// ParseBalance validates a policy name.
func ParseBalance(s string) (Balance, error) {
	switch Balance(s) {
	case RoundRobin, LeastInflight:
		return Balance(s), nil
	}
	return "", fmt.Errorf("unknown balancing policy %q: expected %q or %q", s, RoundRobin, LeastInflight)
}

// Backend is one configured instance of a colour. It lives as long as the
// Router and carries the instance's health and load in atomics, so a routing
// switch never resets them. A Backend must not be copied.
type Backend struct {
	url      *url.URL
	name     string
	pool     *Pool
	rt       *Router
	up       atomic.Bool
	inflight atomic.Int64
	rp       *httputil.ReverseProxy
	conns    *h1.Upstream       // the fast codec's connections
	direct   *directConns       // the net/http codec's body-less requests (direct.go); nil: base transport only
	own      *instanceTransport // the net/http codec's other requests (instancetransport.go); nil: a Transport given in Config
	errs     *upstreamErrorCounters
	out      outlierState
	refusal  // the data plane's evidence (colorfail.go)
}

// URL returns the instance's base URL.
func (b *Backend) URL() *url.URL { return b.url }

// Name is the instance's configured URL, as used in metrics and status.
func (b *Backend) Name() string { return b.name }

// Healthy reports whether the instance currently receives traffic.
func (b *Backend) Healthy() bool { return b.up.Load() }

// Inflight is the number of requests the instance is serving now.
func (b *Backend) Inflight() int64 { return b.inflight.Load() }

// Pool holds the instances of one colour. Its instance list is fixed at
// construction; health changes arrive through SetStatus. Safe for concurrent
// use; Pick never blocks.
type Pool struct {
	color    string
	balance  Balance
	backends []*Backend
	next     atomic.Uint32
	streams  *streamSet
	metrics  *colorMetrics
	poolOutliers
}

// Color is the colour this pool serves.
func (p *Pool) Color() string { return p.color }

// Backends lists the pool's instances in configured order.
func (p *Pool) Backends() []*Backend { return p.backends }

// SetStatus marks the named instance up or down; unknown names are ignored.
// It satisfies the health checker's Reporter interface.
func (p *Pool) SetStatus(instance string, up bool) {
	for _, b := range p.backends {
		if b.name == instance {
			if !b.up.Swap(up) && up {
				b.backUp()
			}
			return
		}
	}
}

// backUp starts an instance that comes back up afresh: it may be a new
// process (a restart, a new container behind the same address), so the
// connections pooled before are let go, and what the pool learned of its
// keep-alive timeout is forgotten (a restart closes connections of any
// age, which would otherwise teach a shorter one).
func (b *Backend) backUp() {
	b.conns.CloseIdle(false)
	if b.direct != nil {
		b.direct.closeIdle(false)
	}
	if b.own != nil {
		b.own.CloseIdleConnections()
	}
	b.conns.Limit().Forget()
}

// Healthy counts the instances that are up.
func (p *Pool) Healthy() int {
	n := 0
	for _, b := range p.backends {
		if b.up.Load() {
			n++
		}
	}
	return n
}

// Pick chooses a healthy instance that outlier detection has not ejected,
// or returns nil when there is none; the caller turns nil into 503. When
// every healthy instance is ejected it picks one of them anyway: passive
// evidence takes an instance out of rotation while others can serve, never
// the whole colour (Envoy's panic threshold does the same). It never falls
// over to another colour.
func (p *Pool) Pick() *Backend {
	var b *Backend
	if p.balance == LeastInflight {
		b = p.pickLeast(nil)
	} else {
		b = p.pickRoundRobin(nil)
	}
	if b == nil && p.nEjected.Load() > 0 {
		b = p.pickEjected(nil)
	}
	return b
}

// pickOther is Pick without except: the target of a retry.
func (p *Pool) pickOther(except *Backend) *Backend {
	var b *Backend
	if p.balance == LeastInflight {
		b = p.pickLeast(except)
	} else {
		b = p.pickRoundRobin(except)
	}
	if b == nil && p.nEjected.Load() > 0 {
		b = p.pickEjected(except)
	}
	return b
}

// pickEjected returns a healthy instance other than except that outlier
// detection ejected, rotating among them.
func (p *Pool) pickEjected(except *Backend) *Backend {
	n := uint32(len(p.backends))
	start := p.next.Load()
	for i := range n {
		b := p.backends[(start+i)%n]
		if b != except && b.up.Load() && b.out.ejected.Load() {
			return b
		}
	}
	return nil
}

func (p *Pool) pickRoundRobin(except *Backend) *Backend {
	n := uint32(len(p.backends))
	var start uint32
	if except == nil {
		start = p.next.Add(1)
	} else {
		start = p.next.Load() + 1 // a retry leaves the rotation alone
	}
	for i := range n {
		b := p.backends[(start+i)%n]
		if b != except && p.available(b) {
			return b
		}
	}
	return nil
}

// pickLeast returns the healthy instance with the fewest requests in flight,
// starting the scan at a rotating offset so ties are spread.
func (p *Pool) pickLeast(except *Backend) *Backend {
	n := uint32(len(p.backends))
	start := p.next.Add(1)
	var best *Backend
	var bestLoad int64
	for i := range n {
		b := p.backends[(start+i)%n]
		if b == except || !p.available(b) {
			continue
		}
		if load := b.inflight.Load(); best == nil || load < bestLoad {
			best, bestLoad = b, load
		}
	}
	return best
}
