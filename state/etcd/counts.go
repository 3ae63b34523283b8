package etcd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/cryoprotect/bluegreen/state"
)

// counts is the lease and the last key of this Store's counts
// publications (see PublishCounts).
type counts struct {
	mu   sync.Mutex
	sess *concurrency.Session
	last map[string]string // replica -> key it last published
}

// countsPrefix is where the replicas publish their window counts:
// <prefix>/counts/<window>/<replica>/<lease>. The lease (in hex) makes
// each process's key its own: two replicas started with one
// BLUEGREEN_REPLICA_ID publish side by side instead of overwriting each
// other, so the analysis still counts both.
func (s *Store) countsPrefix(window string) string {
	return s.spec.Prefix + "/counts/" + window + "/"
}

// countsTTL is the lease of the publications: a replica that dies or is
// cut off from etcd has its counts removed by the cluster after this long.
func (s *Store) countsTTL() time.Duration {
	if s.opts.CountsTTL > 0 {
		return s.opts.CountsTTL
	}
	return DefaultLeaseTTL
}

// session returns the live lease of the publications, granting a new one
// when there is none or the last one was lost (expired while etcd was
// away). Called with c.mu held.
func (s *Store) session(ctx context.Context) (*concurrency.Session, error) {
	c := &s.counts
	if c.sess != nil {
		select {
		case <-c.sess.Done():
			c.sess = nil
		default:
			return c.sess, nil
		}
	}
	cli := s.client()
	if cli == nil {
		return nil, s.notConnected("publish counts")
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	secs := int((s.countsTTL() + time.Second - 1) / time.Second)
	// The session's keep-alive runs until the Store closes, not until
	// this call's context ends.
	lease, err := cli.Grant(octx, int64(secs))
	if err != nil {
		return nil, s.wrap(octx, "publish counts", err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(secs), concurrency.WithContext(s.ctx))
	if err != nil {
		return nil, s.wrap(octx, "publish counts", err)
	}
	c.sess = sess
	return sess, nil
}

// PublishCounts stores data, one replica's counts of one analysis window,
// under <prefix>/counts/<window>/<replica>/<lease>, attached to a lease this Store
// keeps alive: when the replica dies, or is cut off from etcd, the cluster
// removes the key within the lease TTL (Options.CountsTTL), so the leader
// stops counting it. The replica's key of an earlier window is removed in
// the same transaction. window and replica must not contain "/".
func (s *Store) PublishCounts(ctx context.Context, window, replica string, data []byte) error {
	if s.close.Load() {
		return fmt.Errorf("state: etcd publish counts: %w", state.ErrClosed)
	}
	if window == "" || replica == "" || strings.Contains(window, "/") || strings.Contains(replica, "/") {
		return fmt.Errorf("state: etcd publish counts: window %q and replica %q must be non-empty and without /", window, replica)
	}
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	sess, err := s.session(ctx)
	if err != nil {
		return err
	}
	key := s.countsPrefix(window) + replica + "/" + strconv.FormatInt(int64(sess.Lease()), 16)
	ops := []clientv3.Op{clientv3.OpPut(key, string(data), clientv3.WithLease(sess.Lease()))}
	if old := c.last[replica]; old != "" && old != key {
		ops = append(ops, clientv3.OpDelete(old))
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.client().Txn(octx).Then(ops...).Commit(); err != nil {
		if ctx.Err() != nil && s.ctx.Err() == nil {
			return fmt.Errorf("state: etcd publish counts: %w", ctx.Err())
		}
		return s.wrap(octx, "publish counts", err)
	}
	if c.last == nil {
		c.last = map[string]string{}
	}
	c.last[replica] = key
	return nil
}

// WithdrawCounts removes the replica's last publication (a rollout ended).
func (s *Store) WithdrawCounts(ctx context.Context, replica string) error {
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.last[replica]
	if old == "" {
		return nil
	}
	cli := s.client()
	if cli == nil {
		return s.notConnected("withdraw counts")
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := cli.Delete(octx, old); err != nil {
		return s.wrap(octx, "withdraw counts", err)
	}
	delete(c.last, replica)
	return nil
}

// ReadCounts returns every live publication of window with a linearizable
// read: what it returns was stored when the read was served, and the keys
// of replicas whose lease expired are gone. This Store's own publication
// is marked Own; another process's under the same replica id is not.
func (s *Store) ReadCounts(ctx context.Context, window string) ([]state.Counts, error) {
	if s.close.Load() {
		return nil, fmt.Errorf("state: etcd read counts: %w", state.ErrClosed)
	}
	cli := s.client()
	if cli == nil {
		return nil, s.notConnected("read counts")
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	prefix := s.countsPrefix(window)
	resp, err := cli.Get(octx, prefix, clientv3.WithPrefix())
	if err != nil {
		if ctx.Err() != nil && s.ctx.Err() == nil {
			return nil, fmt.Errorf("state: etcd read counts: %w", ctx.Err())
		}
		return nil, s.wrap(octx, "read counts", err)
	}
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	out := make([]state.Counts, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		// A key without the lease is an older release's <replica>.
		replica, _, _ := strings.Cut(strings.TrimPrefix(key, prefix), "/")
		out = append(out, state.Counts{Replica: replica, Own: s.counts.last[replica] == key, Data: kv.Value})
	}
	return out, nil
}

// closeCounts revokes the publications' lease, so the leader stops
// counting this replica at once rather than after the TTL.
func (s *Store) closeCounts() {
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		closeSession(c.sess)
		c.sess = nil
	}
}
