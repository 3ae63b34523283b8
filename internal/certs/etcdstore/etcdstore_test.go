package etcdstore

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

func client(t *testing.T) *clientv3.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := etcdtest.Start(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoints()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestStorage(t *testing.T) {
	s := New(client(t), "/bg/acme")
	ctx := context.Background()
	if _, err := s.Load(ctx, "certificates/a/a.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	before := time.Now().Add(-time.Second)
	for _, k := range []string{"certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key", "certificates/ca/b.test/b.test.crt", "acme/account.json"} {
		if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.Load(ctx, "certificates/ca/a.test/a.test.key"); err != nil || string(v) != "v:certificates/ca/a.test/a.test.key" {
		t.Fatalf("load: %q %v", v, err)
	}
	ki, err := s.Stat(ctx, "certificates/ca/a.test/a.test.crt")
	if err != nil || !ki.IsTerminal || ki.Size != int64(len("v:certificates/ca/a.test/a.test.crt")) || ki.Modified.Before(before) {
		t.Fatalf("stat: %+v %v", ki, err)
	}
	if ki, err := s.Stat(ctx, "certificates/ca"); err != nil || ki.IsTerminal {
		t.Fatalf("stat dir: %+v %v", ki, err)
	}
	if !s.Exists(ctx, "certificates") || s.Exists(ctx, "certificates/ca/c.test") {
		t.Fatal("exists")
	}
	if l, err := s.List(ctx, "certificates/ca", false); err != nil || !slices.Equal(l, []string{"certificates/ca/a.test", "certificates/ca/b.test"}) {
		t.Fatalf("list: %v %v", l, err)
	}
	if l, err := s.List(ctx, "certificates", true); err != nil || len(l) != 3 {
		t.Fatalf("list recursive: %v %v", l, err)
	}
	if err := s.Delete(ctx, "certificates/ca/a.test"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/ca/a.test/a.test.crt") || !s.Exists(ctx, "certificates/ca/b.test/b.test.crt") {
		t.Fatal("delete of a directory")
	}
}

// Two replicas: the second waits for the first's lock.
func TestLockIsExclusiveAcrossReplicas(t *testing.T) {
	cli := client(t)
	a, b := New(cli, "/bg/acme/"), New(cli, "/bg/acme/")
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_a.test") }()
	select {
	case err := <-got:
		t.Fatalf("second replica took a held lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// Another name is independent.
	if err := b.Lock(ctx, "issue_cert_b.test"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lock not handed over")
	}
	for _, n := range []string{"issue_cert_a.test", "issue_cert_b.test"} {
		if err := b.Unlock(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Unlock(ctx, "never"); err == nil {
		t.Fatal("unlock of a lock never taken")
	}
	// A held lock honours ctx.
	a.Lock(ctx, "x")
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := b.Lock(tctx, "x"); err == nil {
		t.Fatal("lock taken while held")
	}
	a.Unlock(ctx, "x")
}
