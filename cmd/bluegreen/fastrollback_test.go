package main

import (
	"encoding/json"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/cmd/demo-app/app"
)

// logRecord is one JSON log line of the stack.
type logRecord struct {
	Time    time.Time `json:"time"`
	Msg     string    `json:"msg"`
	Color   string    `json:"color"`
	Trigger string    `json:"trigger"`
	Reason  string    `json:"reason"`
}

func firstLog(t *testing.T, logs string, match func(logRecord) bool) (logRecord, bool) {
	t.Helper()
	for line := range strings.SplitSeq(logs, "\n") {
		var r logRecord
		if json.Unmarshal([]byte(line), &r) == nil && match(r) {
			return r, true
		}
	}
	return logRecord{}, false
}

// Both green instances die right after a cutover, under 200 requests a
// second: the first refused connections are the data plane's evidence, the
// controller rolls back at once (not after HEALTH_FALL failed probes), and
// the refused requests are answered by blue. No request fails.
func TestFastRollbackWhenNewColourDies(t *testing.T) {
	for _, fast := range []string{"true", "false"} {
		t.Run("fast_path="+fast, func(t *testing.T) {
			// Probes every 2s, 3 failures to fall: the probe-driven
			// auto-rollback would take 4-6 s.
			st := startStack(t, 2, 2, "BLUEGREEN_HEALTH_INTERVAL=2s", "BLUEGREEN_HEALTH_FALL=3", "BLUEGREEN_FAST_PATH="+fast)
			if code, _ := st.post("/admin/cutover", `{"reason":"release"}`); code != 200 {
				t.Fatalf("cutover: %d", code)
			}

			var ok, failed atomic.Int64
			var colors sync.Map
			var mu sync.Mutex
			var failures []string
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				tick := time.NewTicker(5 * time.Millisecond) // 200 requests a second
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					wg.Go(func() {
						res, err := st.httpClient.Get(st.pub + "/")
						if err != nil {
							failed.Add(1)
							mu.Lock()
							failures = append(failures, err.Error())
							mu.Unlock()
							return
						}
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != 200 {
							failed.Add(1)
							mu.Lock()
							failures = append(failures, res.Status)
							mu.Unlock()
							return
						}
						ok.Add(1)
						c := res.Header.Get(app.ColorHeader)
						n, _ := colors.LoadOrStore(c, new(atomic.Int64))
						n.(*atomic.Int64).Add(1)
					})
				}
			})
			for ok.Load() < 60 { // ~300 ms on green
				time.Sleep(5 * time.Millisecond)
			}
			killed := time.Now()
			for _, s := range st.green {
				s.Listener.Close()
				s.CloseClientConnections()
			}
			st.eventually(func() bool { return st.status().Active == "blue" }, "rollback to blue")
			rolledBack := time.Since(killed)
			after := ok.Load()
			for ok.Load() < after+60 { // ~300 ms more on blue
				time.Sleep(5 * time.Millisecond)
			}
			close(stop)
			wg.Wait()

			logs := st.logs.String()
			refused, found := firstLog(t, logs, func(r logRecord) bool { return r.Msg == "instance refuses connections" && r.Color == "green" })
			if !found {
				t.Fatalf("no refused connection logged:\n%s", logs)
			}
			rb, found := firstLog(t, logs, func(r logRecord) bool { return r.Msg == "rollback" && r.Trigger == "auto-rollback" })
			if !found {
				t.Fatalf("no auto-rollback logged:\n%s", logs)
			}
			latency := rb.Time.Sub(refused.Time)
			perColor := map[string]int64{}
			colors.Range(func(k, v any) bool { perColor[k.(string)] = v.(*atomic.Int64).Load(); return true })
			t.Logf("green killed under 200 req/s: %d ok %v, %d failed %v; rollback %s after the first refused connection (%s after the kill as the test saw it); reason %q",
				ok.Load(), perColor, failed.Load(), failures, latency.Round(10*time.Microsecond), rolledBack.Round(time.Millisecond), rb.Reason)
			if failed.Load() != 0 {
				var upstream []string
				for line := range strings.SplitSeq(logs, "\n") {
					if strings.Contains(line, "upstream error") {
						upstream = append(upstream, line)
					}
				}
				t.Fatalf("%d requests failed: %v\n%s", failed.Load(), failures, strings.Join(upstream, "\n"))
			}
			if latency > 100*time.Millisecond || latency < 0 {
				t.Fatalf("rollback %s after the first refused connection, want within 100ms", latency)
			}
			if !strings.Contains(rb.Reason, "data plane") || !strings.Contains(rb.Reason, "refused") {
				t.Fatalf("reason %q does not name the data plane's evidence", rb.Reason)
			}
			s := st.status()
			if s.Active != "blue" || s.Previous != "green" {
				t.Fatalf("status %+v", s)
			}
		})
	}
}
