package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/stats"
)

// The request pipeline, the same for both codecs (the fast HTTP/1.1 codec
// in fast.go and proxy/h1, net/http in router.go and retry.go):
//
//	route (snapshot + preview      Router.route         the colour of a request
//	  + rollout weight)
//	pick                           Pool.Pick
//	attempt, retry                 Pool.attemptFailed   fault.go: whose fault; retryPolicy: retry or not
//	finish(outcome)                Router.finish        what is counted and logged
//
// The codecs only read request heads, send, read response heads and relay
// bodies; every decision about a request is taken here.

// route is where the colour of a request is chosen: the active colour of
// the routing snapshot, or the idle colour for a preview request, or for a
// client that a progressive rollout puts on the idle colour (its rollout
// key hashes below the weight, see weight.go; a request without a key stays
// on the active colour). A request loads the snapshot once.
func (rt *Router) route(preview bool, key []byte) *Pool {
	s := rt.snap.Load()
	if preview || s.weight > 0 && len(key) > 0 && onTarget(key, s.weight) {
		return s.idle
	}
	return s.active
}

// previewable reports whether preview routing is configured at all.
func (rt *Router) previewable() bool { return rt.previewHeader != "" || rt.previewCookie != "" }

// outcome is how a request ended, whichever codec carried it. finish
// counts and logs it.
type outcome struct {
	pool      *Pool
	b         *Backend // the picked instance (in-flight accounting); nil: none was available
	inst      *Backend // the instance of the last attempt
	method    string
	path      string // as the client sent it, without the query; set when logged
	remote    string
	proto     string // the client's protocol version, as "HTTP/1.1" or "HTTP/2.0"
	start     time.Time
	status    int // what the client got; 499 when it left first
	fault     fault
	kind      string // the client error kind or the instance error kind
	err       error
	longLived bool // an upgrade or an event stream: its duration is not a response time
	// broken: the instance broke off its answer's body after the head was
	// relayed (a reset, an early close, a stall past the upstream
	// timeout). The client keeps the status it got, but the request is
	// evidence against the colour, as a 5xx is (proxy/stats).
	broken bool
	// clientCounted: the client's fault was counted where it was found (an
	// HTTP/2 protocol violation, by the codec), not again by finish.
	clientCounted bool
}

// evidence is what the request says of its colour, for the traffic
// statistics that rollout analysis and the status page read: an
// instance's fault for a 5xx or a body the instance broke off, the
// client's for a 499, nothing for the proxy's own failures.
func (o *outcome) evidence() stats.Fault {
	switch {
	case o.fault == localFault:
		return stats.FaultNone // no evidence against the colour
	case o.broken && o.fault == noFault:
		return stats.FaultInstance
	}
	return stats.FaultOf(o.status)
}

// fail records the verdict on a failed request in o.
func (o *outcome) fail(v verdict, b *Backend, err error) {
	o.status, o.fault, o.kind, o.inst, o.err = v.status, v.fault, v.kind, b, err
}

// finish is where every request ends: it counts the status
// (bluegreen_requests_total), client faults (bluegreen_client_errors_total;
// instance faults were counted per attempt by attemptFailed), ends the
// in-flight accounting and the duration, and writes the logs.
func (rt *Router) finish(o *outcome) {
	p := o.pool
	p.metrics.count(o.method, o.status)
	switch o.fault {
	case clientFault:
		if !o.clientCounted {
			rt.metrics.clientError(o.kind)
		}
	case instanceFault:
		rt.log.Warn("upstream error", "color", p.color, "instance", o.inst.name, "kind", o.kind,
			"method", o.method, "path", o.path, "status", o.status, "err", o.err)
	case localFault:
		rt.metrics.localError(o.kind)
		if ok, held := rt.localLog.Allow(); ok {
			rt.log.Error("no connection to the instance: the proxy is out of a resource of its own", "color", p.color,
				"instance", o.inst.name, "kind", o.kind, "method", o.method, "status", o.status, "err", o.err,
				"held_back", held)
		}
	}
	if o.b == nil {
		rt.record(p, o.status, o.evidence(), time.Time{}, -1, true)
		return
	}
	elapsed := p.end(o.b, o.start, o.longLived)
	rt.record(p, o.status, o.evidence(), o.start, elapsed, o.longLived)
	if rt.access != nil {
		inst := o.inst
		if inst == nil {
			inst = o.b
		}
		rt.access.LogAttrs(context.Background(), slog.LevelInfo, "request",
			slog.String("method", o.method),
			slog.String("path", o.path),
			slog.Int("status", o.status),
			slog.String("color", p.color),
			slog.String("instance", inst.name),
			slog.Duration("duration", elapsed),
			slog.String("remote", o.remote),
			slog.String("proto", o.proto))
	}
}

// begin counts a request in flight on b, an instance of p.
func (p *Pool) begin(b *Backend) {
	b.inflight.Add(1)
	if cm := p.metrics; cm != nil {
		cm.inflight.Inc()
	}
}

// end undoes begin and observes the request's duration, unless it was a
// long-lived connection (an upgrade or an event stream). It returns the
// duration.
func (p *Pool) end(b *Backend, start time.Time, longLived bool) time.Duration {
	b.inflight.Add(-1)
	elapsed := time.Since(start)
	if cm := p.metrics; cm != nil {
		cm.inflight.Dec()
		if !longLived {
			cm.duration.Observe(elapsed.Seconds())
		}
	}
	return elapsed
}

// observe feeds the head of an instance's answer to outlier detection:
// 5xx is a failure. An answer below 500 clears the instance's evidence
// marks (colorfail.go), but is a success only once its body has come
// whole (bodyEnded): an instance that breaks its answers off after their
// heads fails every request it serves, and a success counted at each head
// kept it from ever reaching the failures in a row that eject it.
func (b *Backend) observe(code int) {
	b.answered(code) // colorfail.go
	if code >= 500 {
		b.failedAnswer()
	}
}

// bodyEnded feeds the end of an answer's body to outlier detection: an
// answer below 500 whose body came whole is a success; one the instance
// broke off (err, after the head was relayed) is charged to it under
// classify's kind, which it returns, and is a failure, as a 5xx is. A
// body the client cut is neither.
func (b *Backend) bodyEnded(code int, err error, clientCut bool) (kind string) {
	switch {
	case err != nil:
		_, kind = classify(err)
		b.errs.inc(kind)
		b.failedAnswer()
	case code < 500 && !clientCut:
		b.succeeded()
	}
	return kind
}

// attempt describes a failed attempt for attemptFailed.
type attempt struct {
	method   string
	hasBody  bool // the request has a body
	bodySent bool // some of it may have left (it cannot be sent again)
	firstTry bool
	try      int       // attempts before this one (colorfail.go bounds its retries with it)
	start    time.Time // when the request was routed, or just after (colorfail.go)
}

// attemptFailed is the one place an attempt's failure is judged: whose fault
// it is (judge), what the instance is charged with (its error counter and
// outlier detection, only for its own faults), and whether to retry
// (retryPolicy). It returns the verdict and the instance to try next (nil:
// none) and whether that needs a fresh connection.
func (p *Pool) attemptFailed(ctx context.Context, b *Backend, err error, a attempt) (v verdict, next *Backend, fresh bool) {
	v = judge(ctx, err)
	if v.fault != instanceFault {
		return v, nil, false // the client's doing or the proxy's own: nobody is charged, nothing is retried
	}
	b.errs.inc(v.kind)
	b.failedAttempt(v.kind) // colorfail.go: outlier detection and the data plane's evidence
	if !a.firstTry || !retryPolicy(a.method, a.hasBody, a.bodySent, v.kind) {
		// The active colour may just have been found failing and rolled
		// back: a refused request then goes to the new active colour.
		return v, b.rt.failoverTarget(p, b, v.kind, a), false
	}
	next = p.pickOther(b)
	if next == nil && v.kind != KindDial {
		next, fresh = b, true // a reset kept-alive connection: a fresh one to the same instance
	}
	if next == nil {
		return v, b.rt.failoverTarget(p, b, v.kind, a), false
	}
	if next != nil {
		p.metrics.retried()
	}
	return v, next, fresh
}

// attemptOver is attemptFailed for the codecs' attempt loops: when no
// retry follows, it records the verdict in o and finishes the request
// (path gives the request's path for the log of an instance's fault). It
// returns the instance to try next and whether that needs a fresh
// connection; nil: the request is finished.
func (rt *Router) attemptOver(o *outcome, b *Backend, err error, a attempt, path func() string) (*Backend, bool) {
	v, next, fresh := o.pool.attemptFailed(context.Background(), b, err, a)
	if next != nil {
		return next, fresh
	}
	o.fail(v, b, err)
	if o.path == "" && o.fault == instanceFault {
		o.path = path()
	}
	rt.finish(o)
	return nil, false
}

// retryPolicy decides, for both codecs, whether a failed request may be
// sent again: a refused connection sent nothing, so any request whose body
// was not read yet may go elsewhere; after a reset before any response
// byte, only an idempotent request without a body may.
func retryPolicy(method string, hasBody, bodySent bool, kind string) bool {
	switch kind {
	case KindDial:
		return !bodySent
	case KindReset:
		if hasBody {
			return false
		}
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
			return true
		}
	}
	return false
}
