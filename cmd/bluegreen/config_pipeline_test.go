package main

import (
	"strings"
	"testing"
	"time"
)

// TestConfigClientBodyTimeout: BLUEGREEN_CLIENT_BODY_TIMEOUT defaults to
// 60s, is read, and a non-positive value stops start-up naming it.
func TestConfigClientBodyTimeout(t *testing.T) {
	host := func() (string, error) { return "h", nil }
	cfg, err := loadConfig(baseEnv(), host)
	if err != nil || cfg.ClientBodyTimeout != 60*time.Second {
		t.Fatalf("default: %v, %v", cfg.ClientBodyTimeout, err)
	}
	cfg, err = loadConfig(append(baseEnv(), "BLUEGREEN_CLIENT_BODY_TIMEOUT=5s"), host)
	if err != nil || cfg.ClientBodyTimeout != 5*time.Second {
		t.Fatalf("5s: %v, %v", cfg.ClientBodyTimeout, err)
	}
	for _, v := range []string{"0s", "-1s"} {
		_, err := loadConfig(append(baseEnv(), "BLUEGREEN_CLIENT_BODY_TIMEOUT="+v), host)
		if err == nil || !strings.Contains(err.Error(), "BLUEGREEN_CLIENT_BODY_TIMEOUT=") {
			t.Fatalf("%s: %v", v, err)
		}
	}
}
