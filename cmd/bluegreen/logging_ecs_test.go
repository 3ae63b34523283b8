package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// ecsLines parses every line of s as one JSON object.
func ecsLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestECSHandlerFields(t *testing.T) {
	var buf testkit.Buffer
	log := newLogger(&buf, "ecs", "info")
	access := log.With("log", "access")
	access.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("method", "GET"), slog.String("path", "/a"), slog.Int("status", 502),
		slog.String("color", "green"), slog.String("instance", "http://app-green:5000"),
		slog.Duration("duration", 1500*time.Microsecond), slog.String("remote", "[::1]:40001"))
	log.Warn("rollback", "from", "green", "to", "blue", "trigger", "auto-rollback",
		"reason", "green has no healthy instance", "generation", uint64(7), "forced", false)
	log.Warn("backend down", "color", "blue", "instance", "b1", "error", "connection refused")
	log.Info("custom", "drain_timeout", "30s", "took", 2*time.Second)
	log.WithGroup("g").Info("grouped", "color", "kept")
	log.Debug("below the level")

	lines := ecsLines(t, buf.String())
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), buf.String())
	}
	for i, m := range lines {
		ts, _ := m["@timestamp"].(string)
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || !strings.HasSuffix(ts, "Z") {
			t.Errorf("line %d: @timestamp %q is not RFC 3339 UTC", i, ts)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k]; ok {
				t.Errorf("line %d keeps the slog key %q", i, k)
			}
		}
		if m["service.name"] != "bluegreen" || m["ecs.version"] != ecsVersion {
			t.Errorf("line %d: service.name %v, ecs.version %v", i, m["service.name"], m["ecs.version"])
		}
	}
	want := []map[string]any{{
		"log.level": "info", "message": "request", "log.logger": "access", "event.dataset": "bluegreen.access",
		"http.request.method": "GET", "url.path": "/a", "http.response.status_code": float64(502),
		"labels.color": "green", "labels.instance": "http://app-green:5000",
		"event.duration": float64(1500000), "client.ip": "::1", "client.port": float64(40001),
	}, {
		"log.level": "warn", "message": "rollback", "event.action": "rollback", "event.kind": "event",
		"event.dataset": "bluegreen.log", "labels.color": "blue", "labels.from_color": "green",
		"labels.trigger": "auto-rollback", "event.reason": "green has no healthy instance",
		"labels.generation": "7", "labels.forced": "false",
	}, {
		"log.level": "warn", "message": "backend down", "labels.color": "blue", "labels.instance": "b1",
		"error.message": "connection refused",
	}, {
		"log.level": "info", "bluegreen.drain_timeout": "30s", "bluegreen.took": "2s",
	}, {
		"message": "grouped",
	}}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, lines[i][k], v)
			}
		}
	}
	if g, ok := lines[4]["bluegreen.g"].(map[string]any); !ok || g["color"] != "kept" {
		t.Errorf("a caller's group is not kept as it is: %v", lines[4])
	}
	if _, ok := lines[4]["labels.color"]; ok {
		t.Errorf("an attribute inside a group was renamed: %v", lines[4])
	}
}

func TestLogFormatECSAccepted(t *testing.T) {
	base := []string{"BLUEGREEN_BLUE_URLS=http://127.0.0.1:1", "BLUEGREEN_GREEN_URLS=http://127.0.0.1:2"}
	if _, err := loadConfig(append(base, "BLUEGREEN_LOG_FORMAT=ecs"), os.Hostname); err != nil {
		t.Fatalf("ecs refused: %v", err)
	}
	_, err := loadConfig(append(base, "BLUEGREEN_LOG_FORMAT=logfmt"), os.Hostname)
	if err == nil || !strings.Contains(err.Error(), `"ecs"`) {
		t.Fatalf("a bad format's error does not list ecs: %v", err)
	}
}

// TestServeECSLogs runs the real proxy with BLUEGREEN_LOG_FORMAT=ecs and the
// access log on, sends requests (one answered 502 by the app) and a cutover
// through the admin API, and reads the ECS records back.
func TestServeECSLogs(t *testing.T) {
	blue, _ := newApps(t, "blue", 1, nil)
	green, _ := newApps(t, "green", 1, nil)
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + urls(blue),
		"BLUEGREEN_GREEN_URLS=" + urls(green),
		"BLUEGREEN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0",
		"BLUEGREEN_STATE=file:" + filepath.Join(t.TempDir(), "state.json"),
		"BLUEGREEN_HEALTH_INTERVAL=50ms",
		"BLUEGREEN_HEALTH_RISE=1",
		"BLUEGREEN_LOG_FORMAT=ecs",
		"BLUEGREEN_ACCESS_LOG=true",
	}
	cfg, err := loadConfig(env, os.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	var buf testkit.Buffer
	log := newLogger(&buf, cfg.LogFormat, cfg.LogLevel)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, "test", func(a addrs) { ready <- a }) }()
	var pub, adm string
	select {
	case a := <-ready:
		pub, adm = "http://"+a.public, "http://"+a.admin
	case err := <-done:
		cancel()
		t.Fatalf("serve ended: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve not ready after 20s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop")
		}
	})
	get := func(url string) int {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	deadline := time.Now().Add(20 * time.Second)
	for get(adm+"/readyz") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// green must be healthy before a cutover to it is accepted.
	for !strings.Contains(buf.String(), `"labels.color":"green"`) {
		if time.Now().After(deadline) {
			t.Fatalf("green never came up:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := get(pub + "/status/502"); c != 502 {
		t.Fatalf("GET /status/502 through the proxy: %d", c)
	}
	get(pub + "/")
	res, err := http.Post(adm+"/admin/cutover", "application/json", strings.NewReader(`{"to":"green","reason":"release 2"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("cutover: %d", res.StatusCode)
	}
	var access502, cutover map[string]any
	for time.Now().Before(deadline) && (access502 == nil || cutover == nil) {
		for _, m := range ecsLines(t, buf.String()) {
			if m["http.response.status_code"] == float64(502) {
				access502 = m
			}
			if m["event.action"] == "cutover" {
				cutover = m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if access502 == nil || cutover == nil {
		t.Fatalf("access record of the 502 (%v) or cutover event (%v) missing:\n%s", access502 != nil, cutover != nil, buf.String())
	}
	for k, v := range map[string]any{
		"log.logger": "access", "event.dataset": "bluegreen.access", "http.request.method": "GET",
		"url.path": "/status/502", "labels.color": "blue", "client.ip": "127.0.0.1", "log.level": "info",
		"http.version": "1.1",
	} {
		if access502[k] != v {
			t.Errorf("access record: %s = %#v, want %#v", k, access502[k], v)
		}
	}
	if d, ok := access502["event.duration"].(float64); !ok || d <= 0 {
		t.Errorf("access record: event.duration %v, want nanoseconds > 0", access502["event.duration"])
	}
	if inst, _ := access502["labels.instance"].(string); inst == "" {
		t.Errorf("access record without labels.instance: %v", access502)
	}
	for k, v := range map[string]any{
		"labels.color": "green", "labels.from_color": "blue", "event.reason": "release 2",
		"labels.trigger": "api", "labels.generation": "2",
	} {
		if cutover[k] != v {
			t.Errorf("cutover event: %s = %#v, want %#v", k, cutover[k], v)
		}
	}
}
