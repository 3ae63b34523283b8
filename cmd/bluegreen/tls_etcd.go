//go:build !noetcd

package main

import (
	"github.com/caddyserver/certmagic"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryoprotect/bluegreen/internal/certs/etcdstore"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/cryoprotect/bluegreen/state/etcd"
)

// acmeFleetStore keeps ACME certificates in etcd, next to the state, when
// the state store is etcd: one replica orders, every replica serves. nil
// otherwise (BLUEGREEN_ACME_STORAGE is used).
func acmeFleetStore(st state.Store) certmagic.Storage {
	for st != nil {
		if s, ok := st.(etcdBacked); ok {
			return etcdstore.New(s.Client(), s.Spec().Prefix+"/acme/")
		}
		w, ok := st.(interface{ Unwrap() state.Store })
		if !ok {
			return nil
		}
		st = w.Unwrap()
	}
	return nil
}

// etcdBacked is the etcd state store (a wrapper such as the state cache is
// looked through by Unwrap).
type etcdBacked interface {
	Client() *clientv3.Client
	Spec() etcd.Spec
}
