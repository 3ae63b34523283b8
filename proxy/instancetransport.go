package proxy

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// instanceTransport is one instance's http.Transport, for the requests the
// direct leg does not take (bodies, upgrades, Expect; every request to an
// https instance). Its pool, like the fast codec's and the direct leg's,
// follows what the instance's IdleLimit has learned of its keep-alive
// timeout, and teaches it: the Keep-Alive field of an answer, and a pooled
// connection the instance closed under a request. A Transport's
// IdleConnTimeout cannot change while it is in use, so a changed limit
// swaps in a fresh Transport; the one it replaces has its idle
// connections closed, and closes the ones its requests still in flight
// give back. A shorter limit is taken at once; a longer one (the instance
// came back up and was forgotten, or it announces different timeouts)
// at most once per relaxEvery, so that an instance whose answers
// disagree costs a new Transport, and new connections, now and then
// rather than on every request.
type instanceTransport struct {
	cfg   TransportConfig
	limit *h1.IdleLimit
	now   func() time.Time
	mu    sync.Mutex // serialises swaps
	cur   atomic.Pointer[limitedTransport]
}

type limitedTransport struct {
	t    *http.Transport
	idle time.Duration // the IdleConnTimeout t was built with
	at   time.Time     // when it was built
}

// relaxEvery is how often an instance's Transport may be replaced by one
// with a longer idle timeout.
const relaxEvery = 10 * time.Second

func newInstanceTransport(cfg TransportConfig, limit *h1.IdleLimit, now func() time.Time) *instanceTransport {
	it := &instanceTransport{cfg: cfg, limit: limit, now: now}
	it.cur.Store(&limitedTransport{t: NewTransport(cfg), idle: cfg.IdleConnTimeout, at: now()})
	return it
}

// transport returns the Transport for the limit in force now.
func (it *instanceTransport) transport() *http.Transport {
	want := it.limit.Limit(it.cfg.IdleConnTimeout)
	if c := it.cur.Load(); c.idle == want || want > c.idle && it.now().Sub(c.at) < relaxEvery {
		return c.t
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	old := it.cur.Load()
	now := it.now()
	if old.idle == want || want > old.idle && now.Sub(old.at) < relaxEvery {
		return old.t
	}
	cfg := it.cfg
	cfg.IdleConnTimeout = want
	t := NewTransport(cfg)
	it.cur.Store(&limitedTransport{t: t, idle: want, at: now})
	old.t.CloseIdleConnections()
	return t
}

// CloseIdleConnections closes the pooled connections of the Transport in
// force.
func (it *instanceTransport) CloseIdleConnections() {
	it.cur.Load().t.CloseIdleConnections()
}

// RoundTrip sends req through the Transport in force, noting how long the
// connection it got had been idle: a request that fails on a pooled
// connection the instance closed before answering teaches the limit that
// age.
func (it *instanceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var got httptrace.GotConnInfo
	ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { got = info },
	})
	res, err := it.transport().RoundTrip(req.WithContext(ctx))
	if err != nil {
		if got.Reused && got.WasIdle && closedByPeer(err) && req.Context().Err() == nil {
			it.limit.ClosedAfter(got.IdleTime)
		}
		return nil, err
	}
	if v := res.Header["Keep-Alive"]; len(v) > 0 {
		it.limit.KeepAlive([]byte(v[0]))
	}
	return res, nil
}

// closedByPeer reports an error that says the instance closed the
// connection: what the pipeline counts as a reset (classify: its end, a
// reset, a write into a closed connection), or the Transport's own close
// of it on seeing one of those.
func closedByPeer(err error) bool {
	_, kind := classify(err)
	return kind == KindReset || errors.Is(err, net.ErrClosed)
}
