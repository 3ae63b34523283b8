// Package etcdstore keeps ACME accounts, keys and certificates in etcd, so
// that a fleet of proxies sharing one etcd (BLUEGREEN_STATE=etcd://…)
// shares its certificates: the replica that holds the lock for a name
// orders it, every replica loads and serves it, and any replica can answer
// the CA's HTTP-01 validation (the challenge is stored here too).
//
// It implements certmagic.Storage. Keys live under prefix+"data/", their
// modification times under prefix+"meta/", locks under prefix+"locks/".
package etcdstore

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Storage is a certmagic.Storage on etcd. Safe for concurrent use.
type Storage struct {
	cli    *clientv3.Client
	prefix string
	ttl    int // lock lease, seconds: a crashed holder's lock expires after it

	mu    sync.Mutex
	locks map[string]*heldLock
}

type heldLock struct {
	sess *concurrency.Session
	mu   *concurrency.Mutex
}

var _ certmagic.Storage = (*Storage)(nil)

// New stores under prefix (e.g. "/bluegreen/acme/") with cli.
func New(cli *clientv3.Client, prefix string) *Storage {
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Storage{cli: cli, prefix: prefix, ttl: 30, locks: map[string]*heldLock{}}
}

func (s *Storage) data(key string) string { return s.prefix + "data/" + strings.Trim(key, "/") }
func (s *Storage) meta(key string) string { return s.prefix + "meta/" + strings.Trim(key, "/") }

// Store writes value and its modification time in one transaction.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.data(key), string(value)),
		clientv3.OpPut(s.meta(key), now),
	).Commit()
	if err != nil {
		return fmt.Errorf("etcdstore: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value of key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.data(key))
	if err != nil {
		return nil, fmt.Errorf("etcdstore: load %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcdstore: %s: %w", key, fs.ErrNotExist)
	}
	return resp.Kvs[0].Value, nil
}

// Delete removes key and, when key is a directory, everything under it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	dir := strings.Trim(key, "/") + "/"
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpDelete(s.data(key)), clientv3.OpDelete(s.meta(key)),
		clientv3.OpDelete(s.prefix+"data/"+dir, clientv3.WithPrefix()),
		clientv3.OpDelete(s.prefix+"meta/"+dir, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("etcdstore: delete %s: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a value or a directory.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List returns the keys under dir: its direct children, or with recursive
// every value below it.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	base := strings.Trim(dir, "/")
	p := s.prefix + "data/"
	if base != "" {
		p += base + "/"
	}
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: list %s: %w", dir, err)
	}
	seen := map[string]bool{}
	var out []string
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), p)
		if !recursive {
			rest, _, _ = strings.Cut(rest, "/")
		}
		k := path.Join(base, rest)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("etcdstore: %s: %w", dir, fs.ErrNotExist)
	}
	sort.Strings(out)
	return out, nil
}

// Stat describes key: a value, or a directory (a prefix of values).
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.data(key)), clientv3.OpGet(s.meta(key)),
		clientv3.OpGet(s.data(key)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("etcdstore: stat %s: %w", key, err)
	}
	val, mt, dir := resp.Responses[0].GetResponseRange(), resp.Responses[1].GetResponseRange(), resp.Responses[2].GetResponseRange()
	switch {
	case len(val.Kvs) > 0:
		ki := certmagic.KeyInfo{Key: key, Size: int64(len(val.Kvs[0].Value)), IsTerminal: true}
		if len(mt.Kvs) > 0 {
			ki.Modified, _ = time.Parse(time.RFC3339Nano, string(mt.Kvs[0].Value))
		}
		return ki, nil
	case dir.Count > 0:
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("etcdstore: %s: %w", key, fs.ErrNotExist)
}

// Lock takes the fleet-wide lock name, waiting until it is free or ctx
// ends. The lock rides on a lease: if its holder dies, it is released
// after the lease's TTL.
func (s *Storage) Lock(ctx context.Context, name string) error {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(s.ttl), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return fmt.Errorf("etcdstore: lock %s: %w", name, err)
	}
	m := concurrency.NewMutex(sess, s.prefix+"locks/"+strings.Trim(name, "/"))
	if err := m.Lock(ctx); err != nil {
		sess.Close()
		return fmt.Errorf("etcdstore: lock %s: %w", name, err)
	}
	s.mu.Lock()
	s.locks[name] = &heldLock{sess: sess, mu: m}
	s.mu.Unlock()
	return nil
}

// Unlock releases a lock taken by Lock in this process.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("etcdstore: unlock %s: not locked here", name)
	}
	err := l.mu.Unlock(ctx)
	l.sess.Close()
	if err != nil {
		return fmt.Errorf("etcdstore: unlock %s: %w", name, err)
	}
	return nil
}

// String names the storage in certmagic's logs and its cache keys.
func (s *Storage) String() string { return "etcd:" + s.prefix }
