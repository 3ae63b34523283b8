package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pebbleFiles are Pebble's HTTPS certificate, the root that signed it and
// the configuration template (pebble/README.md).
//
//go:embed pebble/cert.pem pebble/key.pem pebble/pebble.minica.pem pebble/pebble-config.json
var pebbleFiles embed.FS

// Pebble is a Pebble ACME CA running on loopback for one test.
type Pebble struct {
	Dir      string         // the ACME directory URL
	Roots    *x509.CertPool // the root its certificates chain to
	Root     []byte         // the same, PEM
	APIRoots *x509.CertPool // the root of its own HTTPS certificate (for Dir)
	APIRoot  string         // the same, as a PEM file
	cmd      *exec.Cmd
}

// PebbleBin finds the Pebble binary: $PEBBLE_BIN, else pebble on PATH. It
// skips the test under -short, and on a developer machine without Pebble;
// with CI set it fails instead.
func PebbleBin(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Pebble")
	}
	if p := os.Getenv("PEBBLE_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("pebble not found: set PEBBLE_BIN (.ci/setup/tls.sh installs it)")
	}
	t.Skip("pebble not installed (go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3)")
	return ""
}

// FreeAddrs returns n distinct loopback addresses that were free a moment
// ago, none of them on one of the avoid ports. (Addresses picked one at a
// time can repeat: the kernel may hand out a port again once it is closed.)
func FreeAddrs(t testing.TB, n int, avoid ...int) []string {
	t.Helper()
	var addrs []string
	for len(addrs) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if !slices.Contains(avoid, Port(ln.Addr().String())) {
			addrs = append(addrs, ln.Addr().String())
		}
	}
	return addrs
}

// Port is the port of a host:port address (0 if it has none).
func Port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// StartPebble runs Pebble on loopback, validating HTTP-01 at localhost's
// httpPort and TLS-ALPN-01 at its tlsPort for real (no random sleeps;
// none of Pebble's environment switches inherited, so never "always
// valid"), issuing certificates valid for validity. It stops when the test
// ends; its log is printed if the test failed.
func StartPebble(t testing.TB, httpPort, tlsPort int, validity time.Duration) *Pebble {
	t.Helper()
	bin := PebbleBin(t)
	dir := t.TempDir()
	for _, name := range []string{"cert.pem", "key.pem", "pebble.minica.pem"} {
		b, _ := pebbleFiles.ReadFile("pebble/" + name)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := pebbleFiles.ReadFile("pebble/pebble-config.json")
	var cfg map[string]map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	free := FreeAddrs(t, 2, httpPort, tlsPort)
	api, mgmt := free[0], free[1]
	c := cfg["pebble"]
	c["listenAddress"], c["managementListenAddress"] = api, mgmt
	c["certificate"], c["privateKey"] = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c["httpPort"], c["tlsPort"] = httpPort, tlsPort
	c["profiles"] = map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity.Seconds())}}
	out, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, out, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-config", cfgFile)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	logf, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Pebble{Dir: "https://" + api + "/dir", APIRoot: filepath.Join(dir, "pebble.minica.pem"), cmd: cmd}
	t.Cleanup(func() {
		p.Stop()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pebble log:\n%s", b)
		}
	})
	p.APIRoots = x509.NewCertPool()
	b, _ := pebbleFiles.ReadFile("pebble/pebble.minica.pem")
	p.APIRoots.AppendCertsFromPEM(b)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.APIRoots}}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := hc.Get("https://" + mgmt + "/roots/0")
		if err == nil {
			p.Root, _ = io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM(p.Root) {
		t.Fatalf("pebble root: %q", p.Root)
	}
	return p
}

// Stop kills Pebble (the CA is down from then on).
func (p *Pebble) Stop() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}
