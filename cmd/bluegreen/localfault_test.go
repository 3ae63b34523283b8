package main

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// TestE2EOutOfDescriptorsIsTheProxysOwn: a proxy at its descriptor limit
// cannot open a connection to an instance. That is nobody's fault but its
// own: the client gets 503, bluegreen_local_errors_total{kind="fds"}
// counts it, and the instance is not charged (no upstream error, no
// ejection, no evidence for a rollback), so the proxy serves again as soon
// as descriptors are free. Before, the failed socket(2) was the instance's
// refused connection: 502 and an upstream error.
func TestE2EOutOfDescriptorsIsTheProxysOwn(t *testing.T) {
	bg, demo := binaries(t)
	_, _, blueURL, greenURL := startDemoPair(t, demo)
	for _, fast := range []string{"true", "false"} {
		t.Run("BLUEGREEN_FAST_PATH="+fast, func(t *testing.T) { outOfDescriptors(t, bg, blueURL, greenURL, fast) })
	}
}

func outOfDescriptors(t *testing.T, bg, blueURL, greenURL, fast string) {
	proxy, pub, adm := startProxyProc(t, bg, []string{
		"BLUEGREEN_BLUE_URLS=" + blueURL, "BLUEGREEN_GREEN_URLS=" + greenURL,
		"BLUEGREEN_STATE=file:" + filepath.Join(t.TempDir(), "state.json"),
		"BLUEGREEN_HEALTH_INTERVAL=100ms", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_OUTLIER_CONSECUTIVE=1",
		"BLUEGREEN_SHUTDOWN_DELAY=0s", "BLUEGREEN_FAST_PATH=" + fast,
	})
	waitHTTP(t, "http://"+adm+"/readyz", 200)
	// One connection per admin request, so that none stays open in the
	// proxy across the count below.
	admin := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(url string) string {
		t.Helper()
		res, err := admin.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}

	// A client connection that goes quiet for longer than a second: on the
	// fast path it is parked, and resuming it takes a new descriptor (at
	// the limit, it once cost the connection and its request: a reset).
	quiet, err := net.Dial("tcp", pub)
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	time.Sleep(1200 * time.Millisecond)

	// The proxy without a free descriptor, holding client connections.
	conns := testkit.ExhaustFDs(t, proxy.Cmd.Process.Pid, pub, 6)

	// A request on an accepted connection needs a new connection to blue.
	if code := testkit.RawGet(t, quiet); code != http.StatusServiceUnavailable {
		t.Errorf("at the descriptor limit: %d, want 503", code)
	}
	line := proxy.WaitLog(t, 5*time.Second, "no connection to the instance: the proxy is out of a resource of its own")
	if line["kind"] != "fds" || line["held_back"] != float64(0) {
		t.Errorf("the log line: %v", line)
	}

	if strings.Contains(proxy.Out.String(), "could not be resumed") {
		t.Error("a parked connection was lost at the descriptor limit")
	}

	// Descriptors free again.
	for _, c := range conns {
		c.Close()
	}
	metrics := get("http://" + adm + "/metrics")
	metric := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("no %s in the metrics", name)
		}
		return m[1]
	}
	if got := metric(`bluegreen_local_errors_total{kind="fds"}`); got != "1" {
		t.Errorf(`bluegreen_local_errors_total{kind="fds"} = %s, want 1`, got)
	}
	for _, ln := range strings.Split(metrics, "\n") {
		if (strings.HasPrefix(ln, "bluegreen_upstream_errors_total{") || strings.HasPrefix(ln, "bluegreen_outlier_ejections_total{")) &&
			!strings.HasSuffix(ln, " 0") {
			t.Errorf("the instance was charged: %s", ln)
		}
	}
	status := get("http://" + adm + "/admin/status")
	if strings.Contains(status, `"ejected": true`) || !strings.Contains(status, `"healthy": 1`) {
		t.Errorf("after the descriptors came back, status:\n%s", status)
	}
	if b := get("http://" + pub + "/"); !strings.HasPrefix(b, "color=blue") {
		t.Errorf("after the descriptors came back: %q", b)
	}
}
