// Package etcdtest runs a real etcd cluster inside a test process, with
// the embedded server of go.etcd.io/etcd/server/v3, on loopback ports.
// Members can be killed (a hard stop, no leadership hand-over) and
// restarted on their data, to test what a fleet does when etcd fails.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a running etcd cluster. Its methods are for the test goroutine.
type Cluster struct {
	t       testing.TB
	members []*member
	opts    Options
}

// Options make a cluster that serves clients over TLS and checks who they
// are. The zero value is plain HTTP without authentication.
type Options struct {
	// CA, when set, makes the members serve clients over TLS with a
	// certificate it issues (for 127.0.0.1 and localhost) and require a
	// client certificate it signed (mutual TLS).
	CA *CA
	// Auth, when set, enables etcd's RBAC authentication (needs CA): a root
	// user, and User with Password allowed to read and write Prefix and
	// everything under it.
	Auth *Auth
}

// Auth is the user a cluster with Options.Auth creates.
type Auth struct{ User, Password, Prefix string }

type member struct {
	name               string
	dir                string
	clientURL, peerURL url.URL
	initial            string
	tls                transport.TLSInfo
	e                  *embed.Etcd
	closed             chan struct{} // closed when the last stopped server has released its ports
}

// Start starts an n-member cluster and waits until it has a leader. The
// cluster is stopped when the test ends. Under -short the test is skipped.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with TLS and authentication as opts say.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real etcd cluster (skipped with -short)")
	}
	c := &Cluster{t: t, opts: opts}
	var initial []string
	scheme := "http"
	var tlsInfo transport.TLSInfo
	if opts.CA != nil {
		scheme = "https"
		p := opts.CA.IssueValid("etcd-server", "127.0.0.1", "localhost")
		tlsInfo = transport.TLSInfo{CertFile: p.Cert, KeyFile: p.Key, TrustedCAFile: opts.CA.File, ClientCertAuth: true}
	}
	for i := range n {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       t.TempDir(),
			clientURL: url.URL{Scheme: scheme, Host: freeAddr(t)},
			peerURL:   url.URL{Scheme: "http", Host: freeAddr(t)},
			tls:       tlsInfo,
		}
		initial = append(initial, m.name+"="+m.peerURL.String())
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.initial = strings.Join(initial, ",")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.members {
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	t.Cleanup(c.stop)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("etcd member %d: %v", i, err)
		}
	}
	if opts.Auth != nil {
		if err := c.enableAuth(); err != nil {
			t.Fatalf("etcd auth: %v", err)
		}
	}
	return c
}

// enableAuth creates the root user and opts.Auth's user and role, then
// turns authentication on.
func (c *Cluster) enableAuth() error {
	a := c.opts.Auth
	if c.opts.CA == nil {
		return fmt.Errorf("auth needs Options.CA")
	}
	admin := c.opts.CA.IssueValid("root")
	tlsCfg, err := (&transport.TLSInfo{CertFile: admin.Cert, KeyFile: admin.Key, TrustedCAFile: c.opts.CA.File}).ClientConfig()
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(c.Endpoints(), ","), TLS: tlsCfg, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "root-"+a.Password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, a.User); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, a.User, a.Prefix, clientv3.GetPrefixRangeEnd(a.Prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, a.User, a.Password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, a.User, a.User); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	return nil
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (m *member) start() error {
	if m.closed != nil {
		<-m.closed
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = m.initial
	cfg.ClientTLSInfo = m.tls
	// The lowest bcrypt cost: password checks at the default cost take
	// seconds in a process built with the race detector.
	cfg.BcryptCost = 4
	cfg.InitialClusterToken = "bluegreen-test"
	cfg.ClusterState = embed.ClusterStateFlagNew
	// etcd's defaults: shorter timings make elections flap on a busy
	// machine under the race detector.
	cfg.TickMs = 100
	cfg.ElectionMs = 1000
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return err
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("not ready after 30s")
	}
	m.e = e
	m.closed = nil
	return nil
}

// Endpoints returns host:port of every member, comma-separated.
func (c *Cluster) Endpoints() string {
	var hs []string
	for _, m := range c.members {
		hs = append(hs, m.clientURL.Host)
	}
	return strings.Join(hs, ",")
}

// Spec returns the store spec for prefix ("/bluegreen/test").
func (c *Cluster) Spec(prefix string) string { return "etcd://" + c.Endpoints() + prefix }

// Leader returns the index of the running member that leads, or -1.
func (c *Cluster) Leader() int {
	for i, m := range c.members {
		if m.e != nil && m.e.Server.Leader() == m.e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member leads and returns its index.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if i := c.Leader(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			c.t.Fatal("etcd cluster has no leader after 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops member i at once, as a crash would: raft stops without
// handing over the leadership. Its ports are released in the background.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	if m.e == nil {
		return
	}
	e := m.e
	m.e = nil
	e.Server.HardStop()
	m.closed = make(chan struct{})
	done := m.closed
	go func() {
		defer close(done)
		e.Close()
	}()
}

// Restart starts a killed member again on its data directory.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.e != nil {
		return
	}
	if err := m.start(); err != nil {
		c.t.Fatalf("restart etcd member %d: %v", i, err)
	}
}

// RestartAsync starts killed members again without waiting for them to be
// ready (a member alone cannot become ready without a quorum). It returns a
// function that waits for all of them.
func (c *Cluster) RestartAsync(idx ...int) (wait func()) {
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		m := c.members[i]
		if m.e != nil {
			continue
		}
		wg.Go(func() { errs[k] = m.start() })
	}
	return func() {
		c.t.Helper()
		wg.Wait()
		for k, err := range errs {
			if err != nil {
				c.t.Fatalf("restart etcd member %d: %v", idx[k], err)
			}
		}
	}
}

func (c *Cluster) stop() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		if m.e != nil {
			e := m.e
			m.e = nil
			wg.Go(e.Close)
		}
		if m.closed != nil {
			done := m.closed
			wg.Go(func() { <-done })
		}
	}
	wg.Wait()
}
