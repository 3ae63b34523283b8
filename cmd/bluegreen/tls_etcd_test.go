//go:build !noetcd

package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/cryoprotect/bluegreen/internal/certs/etcdstore"
	"github.com/cryoprotect/bluegreen/state"
	"github.com/cryoprotect/bluegreen/state/etcd"
	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

// With the etcd state store, ACME certificates go to etcd under the
// state's prefix; with the file store, to BLUEGREEN_ACME_STORAGE.
func TestACMEFleetStoreFollowsTheStateStore(t *testing.T) {
	fs, err := state.Open("file:" + filepath.Join(t.TempDir(), "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	if s := acmeFleetStore(fs); s != nil {
		t.Fatalf("file state store: %v", s)
	}
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := etcdtest.Start(t, 1)
	es, err := etcd.Open(context.Background(), c.Spec("/bg"), etcd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	s, ok := acmeFleetStore(es).(*etcdstore.Storage)
	if !ok || s.String() != "etcd:/bg/acme/" {
		t.Fatalf("etcd state store: %v", s)
	}
	// serve wraps the etcd store in the replica's local state cache.
	cached := state.NewCachedStore(es, nil, nil, slog.New(slog.DiscardHandler))
	if s, ok := acmeFleetStore(cached).(*etcdstore.Storage); !ok || s.String() != "etcd:/bg/acme/" {
		t.Fatalf("etcd state store behind the state cache: %v", s)
	}
}
