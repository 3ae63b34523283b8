package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
	"github.com/cryoprotect/bluegreen/internal/certs/certtest"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// ACME through the built binary: Pebble validates "localhost" against the
// binary's own listeners (HTTP-01 at the plain one, TLS-ALPN-01 at the TLS
// one, where the edge answers acme-tls/1 in the handshake), and the
// certificate it issues is then served on HTTPS/1.1 (fast codec) and h2.

// acmeProc is a bluegreen process ordering "localhost" from Pebble.
type acmeProc struct {
	proc     *testkit.Process
	pebble   *certtest.Pebble
	bin      string
	env      []string
	pub, tls string // the listeners' addresses, chosen beforehand
	adm      string
	active   string // the active colour
}

// startACMEProc starts Pebble and the binary with both listeners on ports
// chosen beforehand, as Pebble must know them. With http01 (tlsalpn01)
// false Pebble's HTTP-01 (TLS-ALPN-01) validations go to a closed port, so
// only the other challenge can succeed.
func startACMEProc(t *testing.T, http01, tlsalpn01 bool) *acmeProc {
	t.Helper()
	bin, _ := binaries(t)
	certtest.PebbleBin(t)
	blue, _ := newApps(t, "blue", 1, nil)
	green, _ := newApps(t, "green", 1, nil)
	free := certtest.FreeAddrs(t, 3)
	pub, tlsAddr, closed := free[0], free[1], certtest.Port(free[2]) // nothing listens at closed
	httpPort, tlsPort := certtest.Port(pub), certtest.Port(tlsAddr)
	if !http01 {
		httpPort = closed
	}
	if !tlsalpn01 {
		tlsPort = closed
	}
	p := certtest.StartPebble(t, httpPort, tlsPort, time.Hour)
	dir := t.TempDir()
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + urls(blue), "BLUEGREEN_GREEN_URLS=" + urls(green),
		"BLUEGREEN_LISTEN=" + pub, "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_TLS_LISTEN=" + tlsAddr,
		"BLUEGREEN_ACME_DOMAINS=localhost", "BLUEGREEN_ACME_CA=" + p.Dir, "BLUEGREEN_ACME_CA_ROOT_FILE=" + p.APIRoot,
		"BLUEGREEN_ACME_STORAGE=" + filepath.Join(dir, "acme"), "BLUEGREEN_STATE=file:" + filepath.Join(dir, "state.json"),
		"BLUEGREEN_LOG_FORMAT=json", "BLUEGREEN_LOG_LEVEL=debug",
		"BLUEGREEN_HEALTH_INTERVAL=50ms", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1", "BLUEGREEN_SHUTDOWN_DELAY=0s",
	}
	a := &acmeProc{pebble: p, bin: bin, env: env, pub: pub, tls: tlsAddr}
	a.start(t)
	return a
}

// start starts the binary and waits for its serving line.
func (a *acmeProc) start(t *testing.T) {
	t.Helper()
	a.proc = testkit.Start(t, "bluegreen", a.bin, a.env)
	ready := a.proc.WaitLog(t, 30*time.Second, "bluegreen serving")
	a.adm, a.active = testkit.Addr(ready, "admin"), testkit.Addr(ready, "active")
	if testkit.Addr(ready, "tls") != a.tls || testkit.Addr(ready, "listen") != a.pub || a.active == "" {
		t.Fatalf("serving line: %v (want listen %s, tls %s)", ready, a.pub, a.tls)
	}
}

// waitServed waits until the TLS listener serves a certificate for
// localhost that verifies against Pebble's issuing root.
func (a *acmeProc) waitServed(t *testing.T) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	testkit.WaitUntil(t, 30*time.Second, "a certificate from Pebble on the TLS listener", func() bool {
		var err error
		leaf, err = certtest.Served(a.tls, "localhost", a.pebble.Roots)
		return err == nil
	})
	return leaf
}

// get sends GET / through the TLS listener, verifying its certificate for
// localhost against Pebble's root, over h2 or HTTP/1.1 only.
func (a *acmeProc) get(t *testing.T, h2 bool) *http.Response {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "localhost", RootCAs: a.pebble.Roots}, ForceAttemptHTTP2: h2}
	if !h2 { // as curl --http1.1 and browsers without HTTP/2 do
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + a.tls + "/")
	if err != nil {
		t.Fatalf("h2=%v: %v", h2, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(string(b), "color="+a.active+" ") {
		t.Fatalf("h2=%v: %s %q", h2, res.Status, b)
	}
	return res
}

// ordersObtained waits for bluegreen_acme_orders_total{result="obtained"}
// on the admin /metrics to reach 1 and returns the metrics text.
func (a *acmeProc) ordersObtained(t *testing.T) string {
	t.Helper()
	m := waitMetric(t, a.adm, `bluegreen_acme_orders_total{result="obtained"}`, 1)
	if n := metricSum(m, `bluegreen_acme_orders_total{result="obtained"}`); n != 1 {
		t.Fatalf("orders obtained: %v, want 1", n)
	}
	return m
}

// solved returns the challenge types the binary tried, in order, and the
// ones that failed, from certmagic's debug records.
func (a *acmeProc) solved() (tried, failed []string) {
	for line := range strings.SplitSeq(a.proc.Out.String(), "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Type string `json:"challenge_type"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Type == "" {
			continue
		}
		switch rec.Msg {
		case "trying to solve challenge":
			tried = append(tried, rec.Type)
		case "challenge failed":
			failed = append(failed, rec.Type)
		}
	}
	return tried, failed
}

func TestE2EACMEObtainedAndServed(t *testing.T) {
	a := startACMEProc(t, true, true)
	leaf := a.waitServed(t)
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" || time.Until(leaf.NotAfter) < 50*time.Minute {
		t.Fatalf("certificate: names %v, until %v", leaf.DNSNames, leaf.NotAfter)
	}
	h1 := a.get(t, false)
	if h1.ProtoMajor != 1 || h1.TLS.NegotiatedProtocol != "http/1.1" || h1.Header.Get(app.ColorHeader) != a.active {
		t.Fatalf("HTTPS/1.1: %s, ALPN %q, colour %q", h1.Proto, h1.TLS.NegotiatedProtocol, h1.Header.Get(app.ColorHeader))
	}
	h2 := a.get(t, true)
	if h2.ProtoMajor != 2 || h2.TLS.NegotiatedProtocol != "h2" || h2.Header.Get(app.ColorHeader) != a.active {
		t.Fatalf("h2: %s, ALPN %q, colour %q", h2.Proto, h2.TLS.NegotiatedProtocol, h2.Header.Get(app.ColorHeader))
	}
	a.ordersObtained(t)
	tried, failed := a.solved()
	if len(tried) == 0 || len(failed) != 0 {
		t.Fatalf("challenges tried %v, failed %v", tried, failed)
	}
	t.Logf("challenges tried %v", tried)
	// certmagic's maintenance stops with the process: SIGTERM ends it cleanly.
	a.proc.Signal(syscall.SIGTERM)
	if code := a.proc.ExitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	// Restarted with the CA down, it serves the stored certificate from the
	// first handshake on (no failed handshakes while it loads) and orders
	// nothing.
	a.pebble.Stop()
	a.start(t)
	again, err := certtest.Served(a.tls, "localhost", a.pebble.Roots)
	if err != nil || !again.Equal(leaf) {
		t.Fatalf("first handshake after a restart: %v (not the stored certificate, serial %v)", err, leaf.SerialNumber)
	}
	a.get(t, true)
	m := metricsText(t, "http://"+a.adm)
	if n := metricSum(m, "bluegreen_acme_orders_total{"); n != 0 {
		t.Fatalf("orders after a restart: %v", n)
	}
}

// With HTTP-01 impossible the order can only succeed through the TLS
// listener answering acme-tls/1 (the edge closes such connections after
// the handshake, which carried the validation certificate).
func TestE2EACMETLSALPN01Only(t *testing.T) {
	testOneChallenge(t, startACMEProc(t, false, true), "tls-alpn-01")
}

// With TLS-ALPN-01 impossible the order can only succeed through the plain
// listener answering /.well-known/acme-challenge/.
func TestE2EACMEHTTP01Only(t *testing.T) {
	testOneChallenge(t, startACMEProc(t, true, false), "http-01")
}

// testOneChallenge checks that a's order succeeded through challenge, the
// only one Pebble can validate, in one order counted as obtained (a failed
// attempt of the other challenge type is retried within the order).
func testOneChallenge(t *testing.T, a *acmeProc, challenge string) {
	a.waitServed(t)
	m := a.ordersObtained(t)
	if n := metricSum(m, `bluegreen_acme_orders_total{result="failed"}`); n != 0 {
		t.Fatalf("orders failed: %v", n)
	}
	tried, failed := a.solved()
	if len(tried) == 0 || tried[len(tried)-1] != challenge || slices.Contains(failed, challenge) {
		t.Fatalf("challenges tried %v, failed %v: want %s to succeed", tried, failed, challenge)
	}
	t.Logf("challenges tried %v, failed %v", tried, failed)
	a.get(t, false)
	a.get(t, true)
}
