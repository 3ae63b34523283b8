package main

import (
	"strings"
	"testing"
)

func TestLoadConfigHealthVersion(t *testing.T) {
	for _, ok := range []string{"", "json:version", "header:X-Build"} {
		if _, err := loadConfig(append(baseEnv(), "BLUEGREEN_HEALTH_VERSION="+ok), nil); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	_, err := loadConfig(append(baseEnv(), "BLUEGREEN_HEALTH_VERSION=body"), nil)
	if err == nil || !strings.Contains(err.Error(), `BLUEGREEN_HEALTH_VERSION="body"`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad value: %v", err)
	}
}
