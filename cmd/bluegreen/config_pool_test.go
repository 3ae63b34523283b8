package main

import (
	"strings"
	"testing"
)

// TestConfigUpstreamMaxConns: BLUEGREEN_UPSTREAM_MAX_CONNS defaults to a
// quarter of the open-files limit (never below 64), takes a positive number
// or "auto", and anything else stops start-up naming the variable.
func TestConfigUpstreamMaxConns(t *testing.T) {
	host := func() (string, error) { return "h", nil }
	cfg, err := loadConfig(baseEnv(), host)
	if err != nil {
		t.Fatal(err)
	}
	if want := autoUpstreamConns(nofileLimit()); cfg.upstreamMaxConns != want || want < minAutoUpstreamConns {
		t.Fatalf("default: %d, want %d (open-files limit %d)", cfg.upstreamMaxConns, want, nofileLimit())
	}
	for nofile, want := range map[uint64]int{0: 64, 100: 64, 1024: 256, 20000: 5000, 1 << 40: 1 << 20} {
		if got := autoUpstreamConns(nofile); got != want {
			t.Errorf("autoUpstreamConns(%d) = %d, want %d", nofile, got, want)
		}
	}
	cfg, err = loadConfig(append(baseEnv(), "BLUEGREEN_UPSTREAM_MAX_CONNS=3000"), host)
	if err != nil || cfg.upstreamMaxConns != 3000 {
		t.Fatalf("3000: %d, %v", cfg.upstreamMaxConns, err)
	}
	cfg, err = loadConfig(append(baseEnv(), "BLUEGREEN_UPSTREAM_MAX_CONNS=auto"), host)
	if err != nil || cfg.upstreamMaxConns != autoUpstreamConns(nofileLimit()) {
		t.Fatalf("auto: %d, %v", cfg.upstreamMaxConns, err)
	}
	for _, v := range []string{"0", "-1", "many", "1.5"} {
		_, err := loadConfig(append(baseEnv(), "BLUEGREEN_UPSTREAM_MAX_CONNS="+v), host)
		if err == nil || !strings.Contains(err.Error(), "BLUEGREEN_UPSTREAM_MAX_CONNS=") {
			t.Errorf("%q: %v", v, err)
		}
	}
}
