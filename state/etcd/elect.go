package etcd

import (
	"context"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultLeaseTTL is the lease of an election session: a leader that stops
// renewing it (crashed, cut off) loses the leadership after this long.
const DefaultLeaseTTL = 5 * time.Second

// Leader is one replica's candidacy in an etcd election under
// <prefix>/leader. IsLeader is safe for concurrent use and cheap (one atomic
// load). A Leader must not be copied.
type Leader struct {
	s        *Store
	id       string
	ttl      time.Duration
	onChange func(leader bool)
	leader   atomic.Bool
	done     chan struct{}
}

// Elect starts campaigning as id and keeps campaigning until ctx ends: it
// waits to become leader, stays leader while its lease is renewed, and
// campaigns again when the lease is lost. onChange (may be nil) is called
// from the campaign goroutine on every change, outside any lock. When ctx
// ends the leader resigns, so another replica takes over at once; a replica
// that dies without resigning is replaced within ttl (DefaultLeaseTTL when
// 0). Wait for the goroutine with Done.
func (s *Store) Elect(ctx context.Context, id string, ttl time.Duration, onChange func(leader bool)) *Leader {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	l := &Leader{s: s, id: id, ttl: ttl, onChange: onChange, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.run(ctx)
	}()
	return l
}

// IsLeader reports whether this replica holds the leadership now: it won
// the election, its session is alive, and a quorum answered a read sent
// less than half the lease TTL ago. The last condition makes a leader that
// is cut off from etcd stop acting as leader before its lease can expire
// on the cluster and another replica can be elected, even though it cannot
// hear that it lost: the cluster renewed the lease at most a third of the
// TTL before the cut (the client renews every TTL/3), so it expires no
// sooner than 2/3 TTL after it, while this replica steps down at most TTL/2
// after it.
func (l *Leader) IsLeader() bool { return l.leader.Load() && l.s.heardWithin(l.ttl/2) }

// Done is closed when the campaign goroutine has ended.
func (l *Leader) Done() <-chan struct{} { return l.done }

func (l *Leader) set(v bool) {
	if l.leader.Swap(v) != v {
		if v {
			l.s.log.Info("elected leader: this replica runs auto-rollback", "replica", l.id)
		} else {
			l.s.log.Warn("no longer leader", "replica", l.id)
		}
		if l.onChange != nil {
			l.onChange(v)
		}
	}
}

func (l *Leader) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.s.ctx, cancel)
	defer stop()
	key := l.s.spec.Prefix + "/leader"
	secs := int((l.ttl + time.Second - 1) / time.Second)
	for ctx.Err() == nil {
		cli := l.s.client()
		if cli == nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
		if err != nil {
			l.s.log.Debug("election: no session", "err", err)
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		el := concurrency.NewElection(sess, key)
		// Campaign returns once we lead; losing the session meanwhile
		// ends it through the session's context.
		cctx, ccancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
			case <-cctx.Done():
			}
			ccancel()
		}()
		err = el.Campaign(cctx, l.id)
		if err == nil {
			l.set(true)
			l.lead(ctx, sess)
			l.set(false)
			if ctx.Err() != nil {
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				_ = el.Resign(rctx)
				rcancel()
			}
		} else if ctx.Err() == nil {
			l.s.log.Debug("election: campaign ended", "err", err)
		}
		ccancel()
		// Close revokes the lease (bounded by the client's timeouts) so
		// a new campaign does not queue behind our own stale key.
		closeSession(sess)
		if ctx.Err() == nil {
			sleep(ctx, 100*time.Millisecond)
		}
	}
	l.set(false)
}

// lead holds the leadership until ctx ends or the session is lost. Every
// TTL/4 it reads the state key (a linearizable read, so a quorum answers
// it) to keep IsLeader's evidence fresh, and tells onChange when IsLeader
// changes because etcd stopped or started answering.
func (l *Leader) lead(ctx context.Context, sess *concurrency.Session) {
	t := time.NewTicker(max(l.ttl/4, 50*time.Millisecond))
	defer t.Stop()
	acting := l.IsLeader()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			return
		case <-t.C:
		}
		_, err := l.s.get(ctx)
		if ctx.Err() != nil {
			return
		}
		l.s.setUp(err)
		if now := l.IsLeader(); now != acting {
			acting = now
			if now {
				l.s.log.Info("etcd answers again: acting as leader", "replica", l.id)
			} else {
				l.s.log.Warn("no quorum answer for half the lease TTL: not acting as leader", "replica", l.id, "ttl", l.ttl.String())
			}
			if l.onChange != nil {
				l.onChange(now)
			}
		}
	}
}

// closeSession revokes the session's lease within a second; if etcd is
// away the lease simply expires.
func closeSession(sess *concurrency.Session) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = sess.Close()
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		sess.Orphan()
	}
}
