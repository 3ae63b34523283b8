package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"golang.org/x/sys/unix"
)

// holdApp is an instance for the shutdown tests: /health answers 200, /hold
// answers only once release is closed (entered receives a value when it
// starts), anything else answers its colour at once.
type holdApp struct {
	srv     *httptest.Server
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHoldApp(t *testing.T, color string) *holdApp {
	t.Helper()
	a := &holdApp{entered: make(chan struct{}, 64), release: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
		case "/hold":
			a.entered <- struct{}{}
			select {
			case <-a.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "color=%s\n", color)
	}))
	t.Cleanup(func() { a.unblock(); a.srv.Close() })
	return a
}

func (a *holdApp) unblock() { a.once.Do(func() { close(a.release) }) }

// replica is one bluegreen process on fixed loopback ports.
type replica struct {
	t        *testing.T
	bin      string
	env      []string
	pub, adm string
	p        *testkit.Process
}

// newReplica prepares a bluegreen process in front of blue and green with
// fast health checks and its own state file; extra overrides the env.
func newReplica(t *testing.T, blue, green string, extra ...string) *replica {
	t.Helper()
	bin, _ := binaries(t)
	r := &replica{t: t, bin: bin, pub: "127.0.0.1:" + fixedPort(t), adm: "127.0.0.1:" + fixedPort(t)}
	r.env = append([]string{
		"BLUEGREEN_BLUE_URLS=" + blue, "BLUEGREEN_GREEN_URLS=" + green,
		"BLUEGREEN_LISTEN=" + r.pub, "BLUEGREEN_ADMIN_LISTEN=" + r.adm,
		"BLUEGREEN_STATE=file:" + filepath.Join(t.TempDir(), "state.json"),
		"BLUEGREEN_HEALTH_INTERVAL=100ms", "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1",
		"BLUEGREEN_LOG_FORMAT=json",
	}, extra...)
	return r
}

// start runs the process and waits until /readyz answers 200.
func (r *replica) start() {
	r.t.Helper()
	r.p = testkit.Start(r.t, "bluegreen", r.bin, r.env)
	waitHTTP(r.t, "http://"+r.adm+"/readyz", 200)
}

func (r *replica) signal(sig os.Signal) {
	r.t.Helper()
	r.p.Signal(sig)
}

// fixedPort returns a loopback TCP port nothing listens on now. These tests
// restart a replica on the same address (a load balancer's server line
// names it), so the port is chosen before the process binds it.
func fixedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// startHeld starts a replica (env: extra) in front of a blue and a green
// holdApp, waits until it is ready, and returns it with blue, the active
// colour.
func startHeld(t *testing.T, extra ...string) (r *replica, blue *holdApp) {
	t.Helper()
	blue, green := newHoldApp(t, "blue"), newHoldApp(t, "green")
	r = newReplica(t, blue.srv.URL, green.srv.URL, extra...)
	r.start()
	return r, blue
}

// hold sends GET /hold on a new connection and returns it once app holds
// the request.
func (r *replica) hold(app *holdApp) *rawConn {
	r.t.Helper()
	c := dialRaw(r.t, r.pub)
	if _, err := fmt.Fprint(c.nc, "GET /hold HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		r.t.Fatal(err)
	}
	<-app.entered
	return c
}

// waitLog waits for a line of the process's output containing s: the
// process says what phase it is in, and the test follows it.
func (r *replica) waitLog(s string) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(r.p.Out.String(), s) {
		select {
		case <-r.p.Exited():
			if strings.Contains(r.p.Out.String(), s) {
				return
			}
			r.t.Fatalf("process exited before logging %q; output:\n%s", s, r.p.Out.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no %q in the output; output:\n%s", s, r.p.Out.String())
		}
	}
}

// Log lines that mark the phases of a graceful stop.
const (
	logDelay   = "shutting down: /readyz answers 503"
	logDrain   = "shutting down: no new connections"
	logStopped = `"msg":"stopped"`
	logAtOnce  = "stopping at once"
)

// rawConn is one keep-alive client connection speaking HTTP/1.1.
type rawConn struct {
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{nc: nc, br: bufio.NewReader(nc)}
}

// get sends GET path and reads the response.
func (c *rawConn) get(path string) (*http.Response, string, error) {
	c.nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c.nc, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return nil, "", err
	}
	return c.read()
}

func (c *rawConn) read() (*http.Response, string, error) {
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), err
}

// closedByPeer reports whether the server closed the connection: a read
// returns EOF (or a reset) within the deadline.
func (c *rawConn) closedByPeer(within time.Duration) error {
	c.nc.SetReadDeadline(time.Now().Add(within))
	_, err := c.br.ReadByte()
	switch {
	case err == nil:
		return errors.New("read a byte, want a closed connection")
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return err
}

func readyz(adm string) int {
	res, err := http.Get("http://" + adm + "/readyz")
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// The graceful stop, followed phase by phase in a real process with real
// signals, on the fast path and on net/http.
func TestShutdownTwoPhases(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, fast := range []string{"true", "false"} {
		t.Run("fast_path="+fast, func(t *testing.T) {
			r, blue := startHeld(t, "BLUEGREEN_SHUTDOWN_DELAY=1s", "BLUEGREEN_DRAIN_TIMEOUT=10s", "BLUEGREEN_FAST_PATH="+fast)

			idle := dialRaw(t, r.pub)  // kept alive and idle across the stop
			reuse := dialRaw(t, r.pub) // kept alive, used again during the delay
			for _, c := range []*rawConn{idle, reuse} {
				if res, body, err := c.get("/"); err != nil || res.StatusCode != 200 || body != "color=blue\n" || res.Close {
					t.Fatalf("before: %v %v %q", res, err, body)
				}
			}
			busy := r.hold(blue) // a request in flight across the stop

			sent := time.Now()
			r.signal(syscall.SIGTERM)
			r.waitLog(logDelay)
			// Phase 1: not ready, still serving everything: new
			// connections and kept-alive ones. A kept-alive connection's
			// next response ends it (Connection: close), so its client
			// reconnects through the load balancer, which by then sends
			// it elsewhere.
			if code := readyz(r.adm); code != 503 {
				t.Fatalf("/readyz during the delay = %d, want 503", code)
			}
			res, body, err := reuse.get("/")
			if err != nil || res.StatusCode != 200 || body != "color=blue\n" || !res.Close {
				t.Fatalf("kept-alive request during the delay: %v %v %q, want 200 with Connection: close", res, err, body)
			}
			if err := reuse.closedByPeer(5 * time.Second); err != nil {
				t.Fatalf("connection after its Connection: close answer: %v", err)
			}
			if res, err := http.Get("http://" + r.pub + "/"); err != nil || res.StatusCode != 200 {
				t.Fatalf("new connection during the delay: %v %v", res, err)
			} else {
				res.Body.Close()
			}

			// An idle connection is left alone during the delay (closing it
			// would race with a request its client may be sending).
			select {
			case <-r.p.Exited():
			default:
				if !strings.Contains(r.p.Out.String(), logDrain) {
					idle.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
					if _, err := idle.br.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("idle connection during the delay: %v, want still open", err)
					}
				}
			}

			// Phase 2: the listener is closed, idle connections are closed,
			// the request in flight finishes with Connection: close.
			r.waitLog(logDrain)
			if took := time.Since(sent); took < time.Second {
				t.Fatalf("listener closed %s after SIGTERM, want the 1s delay first", took)
			}
			if err := idle.closedByPeer(5 * time.Second); err != nil {
				t.Fatalf("idle keep-alive connection after the delay: %v", err)
			}
			if c, err := net.DialTimeout("tcp", r.pub, time.Second); err == nil {
				c.Close()
				t.Fatal("the public listener still accepts after the delay")
			}
			select {
			case <-r.p.Exited():
				t.Fatalf("exited with a request in flight; output:\n%s", r.p.Out.String())
			default:
			}
			blue.unblock()
			res, body, err = busy.read()
			if err != nil || res.StatusCode != 200 || body != "color=blue\n" || !res.Close {
				t.Fatalf("request in flight: %v %v %q, want 200 with Connection: close", res, err, body)
			}
			if code := r.p.ExitCode(t, 10*time.Second); code != 0 {
				t.Fatalf("exit %d; output:\n%s", code, r.p.Out.String())
			}
			if !strings.Contains(r.p.Out.String(), logStopped) {
				t.Fatalf("no clean stop logged:\n%s", r.p.Out.String())
			}
		})
	}
}

// A second signal ends the stop at once, in either phase: SIGTERM twice
// during the delay, SIGINT after SIGTERM while a request is in flight.
func TestShutdownSecondSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Run("SIGTERM twice during the delay", func(t *testing.T) {
		r, _ := startHeld(t, "BLUEGREEN_SHUTDOWN_DELAY=60s")
		r.signal(syscall.SIGTERM)
		r.waitLog(logDelay)
		sent := time.Now()
		r.signal(syscall.SIGTERM)
		if code := r.p.ExitCode(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		t.Logf("exited %s after the second SIGTERM", time.Since(sent).Round(time.Millisecond))
		if !strings.Contains(r.p.Out.String(), logAtOnce) {
			t.Fatalf("output:\n%s", r.p.Out.String())
		}
	})
	t.Run("SIGINT after SIGTERM while draining", func(t *testing.T) {
		r, blue := startHeld(t, "BLUEGREEN_SHUTDOWN_DELAY=0s", "BLUEGREEN_DRAIN_TIMEOUT=60s")
		busy := r.hold(blue)
		r.signal(syscall.SIGTERM)
		r.waitLog(logDrain)
		r.signal(syscall.SIGINT)
		if code := r.p.ExitCode(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if _, _, err := busy.read(); err == nil {
			t.Fatal("the held request got an answer; want it cut")
		}
	})
}

// postLoad runs POST / from n keep-alive clients against url until stop is
// closed and counts the outcomes. A request fails on any error or any
// answer but 200 from the expected colour.
type postLoad struct {
	ok, failed, refused atomic.Int64
	mu                  sync.Mutex
	errs                map[string]int
	failedAt            []time.Time
	wg                  sync.WaitGroup
}

func startPostLoad(url string, n int, stop <-chan struct{}, want string) *postLoad {
	l := &postLoad{errs: map[string]int{}}
	for range n {
		l.wg.Go(func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				// POST with a body: a client never sends it again by itself
				// (net/http's transport replays only idempotent requests),
				// so every connection the proxy mishandles shows.
				res, err := c.Post(url, "text/plain", strings.NewReader("payload"))
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						l.refused.Add(1)
						continue
					}
					l.fail(err.Error())
					continue
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || string(b) != want {
					l.fail(fmt.Sprintf("%d %q %v", res.StatusCode, b, err))
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *postLoad) fail(why string) {
	l.failed.Add(1)
	l.mu.Lock()
	l.errs[why]++
	l.failedAt = append(l.failedAt, time.Now())
	l.mu.Unlock()
}

func (l *postLoad) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d ok, %d failed, %d refused at connect; failures: %v", l.ok.Load(), l.failed.Load(), l.refused.Load(), l.errs)
}

// SIGTERM under load with no balancer in front: nothing fails during the
// delay, and the requests in flight when the listener closes finish. After
// that the clients have nowhere to go: new connections are refused, and a
// connection the kernel had queued but the proxy not yet accepted when the
// listener closed is reset before anything of it was read. Those are counted
// and reported apart; behind a load balancer (TestRollingRestartBehindHAProxy)
// there are none.
func TestShutdownUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r, _ := startHeld(t, "BLUEGREEN_SHUTDOWN_DELAY=1s", "BLUEGREEN_DRAIN_TIMEOUT=5s")
	stop := make(chan struct{})
	l := startPostLoad("http://"+r.pub+"/", 32, stop, "color=blue\n")
	for l.ok.Load() < 2000 {
		time.Sleep(10 * time.Millisecond)
	}
	r.signal(syscall.SIGTERM)
	r.waitLog(logDelay)
	okAtSignal := l.ok.Load()
	r.waitLog(logDrain)
	okInDelay := l.ok.Load() - okAtSignal
	if code := r.p.ExitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	close(stop)
	l.wg.Wait()
	closedAt := logTime(t, r.p.Out.String(), logDrain)
	before, after := 0, 0
	for _, at := range l.failedAt {
		if at.Before(closedAt) {
			before++
		} else {
			after++
		}
	}
	t.Logf("SIGTERM under load, no balancer: %s; %d answered during the 1s delay; failed before the listener closed: %d, after: %d",
		l, okInDelay, before, after)
	if before != 0 {
		t.Fatalf("%d requests failed before the listener closed: %s", before, l)
	}
	for why := range l.errs {
		if !strings.Contains(why, "connection reset") && !strings.HasSuffix(why, "EOF") && !strings.Contains(why, "server closed idle connection") {
			t.Errorf("a failure that is not a connection cut before any answer: %s", why)
		}
	}
	if okInDelay == 0 {
		t.Fatal("nothing served during the delay")
	}
}

// logTime returns the time of the first JSON log line containing s.
func logTime(t *testing.T, out, s string) time.Time {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.Contains(line, s) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		return rec.Time
	}
	t.Fatalf("no log line with %q", s)
	return time.Time{}
}

// Signals other tools give meaning to. SIGHUP stops nothing: a terminal
// that closes (an ssh session ending) or an operator used to nginx's
// reload sends it, and Go's default would end the process at once, cutting
// every request in flight; without TLS there is nothing to reload, so it
// is logged and ignored. SIGQUIT is a graceful stop, as SIGTERM is: it is
// nginx's (the STOPSIGNAL of nginx's image, which a compose file may carry
// over), where Go's default is a stack dump and exit 2 at once (goroutine
// dumps are at /debug/pprof with BLUEGREEN_PPROF). A request held across
// SIGQUIT gets its answer. SIGUSR1 (nginx's log reopening, which a copied
// logrotate rule sends) and SIGUSR2 are logged and stop nothing; Go's
// default ended the process.
func TestSIGHUPAndSIGQUIT(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r, blue := startHeld(t, "BLUEGREEN_SHUTDOWN_DELAY=0s", "BLUEGREEN_DRAIN_TIMEOUT=20s")
	r.signal(syscall.SIGHUP)
	r.waitLog("SIGHUP: nothing to reload")
	if res, body, err := dialRaw(t, r.pub).get("/"); err != nil || res.StatusCode != 200 || body != "color=blue\n" {
		t.Fatalf("after SIGHUP: %v %q %v\n%s", res, body, err, r.p.Out.String())
	}
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2} {
		r.signal(sig)
		r.waitLog(`"msg":"signal ignored`)
		r.waitLog(unix.SignalName(sig))
		if res, body, err := dialRaw(t, r.pub).get("/"); err != nil || res.StatusCode != 200 || body != "color=blue\n" {
			t.Fatalf("after %v: %v %q %v\n%s", sig, res, body, err, r.p.Out.String())
		}
	}
	busy := r.hold(blue)
	r.signal(syscall.SIGQUIT)
	r.waitLog(logDrain)
	blue.unblock()
	if res, body, err := busy.read(); err != nil || res.StatusCode != 200 || body != "color=blue\n" {
		t.Fatalf("the request in flight at SIGQUIT: %v %q %v\n%s", res, body, err, r.p.Out.String())
	}
	if code := r.p.ExitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGQUIT\n%s", code, r.p.Out.String())
	}
}

// The proxy goes on serving when nobody reads its log any more (the
// reader of the pipe on its standard error exited: a shipper, a
// restarted journald). Go's default for SIGPIPE ended the process at its
// next log line, with every request in flight; it also stops cleanly.
func TestLogReaderGone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, demoBin := binaries(t)
	_, _, blueURL, greenURL := startDemoPair(t, demoBin)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "BLUEGREEN_BLUE_URLS="+blueURL, "BLUEGREEN_GREEN_URLS="+greenURL,
		"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_LOG_FORMAT=json",
		"BLUEGREEN_ACCESS_LOG=true", "BLUEGREEN_SHUTDOWN_DELAY=0s",
		"BLUEGREEN_STATE=file:"+filepath.Join(t.TempDir(), "state.json"), "BLUEGREEN_STATE_CACHE=off")
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var pub string
	sc := bufio.NewScanner(pr)
	for pub == "" && sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "bluegreen serving" {
			pub = testkit.Addr(line, "listen")
		}
	}
	pr.Close() // the reader is gone: every later log line is a write into a closed pipe
	if pub == "" {
		t.Fatal("no serving line")
	}
	waitHTTP(t, "http://"+pub+"/", 200)
	for i := range 20 {
		res, err := http.Get("http://" + pub + "/")
		if err != nil {
			t.Fatalf("request %d after the log's reader left: %v", i, err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, res.StatusCode)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
