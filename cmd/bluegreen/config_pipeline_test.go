package main

import (
	"strings"
	"testing"
	"time"
)

// TestConfigClientTimeouts: BLUEGREEN_CLIENT_BODY_TIMEOUT and
// BLUEGREEN_CLIENT_SEND_TIMEOUT default to 60s, are read, and a
// non-positive value stops start-up naming the variable.
func TestConfigClientTimeouts(t *testing.T) {
	host := func() (string, error) { return "h", nil }
	for _, tc := range []struct {
		name string
		of   func(Config) time.Duration
	}{
		{"BLUEGREEN_CLIENT_BODY_TIMEOUT", func(c Config) time.Duration { return c.ClientBodyTimeout }},
		{"BLUEGREEN_CLIENT_SEND_TIMEOUT", func(c Config) time.Duration { return c.ClientSendTimeout }},
	} {
		cfg, err := loadConfig(baseEnv(), host)
		if err != nil || tc.of(cfg) != 60*time.Second {
			t.Fatalf("%s default: %v, %v", tc.name, tc.of(cfg), err)
		}
		cfg, err = loadConfig(append(baseEnv(), tc.name+"=5s"), host)
		if err != nil || tc.of(cfg) != 5*time.Second {
			t.Fatalf("%s=5s: %v, %v", tc.name, tc.of(cfg), err)
		}
		for _, v := range []string{"0s", "-1s"} {
			_, err := loadConfig(append(baseEnv(), tc.name+"="+v), host)
			if err == nil || !strings.Contains(err.Error(), tc.name+"=") {
				t.Fatalf("%s=%s: %v", tc.name, v, err)
			}
		}
	}
}
