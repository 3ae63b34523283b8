package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/certs/certtest"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not PEM"), 0o600)
	base := []string{"BLUEGREEN_BLUE_URLS=http://b:1", "BLUEGREEN_GREEN_URLS=http://g:1"}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"BLUEGREEN_TLS_LISTEN=8443"}, "BLUEGREEN_TLS_LISTEN=\"8443\": expected host:port"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443"}, "BLUEGREEN_TLS_LISTEN=\":8443\": needs certificates"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8080", "BLUEGREEN_ACME_DOMAINS=a.example"}, "BLUEGREEN_TLS_LISTEN=\":8080\": must differ"},
		{[]string{"BLUEGREEN_TLS_CERT_FILE=a.crt", "BLUEGREEN_TLS_KEY_FILE=a.key"}, "BLUEGREEN_TLS_CERT_FILE=\"a.crt\": needs BLUEGREEN_TLS_LISTEN"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_TLS_CERT_FILE=a.crt,b.crt", "BLUEGREEN_TLS_KEY_FILE=a.key"}, "BLUEGREEN_TLS_KEY_FILE=\"a.key\": expected one key file for each"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=*.example.com"}, "BLUEGREEN_ACME_DOMAINS=\"*.example.com\": expected comma-separated DNS names"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=10.0.0.1"}, "BLUEGREEN_ACME_DOMAINS=\"10.0.0.1\""},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_ACME_CA=http://ca/dir"}, "BLUEGREEN_ACME_CA=\"http://ca/dir\": expected the https:// URL"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_ACME_EMAIL=nobody"}, "BLUEGREEN_ACME_EMAIL=\"nobody\""},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_ACME_CA_ROOT_FILE=" + junk}, "BLUEGREEN_ACME_CA_ROOT_FILE=\"" + junk + "\": expected a PEM file"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_ACME_CA_ROOT_FILE=" + dir + "/nope"}, "cannot read the root certificate"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_ACME_STORAGE= "}, "BLUEGREEN_ACME_STORAGE"},
		{[]string{"BLUEGREEN_HTTP_REDIRECT=yes"}, "BLUEGREEN_HTTP_REDIRECT=\"yes\": expected true or false"},
		{[]string{"BLUEGREEN_HTTP_REDIRECT=true"}, "BLUEGREEN_HTTP_REDIRECT=\"true\": needs BLUEGREEN_TLS_LISTEN"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_HSTS=forever"}, "BLUEGREEN_HSTS=\"forever\": expected a Strict-Transport-Security value"},
		{[]string{"BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example", "BLUEGREEN_H2=go"}, "BLUEGREEN_H2=\"go\": expected fast"},
	} {
		_, err := loadConfig(append(base, tc.env...), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.env, err, tc.want)
		}
	}
	cfg, err := loadConfig(append(base, "BLUEGREEN_TLS_LISTEN=:8443", "BLUEGREEN_ACME_DOMAINS=a.example, www.a.example",
		"BLUEGREEN_HSTS=max-age=31536000; includeSubDomains", "BLUEGREEN_HTTP_REDIRECT=true"), nil)
	if err != nil || len(cfg.tls.domains) != 2 || cfg.ACMEStorage != "./acme" {
		t.Fatalf("good config: %v %+v", err, cfg.tls)
	}
}

// tlsStack is serve with a TLS listener in front of demo apps.
type tlsStack struct {
	a    addrs
	ca   *certtest.CA
	logs *testkit.Buffer
	stop func() error
}

func startTLSStack(t *testing.T, blue, green string, extra ...string) *tlsStack {
	t.Helper()
	st := &tlsStack{ca: certtest.NewCA(t), logs: &testkit.Buffer{}}
	dir := t.TempDir()
	cf, kf := st.ca.WritePair(t, dir, "site", "site.test")
	env := append([]string{
		"BLUEGREEN_BLUE_URLS=" + blue, "BLUEGREEN_GREEN_URLS=" + green,
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_TLS_LISTEN=127.0.0.1:0",
		"BLUEGREEN_TLS_CERT_FILE=" + cf, "BLUEGREEN_TLS_KEY_FILE=" + kf,
		"BLUEGREEN_STATE=file:" + filepath.Join(dir, "state.json"),
		"BLUEGREEN_HEALTH_INTERVAL=50ms", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1", "BLUEGREEN_DRAIN_TIMEOUT=2s",
	}, extra...)
	cfg, err := loadConfig(env, os.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewJSONHandler(st.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { done <- serve(ctx, cfg, log, "test", func(a addrs) { ready <- a }) }()
	select {
	case st.a = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	var once sync.Once
	var stopErr error
	st.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(15 * time.Second):
				stopErr = errors.New("serve did not stop within 15s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = st.stop() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + st.a.admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", st.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return st
}

// client speaks HTTP/2 (or HTTP/1.1 with h2 false) to the TLS listener
// with at most conns connections.
func (st *tlsStack) client(h2 bool, conns int) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: "site.test", RootCAs: st.ca.Pool},
		ForceAttemptHTTP2: h2, MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (st *tlsStack) cutover(t *testing.T, to string) {
	t.Helper()
	res, err := http.Post("http://"+st.a.admin+"/admin/cutover", "application/json", strings.NewReader(fmt.Sprintf(`{"to":%q}`, to)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("cutover to %s: %d %s", to, res.StatusCode, b)
	}
}

func TestServeTLSHTTP2CutoversAndPreview(t *testing.T) {
	entered := make(chan string, 4)
	blue, _ := newApps(t, "blue", 2, entered)
	green, _ := newApps(t, "green", 2, entered)
	st := startTLSStack(t, urls(blue), urls(green), "BLUEGREEN_HSTS=max-age=31536000", "BLUEGREEN_ACCESS_LOG=true")
	url := "https://" + st.a.tls + "/"
	c := st.client(true, 4)

	// curl sees HTTP/2 200.
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl missing (.ci/apt/tls.txt)")
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, st.ca.PEM, 0o600)
	_, port, _ := net.SplitHostPort(st.a.tls)
	out, err := exec.Command("curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
		"--cacert", caFile, "--resolve", "site.test:"+port+":127.0.0.1", "https://site.test:"+port+"/").CombinedOutput()
	if err != nil || string(out) != "2 200" {
		t.Fatalf("curl --http2: %v %q", err, out)
	}

	get := func(client *http.Client, hdr ...string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		return res, err
	}
	res, err := get(c)
	if err != nil || res.ProtoMajor != 2 || res.Header.Get(app.ColorHeader) != "blue" ||
		res.Header.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Fatalf("h2: %v %+v", err, res)
	}
	if !strings.Contains(st.logs.String(), `"proto":"HTTP/2.0"`) {
		t.Fatalf("no HTTP/2 request in the access log:\n%s", st.logs)
	}
	// Preview over h2 (and over HTTP/1.1 on TLS).
	for _, h2 := range []bool{true, false} {
		res, err = get(st.client(h2, 1), "X-Bluegreen-Preview", "1")
		if err != nil || res.Header.Get(app.ColorHeader) != "green" || (res.ProtoMajor == 2) != h2 {
			t.Fatalf("preview h2=%v: %v %+v", h2, err, res)
		}
	}

	// WebSocket over HTTP/1.1 on the TLS listener (wss://).
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	ws, _, err := websocket.Dial(wctx, "wss://"+st.a.tls+"/ws", &websocket.DialOptions{HTTPClient: st.client(false, 1)})
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	if _, msg, err := ws.Read(wctx); err != nil || string(msg) != "hello from blue" {
		t.Fatalf("wss read: %q %v", msg, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	wcancel()

	// A stream in flight across the first cutover finishes on blue.
	held := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, url+"slow?d=500ms", nil)
		res, err := c.Do(req)
		if err != nil {
			held <- err.Error()
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		held <- res.Header.Get(app.ColorHeader)
	}()
	if c := <-entered; c != "blue" {
		t.Fatalf("held stream reached %s", c)
	}

	// 64 concurrent streams on 4 connections through 10 cutovers.
	total := st.cutoversUnderLoad(t, 64, func() (*http.Response, error) { return get(c) }, 2)
	if got := <-held; got != "blue" {
		t.Fatalf("the stream in flight across the cutover finished on %q, want blue", got)
	}
	if total < 640 {
		t.Fatalf("%d h2 requests across 10 cutovers, want at least 640", total)
	}
}

func TestServeTLSForwardedProtoAndRedirect(t *testing.T) {
	seen := make(chan string, 4)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			seen <- r.Header.Get("X-Forwarded-Proto")
		}
	}))
	defer echo.Close()
	st := startTLSStack(t, echo.URL, echo.URL, "BLUEGREEN_HTTP_REDIRECT=true")
	// HTTP/2, and HTTP/1.1 on the fast codec, which the proxy's server
	// runs for the TLS listener alone here (net/http serves the plain one).
	for _, h2 := range []bool{true, false} {
		res, err := st.client(h2, 1).Get("https://" + st.a.tls + "/x")
		if err != nil || res.StatusCode != 200 || (res.ProtoMajor == 2) != h2 {
			t.Fatalf("h2=%v: %v %+v", h2, err, res)
		}
		res.Body.Close()
		if p := <-seen; p != "https" {
			t.Fatalf("h2=%v: X-Forwarded-Proto %q", h2, p)
		}
	}
	// The plain listener redirects everything (ACME challenges aside).
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodPost, "http://"+st.a.public+"/a/b?c=d", nil)
	req.Host = "site.test:8080"
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	_, port, _ := net.SplitHostPort(st.a.tls)
	if want := "https://site.test:" + port + "/a/b?c=d"; res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != want {
		t.Fatalf("redirect: %d %q, want 308 %q", res.StatusCode, res.Header.Get("Location"), want)
	}
	if err := st.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestServeTLSBadPairStopsStartup(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t)
	cf, _ := ca.WritePair(t, dir, "a", "a.test")
	_, kf := ca.WritePair(t, dir, "b", "b.test")
	cfg, err := loadConfig([]string{"BLUEGREEN_BLUE_URLS=http://127.0.0.1:1", "BLUEGREEN_GREEN_URLS=http://127.0.0.1:1",
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_TLS_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + filepath.Join(dir, "state.json"),
		"BLUEGREEN_TLS_CERT_FILE=" + cf, "BLUEGREEN_TLS_KEY_FILE=" + kf}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), cfg, slog.New(slog.DiscardHandler), "test", nil)
	var se startupError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "BLUEGREEN_TLS_CERT_FILE=") || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("got %v", err)
	}
}

// Shutdown drains the TLS listener too: an HTTP/2 stream in flight finishes,
// then serve returns.
func TestServeTLSGracefulShutdownFinishesStreams(t *testing.T) {
	entered := make(chan string, 4)
	blue, _ := newApps(t, "blue", 1, entered)
	green, _ := newApps(t, "green", 1, entered)
	st := startTLSStack(t, urls(blue), urls(green))
	c := st.client(true, 1)
	got := make(chan string, 1)
	go func() {
		res, err := c.Get("https://" + st.a.tls + "/slow?d=700ms")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- fmt.Sprintf("%s %d %d", res.Proto, res.StatusCode, len(b))
	}()
	<-entered
	if err := st.stop(); err != nil {
		t.Fatal(err)
	}
	if r := <-got; !strings.HasPrefix(r, "HTTP/2.0 200 ") {
		t.Fatalf("stream in flight at shutdown: %s", r)
	}
	if _, err := c.Get("https://" + st.a.tls + "/"); err == nil {
		t.Fatal("TLS listener still serving after shutdown")
	}
}

// The built binary: a bad certificate pair exits 2 naming the variable; a
// good one serves HTTPS, and after the files are replaced SIGHUP (or the
// file watch) brings the new certificate without a restart.
func TestE2ETLSBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	bin, demo := binaries(t)
	dir := t.TempDir()
	ca := certtest.NewCA(t)
	cf, kf := ca.WritePair(t, dir, "site", "site.test")
	_, otherKey := ca.WritePair(t, dir, "other", "other.test")
	_, blueURL := startDemoProc(t, demo, "blue", "v1")
	_, greenURL := startDemoProc(t, demo, "green", "v2")
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + blueURL, "BLUEGREEN_GREEN_URLS=" + greenURL,
		"BLUEGREEN_TLS_LISTEN=127.0.0.1:0", "BLUEGREEN_STATE=file:" + filepath.Join(dir, "state.json"),
		"BLUEGREEN_HEALTH_INTERVAL=100ms", "BLUEGREEN_HEALTH_RISE=1",
	}
	bad := testkit.Start(t, "bluegreen-bad-pair", bin, append(env, "BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_TLS_CERT_FILE="+cf, "BLUEGREEN_TLS_KEY_FILE="+otherKey))
	if code := bad.ExitCode(t, 20*time.Second); code != 2 || !strings.Contains(bad.Out.String(), "BLUEGREEN_TLS_CERT_FILE=") {
		t.Fatalf("bad pair: exit %d\n%s", code, bad.Out)
	}

	p, _, adm := startProxyProc(t, bin, append(env, "BLUEGREEN_TLS_CERT_FILE="+cf, "BLUEGREEN_TLS_KEY_FILE="+kf))
	waitHTTP(t, "http://"+adm+"/readyz", 200)
	tlsAddr := testkit.Addr(p.WaitLog(t, time.Second, "bluegreen serving"), "tls")
	addr := tlsAddr
	first, err := certtest.Served(addr, "site.test", ca.Pool)
	if err != nil {
		t.Fatal(err)
	}
	ca.WritePair(t, dir, "site", "site.test")
	p.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for {
		now, err := certtest.Served(addr, "site.test", ca.Pool)
		if err == nil && !now.Equal(first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new certificate not served within 5 s (%v)\n%s", err, p.Out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for !strings.Contains(p.Out.String(), "SIGHUP: certificates reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no SIGHUP reload logged\n%s", p.Out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-p.Exited():
		t.Fatalf("SIGHUP ended the process\n%s", p.Out)
	default:
	}
	p.Signal(syscall.SIGTERM)
	if code := p.ExitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.Out)
	}
}
