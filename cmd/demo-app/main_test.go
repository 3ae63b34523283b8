package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

const waitTimeout = 10 * time.Second

// env returns a getenv that reads m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// started is a run of the program in the background.
type started struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // what run returned; read after done
	stderr *testkit.Buffer
}

// stop cancels the run and returns its error.
func (s *started) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(waitTimeout):
		t.Fatal("run did not return after its context was cancelled")
		return nil
	}
}

// start runs the program with vars on a free loopback port and waits until
// it listens.
func start(t *testing.T, vars map[string]string) *started {
	t.Helper()
	all := map[string]string{"PORT": "0", "LISTEN_ADDR": "127.0.0.1"}
	for k, v := range vars {
		all[k] = v
	}
	ctx, cancel := context.WithCancel(t.Context())
	s := &started{cancel: cancel, done: make(chan struct{}), stderr: &testkit.Buffer{}}
	addrc := make(chan string, 1)
	go func() {
		defer close(s.done)
		s.err = run(ctx, nil, env(all), io.Discard, s.stderr, func(addr string) { addrc <- addr })
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	select {
	case s.addr = <-addrc:
	case <-s.done:
		t.Fatalf("run returned before listening: %v", s.err)
	case <-time.After(waitTimeout):
		t.Fatal("run did not start listening")
	}
	return s
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := testkit.Do(t, nil, req)
	return resp.StatusCode, string(body)
}

func TestRunServesAndShutsDown(t *testing.T) {
	s := start(t, map[string]string{"DEPLOYMENT_COLOR": "green", "APP_VERSION": "v7"})

	code, body := get(t, "http://"+s.addr+"/")
	if code != 200 || !strings.HasPrefix(body, "color=green version=v7 host=") {
		t.Errorf("GET / = %d %q", code, body)
	}
	if code, _ := get(t, "http://"+s.addr+"/health"); code != 200 {
		t.Errorf("GET /health = %d, want 200", code)
	}

	if err := s.stop(t); err != nil {
		t.Errorf("run after cancel = %v, want nil", err)
	}
	logs := s.stderr.String()
	for _, want := range []string{`"msg":"listening"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if _, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		t.Error("still listening after run returned")
	}
}

// An open event stream must not hold up shutdown.
func TestRunShutdownEndsStreams(t *testing.T) {
	s := start(t, nil)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.addr+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 1)
	if _, err := resp.Body.Read(buf); err != nil { // the first event is under way
		t.Fatal(err)
	}
	if err := s.stop(t); err != nil {
		t.Errorf("run after cancel = %v, want nil", err)
	}
}

func TestRunStartUnhealthy(t *testing.T) {
	s := start(t, map[string]string{"START_UNHEALTHY": "true"})
	if code, _ := get(t, "http://"+s.addr+"/health"); code != 503 {
		t.Errorf("GET /health = %d, want 503", code)
	}
}

func TestRunBadEnvironment(t *testing.T) {
	tests := []struct {
		name, key, value string
	}{
		{"port not a number", "PORT", "http"},
		{"port too big", "PORT", "65536"},
		{"port negative", "PORT", "-1"},
		{"color with a space", "DEPLOYMENT_COLOR", "dark blue"},
		{"color with a newline", "DEPLOYMENT_COLOR", "blue\nX-Evil: 1"},
		{"color too long", "DEPLOYMENT_COLOR", strings.Repeat("b", 64)},
		{"listen address with port", "LISTEN_ADDR", "127.0.0.1:80"},
		{"start unhealthy not a bool", "START_UNHEALTHY", "maybe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"PORT": "0", "LISTEN_ADDR": "127.0.0.1", tt.key: tt.value}
			err := run(t.Context(), nil, env(vars), io.Discard, io.Discard, func(string) {
				t.Error("run listened despite a bad environment")
			})
			if err == nil {
				t.Fatal("run = nil, want an error")
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q does not name %s", err, tt.key)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
			if got := exitStatus(err); got != 2 {
				t.Errorf("exit status = %d, want 2", got)
			}
		})
	}
}

func TestRunArguments(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantStatus int
		wantStdout string
	}{
		{"version", []string{"-version"}, 0, "demo-app v3 go"},
		{"help", []string{"-h"}, 0, "usage: demo-app"},
		{"unknown flag", []string{"-bogus"}, 2, ""},
		{"unknown argument", []string{"serve"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			vars := map[string]string{"APP_VERSION": "v3", "PORT": "0"}
			err := run(t.Context(), tt.args, env(vars), &stdout, io.Discard, func(string) {
				t.Error("run listened")
			})
			if got := exitStatus(err); got != tt.wantStatus {
				t.Errorf("exit status = %d (%v), want %d", got, err, tt.wantStatus)
			}
			if !strings.HasPrefix(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout = %q, want prefix %q", stdout.String(), tt.wantStdout)
			}
		})
	}
}

func TestHealthcheck(t *testing.T) {
	healthy := start(t, nil)
	failing := start(t, map[string]string{"START_UNHEALTHY": "1"})
	closed := func() string { // a port nobody listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()

	tests := []struct {
		name       string
		args       []string
		addr       string
		vars       map[string]string
		wantStatus int
	}{
		{"flag, healthy", []string{"-healthcheck"}, healthy.addr, nil, 0},
		{"argument, healthy", []string{"healthcheck"}, healthy.addr, nil, 0},
		{"failing", []string{"healthcheck"}, failing.addr, nil, 1},
		{"nobody listening", []string{"healthcheck"}, closed, nil, 1},
		{"unspecified listen address", []string{"healthcheck"}, healthy.addr, map[string]string{"LISTEN_ADDR": "0.0.0.0"}, 0},
		{"bad environment", []string{"healthcheck"}, healthy.addr, map[string]string{"PORT": "x"}, 1},
		{"port 0", []string{"healthcheck"}, healthy.addr, map[string]string{"PORT": "0"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := net.SplitHostPort(tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			vars := map[string]string{"PORT": port, "LISTEN_ADDR": host}
			for k, v := range tt.vars {
				vars[k] = v
			}
			err = run(t.Context(), tt.args, env(vars), io.Discard, io.Discard, func(string) {
				t.Error("healthcheck listened")
			})
			if got := exitStatus(err); got != tt.wantStatus {
				t.Errorf("exit status = %d (%v), want %d", got, err, tt.wantStatus)
			}
			if tt.wantStatus != 0 && !errors.Is(err, errUnhealthy) {
				t.Errorf("error %v is not errUnhealthy", err)
			}
		})
	}

	for _, s := range []*started{healthy, failing} {
		if err := s.stop(t); err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	}
}
