package proxy

import (
	"fmt"
	"sync/atomic"
	"time"
)

// The data plane's evidence that a colour cannot serve. An instance that
// refused a connection (a dial error: nothing was sent) is marked refusing
// until it answers again. When every instance of the active colour that is
// in rotation (up by its probes) is refusing, or every one of them is
// failing by outlier detection (ejected, or at the failure count that
// ejects), the Router calls Config.ColorFailing synchronously. The callback
// may switch the active colour (an auto-rollback); a request whose attempt
// was refused, so that nothing of it reached an instance, is then sent to
// the new active colour instead of failing.

// colorFailingFunc is Config.ColorFailing.
type colorFailingFunc = func(color, reason string)

// refusal is an instance's evidence marks, embedded in Backend: refusing
// is set by a refused connection and cleared by any answer; suspect is set
// when outlier detection counts it failing (ejected, or at the failure
// count that ejects) and cleared by an answer below 500.
type refusal struct{ refusing, suspect atomic.Bool }

// failedAttempt records an attempt that got no answer (kind says why).
func (b *Backend) failedAttempt(kind string) {
	if kind == KindDial && !b.refusing.Load() && !b.refusing.Swap(true) {
		b.pool.log.Warn("instance refuses connections", "color", b.pool.color, "instance", b.name)
	}
	b.failed()
	b.markSuspect()
}

// failedAnswer records a 5xx answer: a failure for outlier detection,
// whose state may now say the whole colour is failing.
func (b *Backend) failedAnswer() {
	b.failed()
	if b.markSuspect() {
		b.rt.failover(b.pool, KindOther, time.Time{})
	}
}

// markSuspect sets suspect when outlier detection counts b failing, and
// reports whether it is set.
func (b *Backend) markSuspect() bool {
	p := b.pool
	if p.outlier.consecutive == 0 {
		return false
	}
	if b.out.ejected.Load() || b.out.fails.Load() >= p.outlier.consecutive {
		if !b.suspect.Load() {
			b.suspect.Store(true)
		}
		return true
	}
	return b.suspect.Load()
}

// answered clears the marks an answer with status code disproves. Costs
// one or two atomic loads on the request path.
func (b *Backend) answered(code int) {
	if b.refusing.Load() {
		b.refusing.Store(false)
	}
	if code < 500 && b.suspect.Load() {
		b.suspect.Store(false)
	}
}

// failing reports whether the data plane has evidence that p cannot serve,
// and what it is. A colour with no instance in rotation is the health
// checker's business (it answers 503 and the probe-driven auto-rollback
// acts), not evidence here.
func (p *Pool) failing() (bool, string) {
	inRotation, refusing, outliers := 0, 0, 0
	for _, b := range p.backends {
		if !b.up.Load() {
			continue
		}
		inRotation++
		if b.refusing.Load() {
			refusing++
		}
		if b.suspect.Load() {
			outliers++
		}
	}
	switch {
	case inRotation == 0:
		return false, ""
	case refusing == inRotation:
		return true, fmt.Sprintf("every %s instance in rotation (%d) refused connections since its last answer", p.color, inRotation)
	case outliers == inRotation:
		return true, fmt.Sprintf("every %s instance in rotation (%d) is failing by outlier detection", p.color, inRotation)
	}
	return false, ""
}

// failover is called after an attempt on p failed with kind. When p is
// the active colour and the evidence says it cannot serve, it reports to
// Config.ColorFailing and returns the active pool after that call if it
// changed (the caller may then send an unsent request there), else nil.
// When p has already lost the traffic by the latest switch and the request
// was routed (routed, zero: unknown) before that switch, it returns the
// new active pool too; a preview request to the idle colour never moves.
func (rt *Router) failover(p *Pool, kind string, routed time.Time) *Pool {
	if rt.colorFailing == nil || kind == "" {
		return nil
	}
	if kind == KindDial || p.outlier.consecutive > 0 {
		if s := rt.snap.Load(); s.active != p {
			// Preview traffic, or a switch already happened: nothing to
			// report. A request routed to p just before p lost the traffic
			// goes where the switch sent the traffic.
			if s.from == p && !routed.IsZero() && routed.UnixNano() < s.at {
				return s.active
			}
			return nil
		}
		bad, why := p.failing()
		if !bad {
			return nil
		}
		rt.log.Debug("data plane: the active colour is failing", "color", p.color, "evidence", why)
		rt.colorFailing(p.color, why)
		if now := rt.snap.Load().active; now != p {
			return now
		}
	}
	return nil
}

// failoverTarget is where a request whose attempt on b, an instance of p,
// failed with kind goes next, if it was refused and nothing of it was sent
// (a.bodySent false), or reset and may be sent again: an instance of the
// new active colour when the evidence has switched it; else, while the
// evidence is incomplete, an instance of p in rotation not known to refuse
// (each refusal marks one more; a.try bounds the rest). Otherwise nil.
func (rt *Router) failoverTarget(p *Pool, b *Backend, kind string, a attempt) *Backend {
	np := rt.failover(p, kind, a.start)
	switch {
	case a.try > 8+2*len(p.backends):
		// Enough: a dead instance's kept-alive connections each reset
		// once, but an instance that resets every connection must not
		// keep a request going round.
		return nil
	case kind == KindDial && !a.bodySent:
	case kind == KindReset && retryPolicy(a.method, a.hasBody, a.bodySent, kind):
		// A kept-alive connection reset before any answer: a dead instance
		// shows itself so before it refuses. A request that may be sent
		// again tries the instances not known to refuse (one of them
		// refusing a new connection completes the evidence).
	default:
		return nil
	}
	var nb *Backend
	switch {
	case np != nil:
		nb = np.Pick()
	case rt.colorFailing != nil && rt.snap.Load().active == p:
		// Another instance may have reset a kept-alive connection rather
		// than refused a new one: it is not known to refuse yet.
		np = p
		for _, o := range p.backends {
			if o != b && o.up.Load() && !o.refusing.Load() {
				nb = o
				break
			}
		}
	}
	if nb != nil {
		np.metrics.retried()
	}
	return nb
}
