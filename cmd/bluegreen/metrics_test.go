package main

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// TestMetricsExposition checks the exposition with promtool and that every
// metric the design lists is there.
func TestMetricsExposition(t *testing.T) {
	promtool := testkit.Tool(t, "promtool", "the prometheus package, which .ci/run installs")
	st := startStack(t, 1, 1)
	st.colorOf("/")
	st.post("/admin/cutover", "")
	res, err := http.Get(st.adm + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	for _, name := range []string{
		"bluegreen_requests_total", "bluegreen_request_duration_seconds_bucket",
		"bluegreen_inflight_requests", "bluegreen_active_color", "bluegreen_backend_up",
		"bluegreen_health_checks_total", "bluegreen_upstream_errors_total",
		"bluegreen_cutovers_total", "bluegreen_last_cutover_timestamp_seconds",
		"bluegreen_draining_connections", "bluegreen_state_generation",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), "\n"+name) {
			t.Errorf("metric %s missing", name)
		}
	}
	if !strings.Contains(string(body), `bluegreen_active_color{color="green"} 1`) {
		t.Errorf("active_color does not show green after the cutover")
	}
}
