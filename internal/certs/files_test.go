package certs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cryoprotect/bluegreen/internal/certs/certtest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type fixture struct {
	mgr  *Manager
	m    *Metrics
	logs *syncBuf
	addr string
}

// serveTLS starts an HTTPS server (net/http, as the proxy's TLS listener)
// with the manager's profile; the handler answers "ok".
func serveTLS(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{logs: &syncBuf{}}
	var err error
	if f.m, err = NewMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = f.m
	cfg.Log = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if f.mgr, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.Proto) }),
		TLSConfig: f.mgr.TLSConfig(), ErrorLog: f.mgr.ErrorLog(cfg.Log), ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.mgr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return f
}

func handshakes(m *Metrics, result string) float64 {
	return testutil.ToFloat64(m.handshakes.WithLabelValues(result))
}

func TestSNIChoosesPairAndUnknownNameGetsDefault(t *testing.T) {
	ca := certtest.NewCA(t)
	dir := t.TempDir()
	c1, k1 := ca.WritePair(t, dir, "a", "a.example.test")
	c2, k2 := ca.WritePair(t, dir, "b", "*.b.example.test", "b.example.test")
	f := serveTLS(t, Config{Pairs: []Pair{{c1, k1}, {c2, k2}}})
	for name, want := range map[string]string{
		"a.example.test": "a.example.test", "A.Example.Test": "a.example.test",
		"x.b.example.test": "*.b.example.test", "b.example.test": "*.b.example.test",
		"unknown.test": "a.example.test", // the first pair is the default
		"":             "a.example.test", // no SNI (an IP address)
	} {
		leaf, err := certtest.Served(f.addr, name, nil)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if leaf.DNSNames[0] != want {
			t.Errorf("SNI %q got %v, want %s", name, leaf.DNSNames, want)
		}
	}
	// Verified against the CA, with the matching name.
	if _, err := certtest.Served(f.addr, "x.b.example.test", ca.Pool); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return handshakes(f.m, ResultOK) == 7 },
		func() string { return fmt.Sprintf("ok handshakes %v, want 7", handshakes(f.m, ResultOK)) })
	for _, n := range []string{"a.example.test", "*.b.example.test"} {
		if v := testutil.ToFloat64(f.m.expiry.WithLabelValues(n)); v < float64(time.Now().Unix()) {
			t.Fatalf("expiry of %s = %v", n, v)
		}
	}
}

func TestBadPairsRefusedAtStart(t *testing.T) {
	ca := certtest.NewCA(t)
	dir := t.TempDir()
	c1, k1 := ca.WritePair(t, dir, "a", "a.test")
	_, k2 := ca.WritePair(t, dir, "b", "b.test")
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("this is not PEM\n"), 0o600)
	for _, tc := range []struct {
		name string
		pair Pair
		want string
	}{
		{"key of another certificate", Pair{c1, k2}, "private key does not match public key"},
		{"missing file", Pair{filepath.Join(dir, "nope.crt"), k1}, "no such file"},
		{"unreadable file (a directory)", Pair{c1, dir}, "is a directory"},
		{"non-PEM certificate", Pair{junk, k1}, "failed to find any PEM data in certificate input"},
		{"non-PEM key", Pair{c1, junk}, "failed to find any PEM data in key input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := NewMetrics(prometheus.NewRegistry())
			_, err := New(Config{Pairs: []Pair{tc.pair}, Metrics: m, Log: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if got := testutil.ToFloat64(m.reloads.WithLabelValues("error")); got != 1 {
				t.Fatalf("reload errors %v", got)
			}
		})
	}
}

// An expired certificate is served with a warning and its expiry in the
// metric (the alert fires): refusing it would take the listener down.
func TestExpiredCertificateServedWithWarning(t *testing.T) {
	ca := certtest.NewCA(t)
	dir := t.TempDir()
	c, k := ca.Leaf(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), "old.test")
	cf, kf := filepath.Join(dir, "old.crt"), filepath.Join(dir, "old.key")
	certtest.WriteAtomic(t, cf, c)
	certtest.WriteAtomic(t, kf, k)
	f := serveTLS(t, Config{Pairs: []Pair{{cf, kf}}})
	if !strings.Contains(f.logs.String(), "TLS certificate has expired") {
		t.Fatalf("no warning:\n%s", f.logs)
	}
	if v := testutil.ToFloat64(f.m.expiry.WithLabelValues("old.test")); v > float64(time.Now().Unix()) {
		t.Fatalf("expiry metric %v not in the past", v)
	}
	leaf, err := certtest.Served(f.addr, "old.test", nil)
	if err != nil || leaf.DNSNames[0] != "old.test" {
		t.Fatalf("served %v, %v", leaf, err)
	}
	if _, err := certtest.Served(f.addr, "old.test", ca.Pool); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a verifying client accepted it: %v", err)
	}
}

func TestBadNewFileKeepsOldPair(t *testing.T) {
	ca := certtest.NewCA(t)
	dir := t.TempDir()
	cf, kf := ca.WritePair(t, dir, "a", "a.test")
	f := serveTLS(t, Config{Pairs: []Pair{{cf, kf}}, PollInterval: time.Hour}) // reloads by hand (SIGHUP)
	first, _ := certtest.Served(f.addr, "a.test", ca.Pool)

	certtest.WriteAtomic(t, cf, []byte("garbage"))
	if n, err := f.mgr.Reload(); n != 0 || err == nil {
		t.Fatalf("reload of a bad file: %d, %v", n, err)
	}
	f.mgr.Reload() // the same bad content is reported once
	if got := testutil.ToFloat64(f.m.reloads.WithLabelValues("error")); got != 1 {
		t.Fatalf("reload errors %v, want 1", got)
	}
	if strings.Count(f.logs.String(), "level=ERROR msg=\"TLS certificate reload failed") != 1 {
		t.Fatalf("want one error line:\n%s", f.logs)
	}
	now, err := certtest.Served(f.addr, "a.test", ca.Pool)
	if err != nil || !now.Equal(first) {
		t.Fatalf("after a bad file: %v (same=%v)", err, now != nil && now.Equal(first))
	}
	// A good pair then replaces it.
	ca.WritePair(t, dir, "a", "a.test")
	if n, err := f.mgr.Reload(); n != 1 || err != nil {
		t.Fatalf("reload of a good pair: %d, %v", n, err)
	}
	now, _ = certtest.Served(f.addr, "a.test", ca.Pool)
	if now.Equal(first) {
		t.Fatal("still the old certificate")
	}
}

func TestTLSProfileAndHandshakeAccounting(t *testing.T) {
	ca := certtest.NewCA(t)
	cf, kf := ca.WritePair(t, t.TempDir(), "a", "a.test")
	f := serveTLS(t, Config{Pairs: []Pair{{cf, kf}}})
	dial := func(c *tls.Config) (tls.ConnectionState, error) {
		c.ServerName, c.RootCAs = "a.test", ca.Pool
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", f.addr, c)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	cs, err := dial(&tls.Config{})
	if err != nil || cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "" {
		t.Fatalf("default client: %v %x %q", err, cs.Version, cs.NegotiatedProtocol)
	}
	if cs, err = dial(&tls.Config{NextProtos: []string{"h2", "http/1.1"}}); err != nil || cs.NegotiatedProtocol != "h2" {
		t.Fatalf("ALPN: %v %q", err, cs.NegotiatedProtocol)
	}
	if cs, err = dial(&tls.Config{MaxVersion: tls.VersionTLS12}); err != nil || cs.Version != tls.VersionTLS12 ||
		cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Fatalf("TLS 1.2: %v %s", err, tls.CipherSuiteName(cs.CipherSuite))
	}
	refused := []struct {
		name string
		cfg  *tls.Config
	}{
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
		{"TLS 1.2 CBC only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}},
		{"P-384 only", &tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP384}}},
	}
	for _, r := range refused {
		if _, err := dial(r.cfg); err == nil {
			t.Errorf("%s: handshake succeeded", r.name)
		}
	}
	// Plain HTTP on the TLS port: a clear 400 (Go's answer), never plaintext service.
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	c.Close()
	if res.StatusCode != 400 || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
		t.Fatalf("plain HTTP: %d %q", res.StatusCode, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for handshakes(f.m, ResultFailed) < 3 || handshakes(f.m, ResultPlainHTTP) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("failed=%v plaintext=%v", handshakes(f.m, ResultFailed), handshakes(f.m, ResultPlainHTTP))
		}
		time.Sleep(10 * time.Millisecond)
	}
	eventually(t, func() bool { return handshakes(f.m, ResultOK) == 3 },
		func() string { return fmt.Sprintf("ok handshakes %v, want 3", handshakes(f.m, ResultOK)) })
	logs := f.logs.String()
	if strings.Contains(logs, "level=ERROR") || strings.Contains(logs, "level=WARN") {
		t.Fatalf("handshake failures logged above debug:\n%s", logs)
	}
}

// Certificate files replaced every 2 s under HTTPS load: no request fails
// and new connections get the new certificate within 5 s.
func TestFileSwapUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s load test")
	}
	ca := certtest.NewCA(t)
	dir := t.TempDir()
	cf, kf := ca.WritePair(t, dir, "a", "a.test")
	f := serveTLS(t, Config{Pairs: []Pair{{cf, kf}}, PollInterval: time.Second})
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "a.test", RootCAs: ca.Pool}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 8}
	fresh := &http.Transport{TLSClientConfig: tr.TLSClientConfig.Clone(), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var total, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			if i%2 == 1 {
				client.Transport = fresh // a handshake per request
			}
			for ctx.Err() == nil {
				res, err := client.Get("https://" + f.addr + "/")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					t.Log(err)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					failed.Add(1)
				}
			}
		})
	}
	var worst time.Duration
	swaps := 0
	for ctx.Err() == nil {
		time.Sleep(2 * time.Second)
		if ctx.Err() != nil {
			break
		}
		certPEM, keyPEM := ca.Leaf(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), "a.test")
		leaf, _ := parseFirstCert(certPEM)
		// Key first, then certificate: each rename is atomic, the pair
		// is briefly mismatched and must not be served as such.
		certtest.WriteAtomic(t, kf, keyPEM)
		certtest.WriteAtomic(t, cf, certPEM)
		swapped := time.Now()
		swaps++
		for {
			got, err := certtest.Served(f.addr, "a.test", ca.Pool)
			if err == nil && got.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				worst = max(worst, time.Since(swapped))
				break
			}
			if time.Since(swapped) > 5*time.Second {
				t.Fatalf("swap %d: new certificate not served within 5 s (err %v)", swaps, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wg.Wait()
	t.Logf("%d requests, %d failed, %d swaps, slowest pickup %v", total.Load(), failed.Load(), swaps, worst)
	if failed.Load() != 0 || swaps < 5 {
		t.Fatalf("%d failed, %d swaps", failed.Load(), swaps)
	}
}

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
