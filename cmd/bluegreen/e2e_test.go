package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tier: the built bluegreen and demo-app binaries as real
// processes on loopback, driven through the CLI and plain HTTP.

var buildOnce struct {
	sync.Once
	dir string
	err error
}

// binaries builds bluegreen and demo-app once per test process.
func binaries(t *testing.T) (bluegreen, demoApp string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bluegreen-e2e-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.dir = dir
		for _, pkg := range []string{".", "github.com/cryoprotect/bluegreen/cmd/demo-app"} {
			name := "bluegreen"
			if pkg != "." {
				name = "demo-app"
			}
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildOnce.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return filepath.Join(buildOnce.dir, "bluegreen"), filepath.Join(buildOnce.dir, "demo-app")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.dir != "" {
		os.RemoveAll(buildOnce.dir)
	}
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

type proc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
	err    error
}

func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *proc) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("process still running after %s; output:\n%s", within, p.out.String())
		return -1
	}
}

func waitHTTP(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered %d (last: %v)", url, want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs a client subcommand of the built binary.
func cli(t *testing.T, bin, adminURL string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "BLUEGREEN_ADMIN_URL="+adminURL, "BLUEGREEN_ADMIN_TOKEN=e2e-token")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func TestE2EBinaries(t *testing.T) {
	bg, demo := binaries(t)
	bluePort, greenPort := freePort(t), freePort(t)
	startProc(t, demo, []string{"DEPLOYMENT_COLOR=blue", "APP_VERSION=v1", "LISTEN_ADDR=127.0.0.1", "PORT=" + bluePort})
	green := startProc(t, demo, []string{"DEPLOYMENT_COLOR=green", "APP_VERSION=v2", "LISTEN_ADDR=127.0.0.1", "PORT=" + greenPort})
	blueURL, greenURL := "http://127.0.0.1:"+bluePort, "http://127.0.0.1:"+greenPort
	waitHTTP(t, blueURL+"/health", 200)
	waitHTTP(t, greenURL+"/health", 200)

	pub, adm := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	statePath := filepath.Join(t.TempDir(), "state.json")
	env := []string{
		"BLUEGREEN_BLUE_URLS=" + blueURL, "BLUEGREEN_GREEN_URLS=" + greenURL,
		"BLUEGREEN_LISTEN=" + pub, "BLUEGREEN_ADMIN_LISTEN=" + adm,
		"BLUEGREEN_STATE=file:" + statePath, "BLUEGREEN_ADMIN_TOKEN=e2e-token",
		"BLUEGREEN_HEALTH_INTERVAL=100ms", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_LOG_FORMAT=json", "BLUEGREEN_SHUTDOWN_DELAY=0s",
	}
	proxy := startProc(t, bg, env)
	adminURL := "http://" + adm
	waitHTTP(t, adminURL+"/readyz", 200)

	if code, out := cli(t, bg, adminURL, "healthcheck"); code != 0 {
		t.Fatalf("healthcheck: %d %s", code, out)
	}
	body := func() string {
		res, err := http.Get("http://" + pub + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	if b := body(); !strings.HasPrefix(b, "color=blue version=v1") {
		t.Fatalf("before cutover: %q", b)
	}
	if code, out := cli(t, bg, adminURL, "cutover", "--reason", "e2e release", "--wait-healthy", "5s"); code != 0 || !strings.Contains(out, "green") {
		t.Fatalf("cutover: %d %s", code, out)
	}
	if b := body(); !strings.HasPrefix(b, "color=green version=v2") {
		t.Fatalf("after cutover: %q", b)
	}
	if code, out := cli(t, bg, adminURL, "status"); code != 0 || !strings.Contains(out, "active: green") {
		t.Fatalf("status: %d %s", code, out)
	}
	if code, out := cli(t, bg, adminURL, "history"); code != 0 || !strings.Contains(out, "e2e release") || !strings.Contains(out, "cli") {
		t.Fatalf("history: %d %s", code, out)
	}

	// SIGTERM with a request in flight: it completes; the process exits 0.
	got := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + pub + "/slow?d=700ms")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- fmt.Sprint(res.StatusCode, " ", string(b))
	}()
	time.Sleep(200 * time.Millisecond) // let the request reach the app
	proxy.cmd.Process.Signal(syscall.SIGTERM)
	if r := <-got; !strings.HasPrefix(r, "200 color=green") {
		t.Fatalf("in-flight request across SIGTERM: %s", r)
	}
	if code := proxy.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; output:\n%s", code, proxy.out.String())
	}

	// Restart: the state is the same.
	proxy = startProc(t, bg, env)
	waitHTTP(t, adminURL+"/readyz", 200)
	if b := body(); !strings.HasPrefix(b, "color=green") {
		t.Fatalf("after restart: %q\n%s", b, proxy.out.String())
	}

	// The green app dies: green is active but has no instance, so readyz
	// turns 503 and traffic gets 503 (no fall-over without a rollback).
	// The cutover was made before the restart and auto-rollback is on, so
	// within the window the proxy rolls back to blue by itself.
	green.cmd.Process.Kill()
	<-green.exited
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(body(), "color=blue") {
		if time.Now().After(deadline) {
			t.Fatalf("no auto-rollback after green died; proxy output:\n%s", proxy.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out := cli(t, bg, adminURL, "history", "--limit", "1"); code != 0 || !strings.Contains(out, "auto-rollback") {
		t.Fatalf("history after auto-rollback: %d %s", code, out)
	}
	proxy.cmd.Process.Signal(syscall.SIGTERM)
	if code := proxy.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestE2EBadStartExitCodes(t *testing.T) {
	bg, _ := binaries(t)
	corrupt := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(corrupt, []byte("not json"), 0o600)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	base := []string{"BLUEGREEN_BLUE_URLS=http://127.0.0.1:1", "BLUEGREEN_GREEN_URLS=http://127.0.0.1:2",
		"BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_LOG_FORMAT=json"}
	cases := []struct {
		name string
		env  []string
		code int
		want string
	}{
		{"bad config", []string{"BLUEGREEN_BLUE_URLS=x"}, 2, "BLUEGREEN_BLUE_URLS"},
		{"corrupt state", append(base, "BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_STATE=file:"+corrupt), 2, corrupt},
		{"port in use", append(base, "BLUEGREEN_LISTEN="+busy.Addr().String(), "BLUEGREEN_STATE=file:"+filepath.Join(t.TempDir(), "s.json")), 1, "address already in use"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, bg, tc.env)
			if code := p.exitCode(t, 10*time.Second); code != tc.code || !strings.Contains(p.out.String(), tc.want) {
				t.Fatalf("exit %d, want %d with %q; output:\n%s", code, tc.code, tc.want, p.out.String())
			}
		})
	}
}
