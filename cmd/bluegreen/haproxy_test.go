package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// haproxy is a real HAProxy in TCP mode in front of bluegreen replicas,
// checking each replica's GET /readyz on its admin listener.
type haproxy struct {
	t      *testing.T
	addr   string
	socket string
	p      *testkit.Process
}

func startHAProxy(t *testing.T, replicas map[string]*replica) *haproxy {
	t.Helper()
	bin := testkit.Tool(t, "haproxy", ".ci/apt/ops.txt")
	dir := t.TempDir()
	h := &haproxy{t: t, addr: "127.0.0.1:" + fixedPort(t), socket: filepath.Join(dir, "admin.sock")}
	var servers strings.Builder
	for name, r := range replicas {
		_, admPort, _ := net.SplitHostPort(r.adm)
		// Checked every 200 ms; one failed check takes a replica out,
		// two passed put it back.
		fmt.Fprintf(&servers, "  server %s %s check port %s inter 200 fall 1 rise 2\n", name, r.pub, admPort)
	}
	cfg := fmt.Sprintf(`global
  maxconn 2000
  stats socket %s mode 600 level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
frontend public
  bind %s
  default_backend proxies
backend proxies
  balance roundrobin
  option httpchk GET /readyz
%s`, h.socket, h.addr, servers.String())
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	h.p = testkit.Start(t, "haproxy", bin, nil, "-db", "-f", path)
	for _, name := range sortedKeys(replicas) {
		h.waitStatus(name, "UP")
	}
	return h
}

func sortedKeys(m map[string]*replica) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	if len(ks) == 2 && ks[0] > ks[1] {
		ks[0], ks[1] = ks[1], ks[0]
	}
	return ks
}

// status asks HAProxy's admin socket for a server's state (UP, DOWN, ...).
func (h *haproxy) status(server string) string {
	c, err := net.DialTimeout("unix", h.socket, time.Second)
	if err != nil {
		return "no socket: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, "show stat\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) > 17 && f[0] == "proxies" && f[1] == server {
			return f[17]
		}
	}
	return "unknown"
}

// waitStatus waits until HAProxy reports server in state want (UP, DOWN).
func (h *haproxy) waitStatus(server, want string) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.status(server)
		if strings.HasPrefix(got, want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("haproxy: server %s is %q, want %s; haproxy output:\n%s", server, got, want, h.p.Out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A rolling restart of two replicas behind HAProxy under load: replica A
// gets SIGTERM, HAProxy sees its /readyz turn 503 within the shutdown
// delay and stops sending it new connections, A closes its connections
// after their current response and exits; A starts again, HAProxy puts it
// back; then the same for B. Two rounds. No request fails.
func TestRollingRestartBehindHAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs HAProxy")
	}
	blue, green := newHoldApp(t, "blue"), newHoldApp(t, "green")
	// Both replicas route to blue, each with its own state file.
	reps := map[string]*replica{
		"a": newReplica(t, blue.srv.URL, green.srv.URL, "BLUEGREEN_SHUTDOWN_DELAY=1s", "BLUEGREEN_DRAIN_TIMEOUT=5s"),
		"b": newReplica(t, blue.srv.URL, green.srv.URL, "BLUEGREEN_SHUTDOWN_DELAY=1s", "BLUEGREEN_DRAIN_TIMEOUT=5s"),
	}
	for _, name := range sortedKeys(reps) {
		reps[name].start()
	}
	h := startHAProxy(t, reps)

	stop := make(chan struct{})
	l := startPostLoad("http://"+h.addr+"/", 32, stop, "color=blue\n")
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		l.wg.Wait()
	}()
	for l.ok.Load() < 1000 {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	var restarts []string
	for round := range 2 {
		for _, name := range sortedKeys(reps) {
			r := reps[name]
			began := time.Now()
			r.signal(syscall.SIGTERM)
			h.waitStatus(name, "DOWN")
			down := time.Since(began)
			if code := r.p.ExitCode(t, 15*time.Second); code != 0 {
				t.Fatalf("%s exit %d; output:\n%s", name, code, r.p.Out.String())
			}
			exited := time.Since(began)
			r.start()
			h.waitStatus(name, "UP")
			restarts = append(restarts, fmt.Sprintf("round %d %s: out of rotation after %s, exited after %s, back in rotation after %s",
				round+1, name, down.Round(time.Millisecond), exited.Round(time.Millisecond), time.Since(began).Round(time.Millisecond)))
		}
	}
	okDuring := l.ok.Load()
	close(stop)
	l.wg.Wait()
	for _, s := range restarts {
		t.Log(s)
	}
	t.Logf("rolling restart behind HAProxy (%s, 2 rounds of A then B): %s", time.Since(start).Round(time.Millisecond), l)
	if l.failed.Load() != 0 || l.refused.Load() != 0 {
		t.Fatalf("failed requests during the rolling restart: %s", l)
	}
	if okDuring < 1000 {
		t.Fatalf("too little traffic to tell: %s", l)
	}
}
