package proxy

import (
	"time"

	"github.com/cryoprotect/bluegreen/proxy/stats"
)

// record counts a finished request of p in Config.Stats, if any: status is
// what the client got, sf whose fault its failure was (outcome.evidence),
// start and elapsed when it started and how long it took (a zero start
// means "now"). The latency of a long-lived request is not a response time
// and is left out.
func (rt *Router) record(p *Pool, status int, sf stats.Fault, start time.Time, elapsed time.Duration, longLived bool) {
	if rt.stats == nil {
		return
	}
	if longLived {
		elapsed = -1
	}
	if start.IsZero() {
		rt.stats.Record(p.color, status, elapsed, sf)
		return
	}
	rt.stats.RecordAt(p.color, start.Add(max(elapsed, 0)), status, elapsed, sf)
}
