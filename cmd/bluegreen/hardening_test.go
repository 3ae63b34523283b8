package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// countingApp is an instance that answers /health and counts every other
// request it receives.
func countingApp(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			n.Add(1)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s, &n
}

// rawExchange writes raw bytes to the public listener and reads one answer.
func rawExchange(t *testing.T, pub, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(pub, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestServeRejectsSmugglingAndOversize: malformed framing is refused by the
// public listener itself and never reaches an instance.
func TestServeRejectsSmugglingAndOversize(t *testing.T) {
	be, hits := countingApp(t)
	st := startStack(t, 1, 1, "BLUEGREEN_BLUE_URLS="+be.URL)
	big := strings.Repeat("a", 70<<10)
	cases := []struct {
		name string
		raw  string
		want int
	}{
		{"duplicate differing Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", 400},
		{"signed Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400},
		{"space before colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", 400},
		{"Transfer-Encoding other than chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding chunked twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", 431},
		// RFC 9112 §6.1: a request with both ought to be handled as an
		// error; the fast path refuses it rather than trusting either.
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding and Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1\r\nA\r\n0\r\n\r\n", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			res := rawExchange(t, st.pub, tc.raw)
			if res.StatusCode != tc.want {
				t.Errorf("status %d, want %d", res.StatusCode, tc.want)
			}
			if hits.Load() != before {
				t.Errorf("the instance received the request")
			}
		})
	}
	t.Logf("%d malformed requests refused by the listener, 0 reached the instance", len(cases))
}

// TestServeNetHTTPRefusesCLTE: with the fast path off, net/http serves
// everything behind the framing guard; a request with both Content-Length
// and Transfer-Encoding is refused with 400 (RFC 9112 6.1), as on the fast
// path, and never reaches the instance. (Before issue 11 net/http re-framed
// it: a front end that honours Content-Length would see one request where
// the instance saw two.)
func TestServeNetHTTPRefusesCLTE(t *testing.T) {
	be, hits := countingApp(t)
	st := startStack(t, 1, 1, "BLUEGREEN_BLUE_URLS="+be.URL, "BLUEGREEN_FAST_PATH=false")
	before := hits.Load()
	res := rawExchange(t, st.pub, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n")
	if res.StatusCode != 400 || hits.Load() != before {
		t.Fatalf("CL+TE on net/http: %s, instance hits %d, want 400 and none", res.Status, hits.Load()-before)
	}
	if strings.Contains(st.logs.String(), `"fast_path":true`) {
		t.Fatalf("BLUEGREEN_FAST_PATH=false still logged fast_path=true")
	}
}

// TestServeSlowlorisCut: a client that sends its headers a byte at a time
// is cut off after BLUEGREEN_READ_HEADER_TIMEOUT.
func TestServeSlowlorisCut(t *testing.T) {
	be, hits := countingApp(t)
	st := startStack(t, 1, 1, "BLUEGREEN_BLUE_URLS="+be.URL, "BLUEGREEN_READ_HEADER_TIMEOUT=300ms")
	c, err := net.Dial("tcp", strings.TrimPrefix(st.pub, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	head := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
	// The server either answers 408 or just closes; both end the read.
	closed := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := c.Read(b)
		if err == nil && b[0] != 'H' {
			err = fmt.Errorf("unexpected byte %q", b[0])
		}
		closed <- err
	}()
	sent := 0
	tick := time.NewTicker(50 * time.Millisecond) // the slow client's pace
	defer tick.Stop()
loop:
	for ; sent < len(head); sent++ {
		select {
		case err := <-closed:
			if err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("unexpected read result: %v", err)
			}
			break loop
		case <-tick.C:
			if _, err := c.Write([]byte{head[sent]}); err != nil {
				break loop
			}
		}
	}
	took := time.Since(start)
	if sent == len(head) || took > 5*time.Second {
		t.Fatalf("slow client not cut: sent %d bytes over %v", sent, took)
	}
	if hits.Load() != 0 {
		t.Fatal("the instance received the slow request")
	}
	t.Logf("slow client cut after %d bytes in %v (read header timeout 300ms)", sent, took.Round(time.Millisecond))
}

// TestServeOutlierEjectionShown: passive ejection shows in /admin/status
// and in bluegreen_outlier_ejections_total.
func TestServeOutlierEjectionShown(t *testing.T) {
	st := startStack(t, 2, 1, "BLUEGREEN_OUTLIER_CONSECUTIVE=2", "BLUEGREEN_OUTLIER_EJECT=1m")
	// Both blue instances fail: one is ejected, never both (when the one
	// left keeps failing, the other's cool-down ends early instead).
	ejected := 0
	for i := 0; ejected == 0; i++ {
		if i == 10 {
			t.Fatal("no blue instance ejected after 10 failures")
		}
		if _, code := st.colorOf("/status/500"); code != 500 {
			t.Fatalf("status %d", code)
		}
		for _, in := range st.status().Colors["blue"].Instances {
			if in.Ejected {
				ejected++
				if in.EjectedUntil == nil || time.Until(*in.EjectedUntil) <= 0 {
					t.Fatalf("ejected instance without a future ejected_until: %+v", in)
				}
			}
		}
	}
	if ejected != 1 {
		t.Fatalf("%d blue instances ejected, want 1 (never the last one)", ejected)
	}
	res, err := http.Get(st.adm + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `bluegreen_outlier_ejections_total{color="blue",instance="`) ||
		!strings.Contains(grep(string(b), "bluegreen_outlier_ejections_total{color=\"blue\""), "} 1") {
		t.Fatalf("ejection metric missing:\n%s", grep(string(b), "outlier"))
	}
}

func TestConfigHardeningVariables(t *testing.T) {
	base := []string{"BLUEGREEN_BLUE_URLS=http://b:1", "BLUEGREEN_GREEN_URLS=http://g:1"}
	cfg, err := loadConfig(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OutlierConsecutive != 5 || cfg.OutlierEject != 30*time.Second || !cfg.PreviewStrip ||
		cfg.ReadHeaderTimeout != 10*time.Second || len(cfg.trusted) != 0 || cfg.UpstreamTimeout != time.Minute {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, err = loadConfig(append(base, "BLUEGREEN_TRUSTED_PROXIES=10.0.0.0/8, 192.168.1.5,fd00::/8", "BLUEGREEN_OUTLIER_CONSECUTIVE=0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg.trusted) != "[10.0.0.0/8 192.168.1.5/32 fd00::/8]" || cfg.OutlierConsecutive != 0 {
		t.Fatalf("trusted %v consecutive %d", cfg.trusted, cfg.OutlierConsecutive)
	}
	// Preview from private networks by default; "any" lifts the limit.
	for _, c := range []struct{ value, want string }{
		{"", "[127.0.0.0/8 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 169.254.0.0/16 ::1/128 fc00::/7 fe80::/10]"},
		{"any", "[]"},
		{"127.0.0.1, 203.0.113.0/24", "[127.0.0.1/32 203.0.113.0/24]"},
		{"private,203.0.113.7", "[127.0.0.0/8 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 169.254.0.0/16 ::1/128 fc00::/7 fe80::/10 203.0.113.7/32]"},
	} {
		env := base
		if c.value != "" {
			env = append(slices.Clone(base), "BLUEGREEN_PREVIEW_FROM="+c.value)
		}
		cfg, err := loadConfig(env, nil)
		if err != nil || fmt.Sprint(cfg.previewFrom) != c.want {
			t.Errorf("BLUEGREEN_PREVIEW_FROM=%q: %v %v, want %s", c.value, cfg.previewFrom, err, c.want)
		}
	}
	for _, kv := range []string{
		"BLUEGREEN_TRUSTED_PROXIES=10.0.0.0/33",
		"BLUEGREEN_TRUSTED_PROXIES=proxy.example",
		"BLUEGREEN_OUTLIER_CONSECUTIVE=-1",
		"BLUEGREEN_OUTLIER_EJECT=0s",
		"BLUEGREEN_READ_HEADER_TIMEOUT=-1s",
		"BLUEGREEN_PREVIEW_STRIP=maybe",
		"BLUEGREEN_PREVIEW_FROM=privat",
		"BLUEGREEN_PREVIEW_FROM= ,",
		"BLUEGREEN_PREVIEW_FROM=10.0.0.0/33",
	} {
		_, err := loadConfig(append(base, kv), nil)
		name, _, _ := strings.Cut(kv, "=")
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v does not name the variable", kv, err)
		}
	}
}

// TestServeBackendKilledUnderLoad: the whole serve stack (health checks,
// outlier detection, retry) with two instances per colour; one blue
// instance is killed hard while 64 clients send GETs. None fails.
func TestServeBackendKilledUnderLoad(t *testing.T) {
	st := startStack(t, 2, 2)
	const clients, perClient, killAt = 64, 25, 64 * 6
	victim := st.blue[1]
	load := testkit.StartLoad(context.Background(), clients, perClient, func(_ int, n int64) error {
		if n == killAt {
			victim.Listener.Close()
			victim.CloseClientConnections()
		}
		_, err := testkit.Get(st.httpClient, st.pub+"/")
		return err
	})
	load.Wait()
	m := metricsText(t, st.adm)
	t.Logf("%d GETs by %d clients, blue instance killed after %d: %d failed\n%s", load.Sent.Load(), clients, killAt, load.Failed.Load(),
		grep(m, "bluegreen_upstream_retries_total{color=\"blue\"}"))
	if load.Failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", load.Failed.Load(), load.Sent.Load(), load.FirstErr())
	}
}

func metricsText(t *testing.T, adm string) string {
	t.Helper()
	res, err := http.Get(adm + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// TestServeUpstreamTimeout: an instance that takes longer than
// BLUEGREEN_UPSTREAM_TIMEOUT to answer gets the client a 504 after about
// that long, on both paths; a quicker one is not affected.
func TestServeUpstreamTimeout(t *testing.T) {
	for _, path := range []string{"true", "false"} {
		t.Run("fast_path="+path, func(t *testing.T) {
			st := startStack(t, 1, 1, "BLUEGREEN_UPSTREAM_TIMEOUT=300ms", "BLUEGREEN_FAST_PATH="+path)
			start := time.Now()
			if _, code := st.colorOf("/slow?d=3s"); code != http.StatusGatewayTimeout {
				t.Fatalf("slow instance: status %d, want 504", code)
			}
			if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
				t.Fatalf("504 after %v, want about 300ms", took)
			}
			if _, code := st.colorOf("/slow?d=50ms"); code != http.StatusOK {
				t.Fatalf("quick instance: status %d, want 200", code)
			}
		})
	}
}
