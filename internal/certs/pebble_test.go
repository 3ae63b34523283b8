package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryoprotect/bluegreen/internal/certs/certtest"
	"github.com/cryoprotect/bluegreen/internal/certs/etcdstore"
	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

type acmeFixture struct {
	*fixture
	plainAddr string
	pebble    *certtest.Pebble
	// run starts the manager where the test does (restarts); stop ends
	// it, before the test's end.
	run, stop func()
}

// startACME runs a plain listener (with the HTTP-01 handler) and a TLS
// listener, Pebble validating against them, and the manager ordering
// "localhost" from it.
func startACME(t *testing.T, http01, tlsalpn01 bool, validity time.Duration, ratio float64) *acmeFixture {
	t.Helper()
	certtest.PebbleBin(t)
	plainLn, tlsLn := listen(t), listen(t)
	p := certtest.StartPebble(t, certtest.Port(plainLn.Addr().String()), certtest.Port(tlsLn.Addr().String()), validity)
	ac := &ACME{Storage: t.TempDir(), DisableTLSALPN: !tlsalpn01, RenewalWindowRatio: ratio}
	if !http01 {
		ac.HTTPAddr = "-"
	}
	return runACME(t, p, plainLn, tlsLn, ac)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// runACME serves plainLn and tlsLn with a manager ordering "localhost"
// from p; ac carries the options (HTTPAddr "-": no HTTP-01).
func runACME(t *testing.T, p *certtest.Pebble, plainLn, tlsLn net.Listener, ac *ACME) *acmeFixture {
	t.Helper()
	a := &acmeFixture{fixture: &fixture{logs: &syncBuf{}}, plainAddr: plainLn.Addr().String(), pebble: p}
	a.m, _ = NewMetrics(prometheus.NewRegistry())
	log := slog.New(slog.NewTextHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ac.Domains, ac.CA, ac.Roots = []string{"localhost"}, p.Dir, p.APIRoots
	ac.TLSAddr, ac.RenewCheckInterval = tlsLn.Addr().String(), 500*time.Millisecond
	if ac.HTTPAddr == "-" {
		ac.HTTPAddr = ""
	} else {
		ac.HTTPAddr = plainLn.Addr().String()
	}
	var err error
	a.mgr, err = New(Config{ACME: ac, Metrics: a.m, Log: log, PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.addr = tlsLn.Addr().String()
	plain := &http.Server{Handler: a.mgr.HTTPChallenge(http.NotFoundHandler()), ReadHeaderTimeout: 5 * time.Second}
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.Proto) }),
		TLSConfig: a.mgr.TLSConfig(), ErrorLog: a.mgr.ErrorLog(log), ReadHeaderTimeout: 5 * time.Second,
	}
	go plain.Serve(plainLn)
	go srv.ServeTLS(tlsLn, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.mgr.Run(ctx); close(done) }()
	a.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(func() {
		a.stop()
		srv.Close()
		plain.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", a.logs)
		}
	})
	return a
}

// waitServed waits until the TLS listener serves a certificate for
// localhost that verifies against Pebble's root and satisfies ok.
func (a *acmeFixture) waitServed(t *testing.T, within time.Duration, ok func(*x509.Certificate) bool) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		leaf, err := certtest.Served(a.addr, "localhost", a.pebble.Roots)
		if err == nil && ok(leaf) {
			return leaf
		}
		if time.Now().After(deadline) {
			t.Fatalf("no valid certificate from Pebble within %v: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func orders(m *Metrics, r string) float64 { return testutil.ToFloat64(m.orders.WithLabelValues(r)) }

func TestACMEHTTP01(t *testing.T) {
	a := startACME(t, true, false, time.Hour, 0)
	leaf := a.waitServed(t, 60*time.Second, func(*x509.Certificate) bool { return true })
	if orders(a.m, "obtained") != 1 || leaf.DNSNames[0] != "localhost" {
		t.Fatalf("obtained %v, names %v", orders(a.m, "obtained"), leaf.DNSNames)
	}
	// certmagic's own records reach the proxy's logger, at debug level.
	if logs := a.logs.String(); !strings.Contains(logs, "level=DEBUG msg=\"trying to solve challenge\" component=certmagic") ||
		!strings.Contains(logs, "level=INFO msg=\"ACME certificate obtained\"") {
		t.Fatalf("logs:\n%s", logs)
	}
	// The expiry metric follows the served certificate.
	eventually(t, func() bool {
		return testutil.ToFloat64(a.m.expiry.WithLabelValues("localhost")) == float64(leaf.NotAfter.Unix())
	}, func() string { return "expiry metric not set" })
	// curl trusting Pebble's root, over HTTP/2.
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl missing (.ci/apt/tls.txt)")
	}
	root := filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(root, a.pebble.Root, 0o600)
	out, err := exec.Command("curl", "-sS", "--http2", "--cacert", root, "https://localhost:"+fmt.Sprint(certtest.Port(a.addr))+"/").CombinedOutput()
	if err != nil || string(out) != "ok HTTP/2.0" {
		t.Fatalf("curl: %v %q", err, out)
	}
}

func TestACMETLSALPN01(t *testing.T) {
	a := startACME(t, false, true, time.Hour, 0)
	a.waitServed(t, 60*time.Second, func(*x509.Certificate) bool { return true })
	if orders(a.m, "obtained") != 1 {
		t.Fatalf("obtained %v", orders(a.m, "obtained"))
	}
}

// After a restart the certificates in storage are served from the first
// handshake on: LoadStored loads them, before Run manages the domains in
// the background. One due for renewal is served too: Run renews it at once
// and serves its successor; with the CA down it keeps serving it. Both
// restarts make it due explicitly (a renewal window of 0.9999 of its
// lifetime), whatever its ARI says.
func TestACMERestartWithStoredCertificate(t *testing.T) {
	certtest.PebbleBin(t)
	plainLn, tlsLn := listen(t), listen(t)
	p := certtest.StartPebble(t, certtest.Port(plainLn.Addr().String()), certtest.Port(tlsLn.Addr().String()), time.Hour)
	storage := t.TempDir()
	a := runACME(t, p, plainLn, tlsLn, &ACME{Storage: storage, DisableTLSALPN: true})
	first := a.waitServed(t, 60*time.Second, func(*x509.Certificate) bool { return true })
	// The first instance stops managing; its listeners, where Pebble
	// validates, keep answering the challenges of the restarted ones.
	a.stop()

	restart := func() *acmeFixture {
		m, _ := NewMetrics(prometheus.NewRegistry())
		logs := &syncBuf{}
		mgr, err := New(Config{
			ACME:    &ACME{Domains: []string{"localhost"}, CA: p.Dir, Roots: p.APIRoots, Storage: storage, RenewalWindowRatio: 0.9999},
			Metrics: m, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		mgr.LoadStored(context.Background())
		ln, err := tls.Listen("tcp", "127.0.0.1:0", mgr.TLSConfig())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		b := &acmeFixture{fixture: &fixture{mgr: mgr, addr: ln.Addr().String(), m: m, logs: logs}, pebble: p}
		ran := false
		b.run = func() { ran = true; go func() { mgr.Run(ctx); close(done) }() }
		b.stop = sync.OnceFunc(func() {
			cancel()
			if ran {
				<-done
			} else {
				mgr.acme.stop()
			}
			ln.Close()
		})
		t.Cleanup(func() {
			b.stop()
			if t.Failed() {
				t.Logf("logs of the restarted manager:\n%s", logs)
			}
		})
		return b
	}
	servedBeforeRun := func(b *acmeFixture, want *x509.Certificate) {
		t.Helper()
		if leaf, err := certtest.Served(b.addr, "localhost", p.Roots); err != nil || !leaf.Equal(want) {
			t.Fatalf("before Run: %v, %v (want serial %v)", leaf, err, want.SerialNumber)
		}
	}

	// The CA up: the stored certificate before Run, its successor once
	// Run renewed it (the maintenance loop, every 10 minutes, is too late).
	b := restart()
	servedBeforeRun(b, first)
	b.run()
	second := b.waitServed(t, 20*time.Second, func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(first.SerialNumber) != 0 })
	eventually(t, func() bool { return orders(b.m, "renewed") == 1 }, func() string { return "renewal not counted" })
	b.stop()

	// The CA down: the stored certificate before Run, and still after its
	// renewal failed.
	p.Stop()
	b = restart()
	servedBeforeRun(b, second)
	b.run()
	deadline := time.Now().Add(30 * time.Second)
	for orders(b.m, "failed") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no failed renewal counted with the CA down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leaf, err := certtest.Served(b.addr, "localhost", p.Roots); err != nil || !leaf.Equal(second) || orders(b.m, "renewed") != 0 {
		t.Fatalf("after the failed renewal: %v, %v (want serial %v), renewed %v", leaf, err, second.SerialNumber, orders(b.m, "renewed"))
	}
}

// Short-lived certificates are renewed before they expire; with the CA
// down the last certificate keeps being served and the failure counts.
func TestACMERenewalAndCADown(t *testing.T) {
	a := startACME(t, true, true, 20*time.Second, 0.5)
	first := a.waitServed(t, 60*time.Second, func(*x509.Certificate) bool { return true })
	second := a.waitServed(t, 40*time.Second, func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(first.SerialNumber) != 0 })
	if !second.NotAfter.After(first.NotAfter) || time.Now().After(first.NotAfter) && orders(a.m, "renewed") < 1 {
		t.Fatalf("renewal: first until %v, second until %v", first.NotAfter, second.NotAfter)
	}
	eventually(t, func() bool { return orders(a.m, "renewed") >= 1 }, func() string { return "renewed not counted" })

	a.pebble.Stop()
	eventually2 := time.Now().Add(40 * time.Second)
	for orders(a.m, "failed") < 1 {
		if time.Now().After(eventually2) {
			t.Fatal("no failed renewal counted with the CA down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	last, err := certtest.Served(a.addr, "localhost", nil)
	if err != nil || last.Issuer.String() != second.Issuer.String() || last.NotAfter.Before(second.NotAfter) {
		t.Fatalf("with the CA down: %v, %v", last, err)
	}
	if !strings.Contains(a.logs.String(), "ACME certificate order failed") {
		t.Fatal("failure not logged")
	}
}

// A fleet: two replicas share certificates in etcd. They start together;
// one orders (it holds the lock), the CA's HTTP-01 validation reaches the
// other replica (it answers from the challenge in etcd), and both serve
// the same certificate.
func TestACMEFleetSharesCertificatesInEtcd(t *testing.T) {
	certtest.PebbleBin(t)
	cli := etcdClient(t)
	plainA, tlsA, plainB, tlsB := listen(t), listen(t), listen(t), listen(t)
	// Pebble validates at replica A's port only, as if a load balancer sent
	// the CA there, whichever replica placed the order.
	p := certtest.StartPebble(t, certtest.Port(plainA.Addr().String()), certtest.Port(tlsA.Addr().String()), time.Hour)
	var a, b *acmeFixture
	started := make(chan struct{})
	go func() {
		defer close(started)
		b = runACME(t, p, plainB, tlsB, &ACME{Store: etcdstore.New(cli, "/fleet/acme"), DisableTLSALPN: true})
	}()
	a = runACME(t, p, plainA, tlsA, &ACME{Store: etcdstore.New(cli, "/fleet/acme"), DisableTLSALPN: true})
	<-started
	ca := a.waitServed(t, 60*time.Second, func(*x509.Certificate) bool { return true })
	cb := b.waitServed(t, 60*time.Second, func(*x509.Certificate) bool { return true })
	if !ca.Equal(cb) {
		t.Fatalf("replicas serve different certificates: %v / %v", ca.SerialNumber, cb.SerialNumber)
	}
	if n := orders(a.m, "obtained") + orders(b.m, "obtained"); n != 1 {
		t.Fatalf("%v orders obtained, want 1 (a %v, b %v)", n, orders(a.m, "obtained"), orders(b.m, "obtained"))
	}
	t.Logf("replica a obtained %v, b obtained %v", orders(a.m, "obtained"), orders(b.m, "obtained"))
}

func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	c := etcdtest.Start(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoints()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
