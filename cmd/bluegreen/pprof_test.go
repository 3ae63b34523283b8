package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

func TestConfigPprof(t *testing.T) {
	cfg, err := loadConfig(baseEnv(), nil)
	if err != nil || cfg.Pprof {
		t.Fatalf("default: pprof %v, err %v", cfg.Pprof, err)
	}
	cfg, err = loadConfig(append(baseEnv(), "BLUEGREEN_PPROF=true", "BLUEGREEN_ADMIN_TOKEN=t"), nil)
	if err != nil || !cfg.Pprof {
		t.Fatalf("with a token: pprof %v, err %v", cfg.Pprof, err)
	}
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte("tok\n"), 0o600)
	if _, err := loadConfig(append(baseEnv(), "BLUEGREEN_PPROF=1", "BLUEGREEN_ADMIN_TOKEN_FILE="+path), nil); err != nil {
		t.Fatalf("with a token file: %v", err)
	}
	// Loopback does not exempt profiling from the token.
	_, err = loadConfig(append(baseEnv(), "BLUEGREEN_PPROF=true", "BLUEGREEN_ADMIN_LISTEN=[::1]:8081"), nil)
	if err == nil || !strings.Contains(err.Error(), "BLUEGREEN_PPROF=") {
		t.Fatalf("loopback without a token: %v", err)
	}
	// A broken token variable is reported once, as itself.
	_, err = loadConfig(append(baseEnv(), "BLUEGREEN_PPROF=true", "BLUEGREEN_ADMIN_TOKEN_FILE="+filepath.Join(t.TempDir(), "nope")), nil)
	if err == nil || strings.Contains(err.Error(), "PPROF") || !strings.Contains(err.Error(), "BLUEGREEN_ADMIN_TOKEN_FILE=") {
		t.Fatalf("unreadable token file: %v", err)
	}
}

// pprofGet sends a GET to the admin listener and returns status, headers
// and body.
func pprofGet(t *testing.T, url, token string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, b := testkit.Do(t, &http.Client{Timeout: 30 * time.Second}, req)
	return res.StatusCode, res.Header, b
}

func jsonErrorCode(t *testing.T, hdr http.Header, body []byte) string {
	t.Helper()
	var e struct{ Error, Code string }
	if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || json.Unmarshal(body, &e) != nil || e.Error == "" {
		t.Fatalf("not the admin API's JSON error: %s %q", hdr.Get("Content-Type"), body)
	}
	return e.Code
}

// TestServePprofOff: by default the admin listener serves no profiles.
func TestServePprofOff(t *testing.T) {
	const token = "off-token-5150"
	st := startStack(t, 1, 1, "BLUEGREEN_ADMIN_TOKEN="+token)
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		code, hdr, body := pprofGet(t, st.adm+p, token)
		if code != http.StatusNotFound || jsonErrorCode(t, hdr, body) != "not_found" {
			t.Errorf("%s with profiling off: %d %q, want 404", p, code, body)
		}
	}
}

// TestServePprof runs serve with BLUEGREEN_PPROF=true: without the token or
// with a wrong one every profile is 401, with it the index, a heap profile
// and a one-second CPU profile come back, and the token is never logged.
func TestServePprof(t *testing.T) {
	const token = "pprof-serve-token-8086"
	st := startStack(t, 1, 1, "BLUEGREEN_PPROF=true", "BLUEGREEN_ADMIN_TOKEN="+token)

	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline", "/debug/pprof/goroutine"} {
		for _, tok := range []string{"", "wrong-token-0815", token + "x"} {
			code, hdr, body := pprofGet(t, st.adm+p, tok)
			if code != http.StatusUnauthorized || jsonErrorCode(t, hdr, body) != "unauthorized" {
				t.Fatalf("%s with token %q: %d %q, want 401", p, tok, code, body)
			}
		}
	}

	code, _, body := pprofGet(t, st.adm+"/debug/pprof/", token)
	if code != 200 || !bytes.Contains(body, []byte("heap")) {
		t.Fatalf("index: %d %.200q", code, body)
	}
	code, _, body = pprofGet(t, st.adm+"/debug/pprof/heap?debug=1", token)
	if code != 200 || !bytes.Contains(body, []byte("heap profile:")) {
		t.Fatalf("heap?debug=1: %d %.200q", code, body)
	}
	// Some traffic, so the profile has samples of the proxy at work.
	stopTraffic := make(chan struct{})
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for {
			select {
			case <-stopTraffic:
				return
			default:
			}
			if res, err := st.httpClient.Get(st.pub + "/"); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
	}()
	start := time.Now()
	code, _, body = pprofGet(t, st.adm+"/debug/pprof/profile?seconds=1", token)
	took := time.Since(start)
	close(stopTraffic)
	<-trafficDone
	if code != 200 || took < time.Second {
		t.Fatalf("profile: %d after %v: %.200q", code, took, body)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("profile is not gzipped (%d bytes): %v", len(body), err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || len(raw) == 0 {
		t.Fatalf("profile: %d bytes after gunzip, %v", len(raw), err)
	}
	t.Logf("CPU profile through serve: %d bytes gzipped, %d raw, in %v", len(body), len(raw), took.Round(time.Millisecond))

	logs := st.logs.String()
	if !strings.Contains(logs, "admin request refused") || !strings.Contains(logs, "profiling enabled") {
		t.Errorf("refusals or the profiling notice not logged:\n%s", logs)
	}
	if strings.Contains(logs, token) {
		t.Errorf("the log contains the admin token:\n%s", logs)
	}
	if err := st.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st.logs.String(), token) {
		t.Error("the shutdown log contains the admin token")
	}
}
