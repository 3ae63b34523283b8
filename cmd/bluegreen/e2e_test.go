package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// The end-to-end tier: the built bluegreen and demo-app binaries as real
// processes on loopback, driven through the CLI and plain HTTP.

// builds holds the binaries built for this test binary.
var builds testkit.Builds

// binaries builds bluegreen and demo-app once per test process; it skips
// the test under -short.
func binaries(t *testing.T) (bluegreen, demoApp string) {
	t.Helper()
	return builds.Path(t, "."), builds.Path(t, "github.com/cryoprotect/bluegreen/cmd/demo-app")
}

func TestMain(m *testing.M) {
	code := m.Run()
	builds.Cleanup()
	os.Exit(code)
}

// startDemoProc starts the demo-app binary on a loopback port it picks
// itself and returns its base URL, read from its "listening" log line.
func startDemoProc(t *testing.T, bin, color, version string) (*testkit.Process, string) {
	t.Helper()
	p := testkit.Start(t, "demo-app-"+color, bin, []string{"DEPLOYMENT_COLOR=" + color, "APP_VERSION=" + version, "LISTEN_ADDR=127.0.0.1", "PORT=0"})
	return p, "http://" + testkit.Addr(p.WaitLog(t, 20*time.Second, "listening"), "addr")
}

// startDemoPair starts a blue (v1) and a green (v2) demo-app and waits
// until both answer /health.
func startDemoPair(t *testing.T, bin string) (blue, green *testkit.Process, blueURL, greenURL string) {
	t.Helper()
	blue, blueURL = startDemoProc(t, bin, "blue", "v1")
	green, greenURL = startDemoProc(t, bin, "green", "v2")
	waitHTTP(t, blueURL+"/health", 200)
	waitHTTP(t, greenURL+"/health", 200)
	return blue, green, blueURL, greenURL
}

// startProxyProc starts the bluegreen binary with its public and admin
// listeners on loopback ports it picks itself, and returns their addresses,
// read from its "bluegreen serving" log line (env must not set
// BLUEGREEN_LISTEN, BLUEGREEN_ADMIN_LISTEN or BLUEGREEN_LOG_FORMAT).
func startProxyProc(t *testing.T, bin string, env []string) (p *testkit.Process, pub, adm string) {
	t.Helper()
	env = append(slices.Clone(env), "BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_LOG_FORMAT=json")
	p = testkit.Start(t, "bluegreen", bin, env)
	ready := p.WaitLog(t, 30*time.Second, "bluegreen serving")
	return p, testkit.Addr(ready, "listen"), testkit.Addr(ready, "admin")
}

func waitHTTP(t *testing.T, url string, want int) {
	t.Helper()
	testkit.WaitHTTP(t, 20*time.Second, url, want)
}

// cli runs a client subcommand of the built binary.
func cli(t *testing.T, bin, adminURL string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "BLUEGREEN_ADMIN_URL="+adminURL, "BLUEGREEN_ADMIN_TOKEN=e2e-token")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func TestE2EBinaries(t *testing.T) {
	bg, demo := binaries(t)
	_, green, blueURL, greenURL := startDemoPair(t, demo)

	statePath := filepath.Join(t.TempDir(), "state.json")
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + blueURL, "BLUEGREEN_GREEN_URLS=" + greenURL,
		"BLUEGREEN_STATE=file:" + statePath, "BLUEGREEN_ADMIN_TOKEN=e2e-token",
		"BLUEGREEN_HEALTH_INTERVAL=100ms", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_SHUTDOWN_DELAY=0s",
	}
	proxy, pub, adm := startProxyProc(t, bg, env)
	adminURL := "http://" + adm
	waitHTTP(t, adminURL+"/readyz", 200)

	if code, out := cli(t, bg, adminURL, "healthcheck"); code != 0 {
		t.Fatalf("healthcheck: %d %s", code, out)
	}
	// As in the image: no BLUEGREEN_ADMIN_URL, the proxy's own
	// BLUEGREEN_ADMIN_LISTEN with a wildcard host.
	_, admPort, _ := net.SplitHostPort(adm)
	hc := exec.Command(bg, "healthcheck")
	hc.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "BLUEGREEN_") }),
		"BLUEGREEN_ADMIN_LISTEN=0.0.0.0:"+admPort)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Fatalf("healthcheck from BLUEGREEN_ADMIN_LISTEN=0.0.0.0:%s: %v %s", admPort, err, out)
	}
	body := func() string {
		res, err := http.Get("http://" + pub + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	if b := body(); !strings.HasPrefix(b, "color=blue version=v1") {
		t.Fatalf("before cutover: %q", b)
	}
	if code, out := cli(t, bg, adminURL, "cutover", "--reason", "e2e release", "--wait-healthy", "5s"); code != 0 || !strings.Contains(out, "green") {
		t.Fatalf("cutover: %d %s", code, out)
	}
	if b := body(); !strings.HasPrefix(b, "color=green version=v2") {
		t.Fatalf("after cutover: %q", b)
	}
	if code, out := cli(t, bg, adminURL, "status"); code != 0 || !strings.Contains(out, "active: green") {
		t.Fatalf("status: %d %s", code, out)
	}
	if code, out := cli(t, bg, adminURL, "history"); code != 0 || !strings.Contains(out, "e2e release") || !strings.Contains(out, "cli") {
		t.Fatalf("history: %d %s", code, out)
	}

	// SIGTERM with a request in flight: it completes; the process exits 0.
	got := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + pub + "/slow?d=2s")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- fmt.Sprint(res.StatusCode, " ", string(b))
	}()
	// SIGTERM once the proxy counts the request in flight.
	testkit.WaitUntil(t, 20*time.Second, "the /slow request in flight", func() bool {
		return strings.Contains(metricsText(t, adminURL), `bluegreen_inflight_requests{color="green"} 1`)
	})
	proxy.Signal(syscall.SIGTERM)
	if r := <-got; !strings.HasPrefix(r, "200 color=green") {
		t.Fatalf("in-flight request across SIGTERM: %s", r)
	}
	if code := proxy.ExitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; output:\n%s", code, proxy.Out.String())
	}

	// Restart: the state is the same.
	proxy, pub, adm = startProxyProc(t, bg, env)
	adminURL = "http://" + adm
	waitHTTP(t, adminURL+"/readyz", 200)
	if b := body(); !strings.HasPrefix(b, "color=green") {
		t.Fatalf("after restart: %q\n%s", b, proxy.Out.String())
	}

	// The green app dies: green is active but has no instance, so readyz
	// turns 503 and traffic gets 503 (no fall-over without a rollback).
	// The cutover was made before the restart and auto-rollback is on, so
	// within the window the proxy rolls back to blue by itself.
	green.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(body(), "color=blue") {
		if time.Now().After(deadline) {
			t.Fatalf("no auto-rollback after green died; proxy output:\n%s", proxy.Out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out := cli(t, bg, adminURL, "history", "--limit", "1"); code != 0 || !strings.Contains(out, "auto-rollback") {
		t.Fatalf("history after auto-rollback: %d %s", code, out)
	}
	proxy.Signal(syscall.SIGTERM)
	if code := proxy.ExitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestE2EBadStartExitCodes(t *testing.T) {
	bg, _ := binaries(t)
	corrupt := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(corrupt, []byte("not json"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	base := []string{"BLUEGREEN_BLUE_URLS=http://127.0.0.1:1", "BLUEGREEN_GREEN_URLS=http://127.0.0.1:2",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_LOG_FORMAT=json"}
	cases := []struct {
		name string
		env  []string
		code int
		want string
	}{
		{"bad config", []string{"BLUEGREEN_BLUE_URLS=x"}, 2, "BLUEGREEN_BLUE_URLS"},
		{"corrupt state", append(base, "BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_STATE=file:"+corrupt), 2, corrupt},
		{"port in use", append(base, "BLUEGREEN_LISTEN="+busy.Addr().String(), "BLUEGREEN_STATE=file:"+filepath.Join(t.TempDir(), "s.json")), 1, "address already in use"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := testkit.Start(t, "bluegreen", bg, tc.env)
			if code := p.ExitCode(t, 10*time.Second); code != tc.code || !strings.Contains(p.Out.String(), tc.want) {
				t.Fatalf("exit %d, want %d with %q; output:\n%s", code, tc.code, tc.want, p.Out.String())
			}
		})
	}
}

// Every line the process writes is in its log format, Go's own included:
// net/http's Transport reports bytes an instance sent after its answer (on
// an idle connection) through the standard logger, which printed a bare,
// time-stamped line among the JSON a log shipper parses, one per request.
func TestE2EEveryLogLineIsJSON(t *testing.T) {
	bg, _ := binaries(t)
	ln := testkit.Listen(t, func(c net.Conn) {
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				answer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
				if req.URL.Path != "/health" {
					answer += "EXTRA" // more than its Content-Length
				}
				if _, err := io.WriteString(c, answer); err != nil {
					return
				}
			}
		}()
	})
	inst := "http://" + ln.Addr().String()
	env := []string{"BLUEGREEN_BLUE_URLS=" + inst, "BLUEGREEN_GREEN_URLS=" + inst + "/",
		"BLUEGREEN_STATE=file:" + filepath.Join(t.TempDir(), "state.json"), "BLUEGREEN_SHUTDOWN_DELAY=0s"}
	proxy, pub, adm := startProxyProc(t, bg, env)
	waitHTTP(t, "http://"+adm+"/readyz", 200)
	for range 3 { // a chunked POST goes through net/http's Transport
		res, err := http.Post("http://"+pub+"/order", "text/plain", io.MultiReader(strings.NewReader("x")))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("POST: %d %q", res.StatusCode, b)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(proxy.Out.String(), "Unsolicited response"); {
		if time.Now().After(deadline) {
			t.Fatal("the instance's stray bytes were not logged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxy.Stop(10 * time.Second)
	if n := strings.Count(proxy.Out.String(), "Unsolicited response"); n > 2 {
		t.Errorf("%d lines of stray bytes for 3 requests in about a second, want a line a second", n)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(proxy.Out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("not a JSON line: %q", line)
		}
	}
}
