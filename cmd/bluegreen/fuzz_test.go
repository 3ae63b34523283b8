package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/cryoprotect/bluegreen/admin"
)

// fuzzVars are the variables FuzzLoadConfig sets. ADMIN_TOKEN_FILE is left
// out: the fuzzer would make it read arbitrary files such as /dev/zero.
var fuzzVars = []string{
	"LISTEN", "ADMIN_LISTEN", "BLUE_URLS", "GREEN_URLS", "INITIAL_COLOR", "STATE", "HEALTH_PATH",
	"HEALTH_INTERVAL", "HEALTH_TIMEOUT", "HEALTH_RISE", "HEALTH_FALL", "ADMIN_TOKEN", "AUTO_ROLLBACK",
	"ROLLBACK_WINDOW", "DRAIN_TIMEOUT", "LOG_FORMAT", "LOG_LEVEL", "ACCESS_LOG", "PREVIEW", "PREVIEW_HEADER",
	"PREVIEW_COOKIE", "BALANCE", "UPSTREAM_IDLE_TIMEOUT", "UPSTREAM_TIMEOUT", "OUTLIER_CONSECUTIVE", "OUTLIER_EJECT",
	"TRUSTED_PROXIES", "PREVIEW_STRIP", "READ_HEADER_TIMEOUT", "FAST_PATH", "REPLICA_ID", "PPROF", "PREVIEW_FROM",
}

// FuzzLoadConfig sets one variable to an arbitrary value on top of a valid
// configuration: loadConfig never panics, a refusal names a BLUEGREEN_
// variable, and an accepted configuration has backends of both colours.
func FuzzLoadConfig(f *testing.F) {
	pprofVar := uint8(slices.Index(fuzzVars, "PPROF"))
	seeds := []struct {
		i     uint8
		value string
	}{
		{2, "http://a:1,http://b:2"}, {2, "ftp://x"}, {2, ",,,"}, {2, "http://a:1,http://a:1"}, {3, "http://[::1]:80/base"},
		{0, ":0"}, {0, "nonsense"}, {5, "etcd://h:2379/p"}, {5, "file:"}, {7, "-1s"}, {7, "1e400h"}, {9, "99999999999999999999"},
		{11, "tok\x00en"}, {12, "yes"}, {19, "X Bad"}, {21, "least-inflight"}, {23, "-5"}, {25, "10.0.0.0/8,::1"},
		{25, "1.2.3.4/99"}, {25, "fe80::1%eth0"}, {27, "0"}, {1, "0.0.0.0:8081"}, {pprofVar, "true"}, {pprofVar, "1"},
	}
	for _, s := range seeds {
		f.Add(s.i, s.value)
	}
	f.Fuzz(func(t *testing.T, i uint8, value string) {
		name := "BLUEGREEN_" + fuzzVars[int(i)%len(fuzzVars)]
		env := []string{"BLUEGREEN_BLUE_URLS=http://b:1", "BLUEGREEN_GREEN_URLS=http://g:1", name + "=" + value}
		cfg, err := loadConfig(env, nil)
		if err != nil {
			if !strings.Contains(err.Error(), "BLUEGREEN_") {
				t.Fatalf("%s=%q: error names no variable: %v", name, value, err)
			}
			return
		}
		if len(cfg.blue) == 0 || len(cfg.green) == 0 {
			t.Fatalf("%s=%q accepted without backends: %+v", name, value, cfg)
		}
		if cfg.token == "" && !admin.LoopbackHost(cfg.AdminListen) {
			t.Fatalf("%s=%q: non-loopback admin listener accepted without a token", name, value)
		}
		if cfg.Pprof && cfg.token == "" {
			t.Fatalf("%s=%q: profiling accepted without a token", name, value)
		}
	})
}
