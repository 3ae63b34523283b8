package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
)

func baseEnv() []string {
	return []string{
		"BLUEGREEN_BLUE_URLS=http://127.0.0.1:5001,http://127.0.0.1:5002",
		"BLUEGREEN_GREEN_URLS=http://127.0.0.1:5003",
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(baseEnv(), func() (string, error) { return "host-1", nil })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" || cfg.AdminListen != "127.0.0.1:8081" || cfg.InitialColor != "blue" ||
		cfg.State != "file:./bluegreen-state.json" || cfg.HealthPath != "/health" ||
		cfg.HealthInterval != 2*time.Second || cfg.HealthTimeout != time.Second ||
		cfg.HealthRise != 2 || cfg.HealthFall != 3 || !cfg.AutoRollback ||
		cfg.RollbackWindow != 5*time.Minute || cfg.DrainTimeout != 30*time.Second ||
		cfg.LogFormat != "auto" || cfg.LogLevel != "info" || cfg.ReplicaID != "host-1" {
		t.Fatalf("defaults: %+v", cfg)
	}
	if len(cfg.blue) != 2 || len(cfg.green) != 1 || cfg.blue[1].String() != "http://127.0.0.1:5002" {
		t.Fatalf("urls %v %v", cfg.blue, cfg.green)
	}
}

func TestLoadConfigTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte("tok-from-file\n"), 0o600)
	cfg, err := loadConfig(append(baseEnv(), "BLUEGREEN_ADMIN_TOKEN_FILE="+path, "BLUEGREEN_ADMIN_LISTEN=0.0.0.0:8081"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.token != "tok-from-file" {
		t.Fatalf("token %q", cfg.token)
	}
}

// TestBadConfigExits2 checks that every bad value stops start-up with exit
// status 2 and one line naming the variable.
func TestBadConfigExits2(t *testing.T) {
	dir := t.TempDir()
	emptyToken := filepath.Join(dir, "empty")
	os.WriteFile(emptyToken, nil, 0o600)
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"missing blue", []string{"BLUEGREEN_GREEN_URLS=http://a:1"}, "BLUEGREEN_BLUE_URLS is required"},
		{"missing green", []string{"BLUEGREEN_BLUE_URLS=http://a:1"}, "BLUEGREEN_GREEN_URLS is required"},
		{"unparseable url", append(baseEnv(), "BLUEGREEN_BLUE_URLS=http//nohost"), "BLUEGREEN_BLUE_URLS="},
		{"not http", append(baseEnv(), "BLUEGREEN_GREEN_URLS=ftp://a:1"), "BLUEGREEN_GREEN_URLS="},
		{"duplicate url", append(baseEnv(), "BLUEGREEN_GREEN_URLS=http://a:1,http://a:1"), "listed twice"},
		{"port out of range", append(baseEnv(), "BLUEGREEN_GREEN_URLS=http://a:99999"), `BLUEGREEN_GREEN_URLS="http://a:99999": "http://a:99999": the port must be a number from 1 to 65535`},
		{"port zero", append(baseEnv(), "BLUEGREEN_BLUE_URLS=http://a:0"), "the port must be"},
		{"empty port", append(baseEnv(), "BLUEGREEN_BLUE_URLS=http://a:"), "the port must be"},
		{"bad duration", append(baseEnv(), "BLUEGREEN_HEALTH_INTERVAL=soon"), `BLUEGREEN_HEALTH_INTERVAL="soon": expected a duration`},
		{"negative duration", append(baseEnv(), "BLUEGREEN_DRAIN_TIMEOUT=-1s"), "BLUEGREEN_DRAIN_TIMEOUT="},
		{"zero timeout", append(baseEnv(), "BLUEGREEN_HEALTH_TIMEOUT=0s"), "BLUEGREEN_HEALTH_TIMEOUT="},
		{"negative upstream timeout", append(baseEnv(), "BLUEGREEN_UPSTREAM_TIMEOUT=-1s"), "BLUEGREEN_UPSTREAM_TIMEOUT="},
		{"negative rise", append(baseEnv(), "BLUEGREEN_HEALTH_RISE=-1"), "BLUEGREEN_HEALTH_RISE="},
		{"non-integer fall", append(baseEnv(), "BLUEGREEN_HEALTH_FALL=three"), `BLUEGREEN_HEALTH_FALL="three": expected an integer`},
		{"unknown colour", append(baseEnv(), "BLUEGREEN_INITIAL_COLOR=purple"), "BLUEGREEN_INITIAL_COLOR="},
		{"unknown state scheme", append(baseEnv(), "BLUEGREEN_STATE=redis://x"), "BLUEGREEN_STATE="},
		{"bad bool", append(baseEnv(), "BLUEGREEN_AUTO_ROLLBACK=maybe"), `BLUEGREEN_AUTO_ROLLBACK="maybe": expected true or false`},
		{"bad log format", append(baseEnv(), "BLUEGREEN_LOG_FORMAT=xml"), "BLUEGREEN_LOG_FORMAT="},
		{"bad log level", append(baseEnv(), "BLUEGREEN_LOG_LEVEL=loud"), "BLUEGREEN_LOG_LEVEL="},
		{"bad balance", append(baseEnv(), "BLUEGREEN_BALANCE=random"), "BLUEGREEN_BALANCE="},
		{"bad listen", append(baseEnv(), "BLUEGREEN_LISTEN=8080"), "BLUEGREEN_LISTEN="},
		{"health path", append(baseEnv(), "BLUEGREEN_HEALTH_PATH=health"), "BLUEGREEN_HEALTH_PATH="},
		{"unreadable token file", append(baseEnv(), "BLUEGREEN_ADMIN_TOKEN_FILE="+filepath.Join(dir, "nope")), "BLUEGREEN_ADMIN_TOKEN_FILE="},
		{"empty token file", append(baseEnv(), "BLUEGREEN_ADMIN_TOKEN_FILE="+emptyToken), "token file is empty"},
		{"both tokens", append(baseEnv(), "BLUEGREEN_ADMIN_TOKEN=a", "BLUEGREEN_ADMIN_TOKEN_FILE="+emptyToken), "both set"},
		{"public admin without token", append(baseEnv(), "BLUEGREEN_ADMIN_LISTEN=0.0.0.0:8081"), "BLUEGREEN_ADMIN_LISTEN="},
		{"admin on all interfaces by port only", append(baseEnv(), "BLUEGREEN_ADMIN_LISTEN=:8081"), "BLUEGREEN_ADMIN_TOKEN"},
		{"pprof without token", append(baseEnv(), "BLUEGREEN_PPROF=true"), `BLUEGREEN_PPROF="true": profiling needs the admin token`},
		{"bad pprof bool", append(baseEnv(), "BLUEGREEN_PPROF=on"), `BLUEGREEN_PPROF="on": expected true or false`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(context.Background(), []string{"serve"}, tc.env, io.Discard, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q: want one line containing %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8081": true, "[::1]:8081": true, "localhost:8081": true,
		":8081": false, "0.0.0.0:8081": false, "10.0.0.1:8081": false,
	} {
		if got := admin.LoopbackHost(addr); got != want {
			t.Errorf("LoopbackHost(%q) = %v", addr, got)
		}
	}
}

func TestLoggerFormat(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf, "auto", "info").Info("hello", "k", "v")
	if !strings.HasPrefix(buf.String(), "{") || !strings.Contains(buf.String(), `"k":"v"`) {
		t.Fatalf("auto off a terminal is not JSON: %q", buf.String())
	}
	buf.Reset()
	newLogger(&buf, "text", "warn").Info("hidden")
	newLogger(&buf, "text", "warn").Warn("shown", "k", "v")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") || strings.HasPrefix(buf.String(), "{") {
		t.Fatalf("text logger: %q", buf.String())
	}
}

// A BLUEGREEN_ variable that nothing reads is warned of at start-up, with
// the setting it most likely misspells: a misspelt one would otherwise
// leave its default in force without a word. The compose files' and the
// client commands' variables draw no warning.
func TestUnknownVariablesWarned(t *testing.T) {
	st := startStack(t, 1, 1, "BLUEGREEN_DRAIN_TIMOUT=5s", "BLUEGREEN_ADMIN_TOKEN_FLIE=/x", "BLUEGREEN_SOMETHING=1",
		"BLUEGREEN_TAG=v2", "BLUEGREEN_ADMIN_URL=http://127.0.0.1:1", "OTHER_DRAIN_TIMOUT=1")
	logs := st.logs.String()
	for _, want := range []string{
		`"msg":"unknown variable ignored","variable":"BLUEGREEN_ADMIN_TOKEN_FLIE","did_you_mean":"BLUEGREEN_ADMIN_TOKEN_FILE"`,
		`"msg":"unknown variable ignored","variable":"BLUEGREEN_DRAIN_TIMOUT","did_you_mean":"BLUEGREEN_DRAIN_TIMEOUT"`,
		`"msg":"unknown variable ignored","variable":"BLUEGREEN_SOMETHING"}`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s in the log:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "unknown variable"); n != 3 {
		t.Errorf("%d unknown-variable warnings, want 3:\n%s", n, logs)
	}
}

// A second proxy started on a state file that a running one holds (a
// shared volume, a compose service scaled to two) stops at start with
// exit status 2 and a line that says why: it would have served its own
// view of the active colour.
func TestSecondProxyOnOneStateFileRefused(t *testing.T) {
	st := startStack(t, 1, 1)
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve"}, []string{
		"BLUEGREEN_BLUE_URLS=" + urls(st.blue), "BLUEGREEN_GREEN_URLS=" + urls(st.green),
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_STATE=file:" + st.statePath,
	}, io.Discard, &stderr)
	if code != exitConfig || !strings.Contains(stderr.String(), "in use by another process") ||
		!strings.Contains(stderr.String(), "BLUEGREEN_STATE=") {
		t.Fatalf("exit %d, stderr %q; want 2 and the state file in use", code, stderr.String())
	}
	t.Log(strings.TrimSpace(stderr.String()))
}
