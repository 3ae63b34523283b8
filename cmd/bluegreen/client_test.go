package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/admin"
	"github.com/cryoprotect/bluegreen/health"
	"github.com/cryoprotect/bluegreen/rollout"
	"github.com/cryoprotect/bluegreen/state"
)

var fixtureNow = time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)

// fixtureHealth is a rollout.HealthView whose instances tests flip.
type fixtureHealth struct {
	mu   sync.Mutex
	inst map[string][]health.InstanceStatus
}

func (h *fixtureHealth) Healthy(color string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, in := range h.inst[color] {
		if in.Healthy {
			n++
		}
	}
	return n
}

func (h *fixtureHealth) Instances(color string) []health.InstanceStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]health.InstanceStatus(nil), h.inst[color]...)
}

// setColor marks every instance of color up or down.
func (h *fixtureHealth) setColor(color string, up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.inst[color] {
		h.inst[color][i].Healthy = up
		h.inst[color][i].LastError = ""
		if !up {
			h.inst[color][i].LastError = "status 503"
		}
	}
}

// fixtureController is an admin.Controller over a state in memory.
type fixtureController struct {
	hv *fixtureHealth

	mu       sync.Mutex
	st       state.State
	failNext []error // returned by the next switch requests, in order
	switches int     // switch requests received
}

func (f *fixtureController) State() state.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fixtureController) Cutover(ctx context.Context, req rollout.Request) (rollout.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.nextErrLocked(); err != nil {
		return rollout.Result{State: f.st}, err
	}
	to := req.To
	if to == "" {
		to = otherColor(f.st.Active)
	}
	return f.switchLocked(state.ActionCutover, to, req)
}

func (f *fixtureController) Rollback(ctx context.Context, req rollout.Request) (rollout.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.nextErrLocked(); err != nil {
		return rollout.Result{State: f.st}, err
	}
	to := req.To
	if to == "" {
		if f.st.Previous == "" {
			return rollout.Result{State: f.st}, rollout.ErrNoPrevious
		}
		to = f.st.Previous
	}
	return f.switchLocked(state.ActionRollback, to, req)
}

func (f *fixtureController) nextErrLocked() error {
	f.switches++
	if len(f.failNext) == 0 {
		return nil
	}
	err := f.failNext[0]
	f.failNext = f.failNext[1:]
	return err
}

func otherColor(c string) string {
	if c == "blue" {
		return "green"
	}
	return "blue"
}

func (f *fixtureController) switchLocked(action, to string, req rollout.Request) (rollout.Result, error) {
	if to != "blue" && to != "green" {
		return rollout.Result{State: f.st}, fmt.Errorf("%w: unknown colour %q", rollout.ErrInvalid, to)
	}
	if to == f.st.Active {
		return rollout.Result{State: f.st}, nil
	}
	if !req.Force && f.hv.Healthy(to) == 0 {
		return rollout.Result{State: f.st}, fmt.Errorf("%w: %s (use force to switch anyway)", rollout.ErrUnhealthy, to)
	}
	trigger := req.Trigger
	if trigger == "" {
		trigger = state.TriggerAPI
	}
	f.applyLocked(action, to, trigger, req.Reason, req.Force)
	return rollout.Result{Changed: true, State: f.st}, nil
}

func (f *fixtureController) applyLocked(action, to, trigger, reason string, forced bool) {
	cur := f.st
	next := state.State{Active: to, Previous: cur.Active, Generation: cur.Generation + 1, ChangedAt: fixtureNow}
	next.History = append(append([]state.Event(nil), cur.History...), state.Event{
		Time: fixtureNow, Action: action, From: cur.Active, To: to,
		Trigger: trigger, Reason: reason, Generation: next.Generation, Forced: forced,
	})
	f.st = next
}

// autoRollback switches back as the real controller's auto-rollback does.
func (f *fixtureController) autoRollback(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applyLocked(state.ActionRollback, f.st.Previous, state.TriggerAutoRollback, reason, false)
}

func (f *fixtureController) failWith(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = append(f.failNext, errs...)
}

func (f *fixtureController) switchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.switches
}

// adminFixture is the real admin handler over the fixtures, on a real listener.
type adminFixture struct {
	ctl   *fixtureController
	hv    *fixtureHealth
	srv   *httptest.Server
	ready atomic.Bool

	statusGets atomic.Int64
	onStatus   atomic.Pointer[func(n int64)] // called before the n-th GET /admin/status is answered
	getAuth    atomic.Bool                   // a GET carried an Authorization header
}

func newAdminFixture(t *testing.T, token string) *adminFixture {
	t.Helper()
	fx := &adminFixture{hv: &fixtureHealth{inst: map[string][]health.InstanceStatus{
		"blue": {
			{URL: "http://a:5000", Healthy: true, Checked: true, LastCheck: fixtureNow.Add(-time.Second)},
			{URL: "http://b:5000", Healthy: true, Checked: true, LastCheck: fixtureNow.Add(-time.Second)},
		},
		"green": {
			{URL: "http://c:5000", Healthy: true, Checked: true, LastCheck: fixtureNow.Add(-time.Second)},
		},
	}}}
	fx.ctl = &fixtureController{hv: fx.hv, st: state.State{Active: "blue", Generation: 3, ChangedAt: fixtureNow}}
	fx.ready.Store(true)
	h := admin.New(admin.Config{
		Token:      token,
		Controller: fx.ctl,
		Health:     fx.hv,
		Colors:     [2]string{"blue", "green"},
		Applied: func() (string, uint64) {
			st := fx.ctl.State()
			return st.Active, st.Generation
		},
		Ready: func() (bool, string) {
			if fx.ready.Load() {
				return true, ""
			}
			return false, "blue has no healthy instance"
		},
		Log: slog.New(slog.DiscardHandler),
	})
	fx.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Authorization") != "" {
			fx.getAuth.Store(true)
		}
		if r.Method == http.MethodGet && r.URL.Path == "/admin/status" {
			n := fx.statusGets.Add(1)
			if hook := fx.onStatus.Load(); hook != nil {
				(*hook)(n)
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(fx.srv.Close)
	return fx
}

func (fx *adminFixture) hookStatus(fn func(n int64)) { fx.onStatus.Store(&fn) }

func testClientOptions() clientOptions {
	return clientOptions{
		retryMax:       3,
		retryWaitMin:   time.Millisecond,
		retryWaitMax:   5 * time.Millisecond,
		requestTimeout: 5 * time.Second,
		healthTimeout:  2 * time.Second,
		pollEvery:      5 * time.Millisecond,
		watchEvery:     5 * time.Millisecond,
		now:            func() time.Time { return fixtureNow },
	}
}

type clientRun struct {
	code           int
	stdout, stderr string
}

func runClientT(t *testing.T, env map[string]string, cmd string, args ...string) clientRun {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := runClientWith(t.Context(), testClientOptions(), cmd, args, getenv, &out, &errOut)
	r := clientRun{code: code, stdout: out.String(), stderr: errOut.String()}
	t.Logf("bluegreen %s %q -> %d\nstdout:\n%sstderr:\n%s", cmd, args, code, r.stdout, r.stderr)
	return r
}

func (fx *adminFixture) env(kv ...string) map[string]string {
	env := map[string]string{envAdminURL: fx.srv.URL}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func wantCode(t *testing.T, r clientRun, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%sstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func wantContains(t *testing.T, what, got string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(got, s) {
			t.Errorf("%s does not contain %q:\n%s", what, s, got)
		}
	}
}

func TestClientStatusHuman(t *testing.T) {
	fx := newAdminFixture(t, "")
	fx.ctl.st.Previous = "green"
	fx.hv.setColor("green", false)
	r := runClientT(t, fx.env(), "status")
	wantCode(t, r, clientExitOK)
	want := `active: blue (generation 3, applied 3, since 2026-11-28T20:00:00Z)
previous: green
blue:  2/2 healthy
  http://a:5000  up    checked 1s ago
  http://b:5000  up    checked 1s ago
green: 0/1 healthy
  http://c:5000  down  checked 1s ago  last error: status 503
`
	if r.stdout != want {
		t.Errorf("status output:\n%s\nwant:\n%s", r.stdout, want)
	}
	if r.stderr != "" {
		t.Errorf("stderr: %q", r.stderr)
	}
}

func TestClientStatusJSON(t *testing.T) {
	fx := newAdminFixture(t, "")
	r := runClientT(t, fx.env(), "status", "--json")
	wantCode(t, r, clientExitOK)
	var st admin.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("stdout is not a status: %v", err)
	}
	if st.Active != "blue" || st.Generation != 3 || st.Colors["blue"].Healthy != 2 || st.Colors["green"].Total != 1 {
		t.Errorf("status = %+v", st)
	}
	if !strings.Contains(r.stdout, "\n  \"active\": \"blue\"") {
		t.Errorf("JSON not indented:\n%s", r.stdout)
	}
}

func TestClientCutover(t *testing.T) {
	fx := newAdminFixture(t, "tok")
	r := runClientT(t, fx.env(envAdminToken, "tok"), "cutover", "--reason", "release 1.2")
	wantCode(t, r, clientExitOK)
	if r.stdout != "cutover: blue -> green (generation 4)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	st := fx.ctl.State()
	if st.Active != "green" || st.Generation != 4 {
		t.Fatalf("state = %+v", st)
	}
	ev := st.History[len(st.History)-1]
	if ev.Trigger != state.TriggerCLI || ev.Reason != "release 1.2" || ev.Forced {
		t.Errorf("event = %+v", ev)
	}
	if fx.getAuth.Load() {
		t.Error("a GET request carried the Authorization header")
	}

	// Back with an explicit target, then again: no change.
	r = runClientT(t, fx.env(envAdminToken, "tok"), "cutover", "--to", "blue")
	wantCode(t, r, clientExitOK)
	if r.stdout != "cutover: green -> blue (generation 5)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	r = runClientT(t, fx.env(envAdminToken, "tok"), "cutover", "--to", "blue")
	wantCode(t, r, clientExitOK)
	if r.stdout != "cutover: already on blue (no change)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if g := fx.ctl.State().Generation; g != 5 {
		t.Errorf("generation %d after a no-op, want 5", g)
	}
}

func TestClientCutoverJSON(t *testing.T) {
	fx := newAdminFixture(t, "")
	r := runClientT(t, fx.env(), "cutover", "--json")
	wantCode(t, r, clientExitOK)
	var st admin.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("stdout is not a status: %v", err)
	}
	if st.Changed == nil || !*st.Changed || st.Active != "green" {
		t.Errorf("answer = %+v", st)
	}
	wantContains(t, "stderr", r.stderr, "cutover: blue -> green (generation 4)")
}

func TestClientCutoverRefused(t *testing.T) {
	fx := newAdminFixture(t, "")
	fx.hv.setColor("green", false)
	r := runClientT(t, fx.env(), "cutover")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "cutover refused", "no healthy instance", "green", "HTTP 409")
	if fx.ctl.State().Active != "blue" {
		t.Error("switched anyway")
	}

	r = runClientT(t, fx.env(), "cutover", "--force")
	wantCode(t, r, clientExitOK)
	if st := fx.ctl.State(); st.Active != "green" || !st.History[len(st.History)-1].Forced {
		t.Errorf("forced cutover: state = %+v", st)
	}
}

func TestClientCutoverUnknownColor(t *testing.T) {
	fx := newAdminFixture(t, "")
	r := runClientT(t, fx.env(), "cutover", "--to", "purple")
	wantCode(t, r, clientExitUsage)
	wantContains(t, "stderr", r.stderr, `"purple"`, "blue, green")
	if fx.ctl.switchCount() != 0 {
		t.Error("a switch was requested")
	}
}

func TestClientCutoverRetriesGatewayAnswers(t *testing.T) {
	fx := newAdminFixture(t, "")
	fx.ctl.failWith(fmt.Errorf("%w: disk full", rollout.ErrStore)) // 503 once
	r := runClientT(t, fx.env(), "cutover")
	wantCode(t, r, clientExitOK)
	if r.stdout != "cutover: blue -> green (generation 4)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if n := fx.ctl.switchCount(); n != 2 {
		t.Errorf("%d switch requests, want 2", n)
	}

	// 503 on every attempt: the answer's reason, exit 1.
	fx.ctl.failWith(slicesRepeat(fmt.Errorf("%w: disk full", rollout.ErrStore), 4)...)
	r = runClientT(t, fx.env(), "cutover")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "state store unavailable", "disk full", "HTTP 503")
	if n := fx.ctl.switchCount(); n != 6 {
		t.Errorf("%d switch requests, want 6 (1 + 1 + 3 retries)", n)
	}

	// 500 is not retried.
	fx.ctl.failWith(errors.New("boom"))
	r = runClientT(t, fx.env(), "cutover")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "boom", "HTTP 500")
	if n := fx.ctl.switchCount(); n != 7 {
		t.Errorf("%d switch requests, want 7", n)
	}
}

func slicesRepeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

func TestClientCutoverToken(t *testing.T) {
	const secret = "s3cret-server-token"
	const wrong = "wrong-client-token-xyz"
	fx := newAdminFixture(t, secret)

	t.Run("wrong", func(t *testing.T) {
		for _, cmd := range []string{"cutover", "rollback"} {
			r := runClientT(t, fx.env(envAdminToken, wrong), cmd)
			wantCode(t, r, clientExitFailed)
			wantContains(t, "stderr", r.stderr, "HTTP 401", envAdminToken)
			for _, tok := range []string{secret, wrong} {
				if strings.Contains(r.stdout+r.stderr, tok) {
					t.Errorf("output contains the token %q", tok)
				}
			}
		}
		if fx.ctl.switchCount() != 0 {
			t.Error("a switch got through")
		}
	})
	t.Run("missing", func(t *testing.T) {
		r := runClientT(t, fx.env(), "cutover")
		wantCode(t, r, clientExitFailed)
		wantContains(t, "stderr", r.stderr, "HTTP 401")
	})
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runClientT(t, fx.env(envAdminTokenFile, path), "cutover")
		wantCode(t, r, clientExitOK)
		if fx.ctl.State().Active != "green" {
			t.Error("not switched")
		}
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Error("output contains the token")
		}
	})
	t.Run("both", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runClientT(t, fx.env(envAdminToken, secret, envAdminTokenFile, path), "cutover")
		wantCode(t, r, clientExitUsage)
		wantContains(t, "stderr", r.stderr, envAdminToken, envAdminTokenFile)
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Error("output contains the token")
		}
	})
	t.Run("unreadable file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no-such-token")
		r := runClientT(t, fx.env(envAdminTokenFile, path), "rollback")
		wantCode(t, r, clientExitUsage)
		wantContains(t, "stderr", r.stderr, envAdminTokenFile, path)
		if n := strings.Count(r.stderr, "\n"); n != 1 {
			t.Errorf("%d lines on stderr, want 1", n)
		}
	})
	t.Run("control character", func(t *testing.T) {
		r := runClientT(t, fx.env(envAdminToken, "a\nb"), "cutover")
		wantCode(t, r, clientExitUsage)
		wantContains(t, "stderr", r.stderr, envAdminToken)
	})
}

// A colour given as an argument is refused, before anything is sent,
// with the flag that names it.
func TestClientColourAsArgument(t *testing.T) {
	env := map[string]string{envAdminURL: "http://127.0.0.1:1"}
	for _, args := range [][]string{{"cutover", "green"}, {"cutover", "green", "--force"}, {"rollout", "green"}} {
		r := runClientT(t, env, args[0], args[1:]...)
		wantCode(t, r, clientExitUsage)
		wantContains(t, "stderr", r.stderr, `"green"`, "--to green")
	}
	r := runClientT(t, env, "history", "green")
	wantCode(t, r, clientExitUsage)
	if strings.Contains(r.stderr, "--to") {
		t.Errorf("history has no --to, yet: %s", r.stderr)
	}
	// A verb is not taken for a colour ("--to start" was suggested).
	r = runClientT(t, env, "rollout", "start")
	wantCode(t, r, clientExitUsage)
	wantContains(t, "stderr", r.stderr, `"start"`, "starts from flags alone", "--to green")
	if strings.Contains(r.stderr, "--to start") {
		t.Errorf("suggested --to start: %s", r.stderr)
	}
}

func TestClientBadAdminURL(t *testing.T) {
	for _, u := range []string{"ftp://x:21", "localhost:8081", "http://", "http://a b:1", "::bad"} {
		t.Run(u, func(t *testing.T) {
			r := runClientT(t, map[string]string{envAdminURL: u}, "status")
			wantCode(t, r, clientExitUsage)
			wantContains(t, "stderr", r.stderr, envAdminURL)
		})
	}
	t.Run("password not shown", func(t *testing.T) {
		r := runClientT(t, map[string]string{envAdminURL: "ftp://user:hunter2@x"}, "status")
		wantCode(t, r, clientExitUsage)
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("stderr shows the password: %s", r.stderr)
		}
	})
}

func TestClientUnreachable(t *testing.T) {
	u := closedURL(t)
	for _, cmd := range []string{"status", "history", "cutover", "rollback"} {
		t.Run(cmd, func(t *testing.T) {
			start := time.Now()
			r := runClientT(t, map[string]string{envAdminURL: u, envAdminToken: "tok-never-shown"}, cmd)
			wantCode(t, r, clientExitUnreachable)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
			want := "bluegreen: cannot reach the admin API at " + u + ": connection refused\n"
			if r.stderr != want {
				t.Errorf("stderr = %q, want %q", r.stderr, want)
			}
			if strings.Contains(r.stdout+r.stderr, "tok-never-shown") {
				t.Error("output contains the token")
			}
		})
	}
}

func TestClientCutoverWaitHealthy(t *testing.T) {
	t.Run("becomes healthy", func(t *testing.T) {
		fx := newAdminFixture(t, "")
		fx.hv.setColor("green", false)
		fx.hookStatus(func(n int64) {
			if n == 4 {
				fx.hv.setColor("green", true)
			}
		})
		r := runClientT(t, fx.env(), "cutover", "--wait-healthy", "10s")
		wantCode(t, r, clientExitOK)
		wantContains(t, "stdout", r.stdout, "waiting up to 10s for green", "cutover: blue -> green (generation 4)")
		if n := fx.statusGets.Load(); n < 4 {
			t.Errorf("%d status polls, want at least 4", n)
		}
	})
	t.Run("times out", func(t *testing.T) {
		fx := newAdminFixture(t, "")
		fx.hv.setColor("green", false)
		r := runClientT(t, fx.env(), "cutover", "--wait-healthy", "40ms")
		wantCode(t, r, clientExitFailed)
		wantContains(t, "stderr", r.stderr, "green has no healthy instance after waiting 40ms", "not switching")
		if fx.ctl.switchCount() != 0 {
			t.Error("a switch was requested after the wait timed out")
		}
		if n := fx.statusGets.Load(); n < 2 {
			t.Errorf("%d status polls, want several", n)
		}
	})
}

func TestClientCutoverWatch(t *testing.T) {
	t.Run("auto-rollback", func(t *testing.T) {
		fx := newAdminFixture(t, "")
		fx.hookStatus(func(n int64) {
			switch n {
			case 3:
				fx.hv.setColor("green", false)
			case 5:
				fx.ctl.autoRollback("green lost every healthy instance 2s after the cutover (window 5m0s)")
				fx.hv.setColor("green", true)
			}
		})
		r := runClientT(t, fx.env(), "cutover", "--watch", "1m")
		wantCode(t, r, clientExitSwitchedOff)
		wantContains(t, "stdout", r.stdout, "cutover: blue -> green (generation 4)", "watch: watching green for 1m0s", "green 0/1 healthy")
		wantContains(t, "stderr", r.stderr, "green is no longer active", "rollback green -> blue by auto-rollback (generation 5)", "lost every healthy instance")
	})
	t.Run("quiet", func(t *testing.T) {
		fx := newAdminFixture(t, "")
		r := runClientT(t, fx.env(), "cutover", "--watch", "30ms")
		wantCode(t, r, clientExitOK)
		wantContains(t, "stdout", r.stdout, "watch: green stayed active for 30ms\n")
		if r.stderr != "" {
			t.Errorf("stderr: %q", r.stderr)
		}
	})
}

func TestClientRollback(t *testing.T) {
	fx := newAdminFixture(t, "")
	r := runClientT(t, fx.env(), "rollback")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "rollback refused: no previous colour to roll back to", "blue has been the only active colour", "HTTP 409")

	wantCode(t, runClientT(t, fx.env(), "cutover"), clientExitOK)
	r = runClientT(t, fx.env(), "rollback", "--reason", "bad release")
	wantCode(t, r, clientExitOK)
	if r.stdout != "rollback: green -> blue (generation 5)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	st := fx.ctl.State()
	ev := st.History[len(st.History)-1]
	if st.Active != "blue" || ev.Action != state.ActionRollback || ev.Trigger != state.TriggerCLI || ev.Reason != "bad release" {
		t.Errorf("state = %+v", st)
	}

	fx.hv.setColor("green", false)
	r = runClientT(t, fx.env(), "rollback", "--json")
	wantCode(t, r, clientExitFailed)
	var body admin.ErrorBody
	if err := json.Unmarshal([]byte(r.stdout), &body); err != nil || body.Code != "unhealthy" {
		t.Errorf("stdout = %q (%v)", r.stdout, err)
	}
}

func TestClientHistory(t *testing.T) {
	fx := newAdminFixture(t, "")
	r := runClientT(t, fx.env(), "history")
	wantCode(t, r, clientExitOK)
	if r.stdout != "no switches recorded yet\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	wantCode(t, runClientT(t, fx.env(), "cutover", "--reason", "release  1.2\nnow"), clientExitOK)
	wantCode(t, runClientT(t, fx.env(), "rollback", "--force"), clientExitOK)

	r = runClientT(t, fx.env(), "history")
	wantCode(t, r, clientExitOK)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want a header and 2 rows", len(lines))
	}
	wantContains(t, "header", lines[0], "TIME", "ACTION", "FROM -> TO", "TRIGGER", "GENERATION", "REASON")
	wantContains(t, "newest row", lines[1], "2026-11-28T20:00:00Z", "rollback (forced)", "green -> blue", "cli", "5")
	wantContains(t, "oldest row", lines[2], "cutover", "blue -> green", "4", "release 1.2 now")

	r = runClientT(t, fx.env(), "history", "--limit", "1", "--json")
	wantCode(t, r, clientExitOK)
	var h struct{ History []state.Event }
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.History) != 1 || h.History[0].Generation != 5 {
		t.Errorf("history = %+v", h.History)
	}

	wantCode(t, runClientT(t, fx.env(), "history", "--limit", "0"), clientExitUsage)
}

func TestClientHealthcheck(t *testing.T) {
	fx := newAdminFixture(t, "")
	r := runClientT(t, fx.env(), "healthcheck")
	wantCode(t, r, clientExitOK)
	if r.stdout+r.stderr != "" {
		t.Errorf("output on success: %q %q", r.stdout, r.stderr)
	}

	fx.ready.Store(false)
	r = runClientT(t, fx.env(), "healthcheck")
	wantCode(t, r, clientExitFailed)
	if r.stderr != "bluegreen: healthcheck: /readyz answered 503 Service Unavailable: blue has no healthy instance\n" {
		t.Errorf("stderr = %q", r.stderr)
	}
	r = runClientT(t, fx.env(), "healthcheck", "--live")
	wantCode(t, r, clientExitOK)

	r = runClientT(t, map[string]string{envAdminURL: closedURL(t)}, "healthcheck")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "cannot reach", "connection refused")
	if n := strings.Count(r.stderr, "\n"); n != 1 {
		t.Errorf("%d lines on stderr, want 1", n)
	}

	// Docker reserves exit status 2 of a HEALTHCHECK: only 0 or 1.
	wantCode(t, runClientT(t, map[string]string{envAdminURL: "nope"}, "healthcheck"), clientExitFailed)
	wantCode(t, runClientT(t, fx.env(), "healthcheck", "--bogus"), clientExitFailed)
}

func TestClientHelpAndBadFlags(t *testing.T) {
	for _, cmd := range []string{"status", "history", "cutover", "rollback", "healthcheck"} {
		t.Run(cmd, func(t *testing.T) {
			for _, h := range []string{"--help", "-h"} {
				r := runClientT(t, nil, cmd, h)
				wantCode(t, r, clientExitOK)
				wantContains(t, "help", r.stdout, "Usage: bluegreen "+cmd, "Flags:", envAdminURL)
				if r.stderr != "" {
					t.Errorf("stderr: %q", r.stderr)
				}
			}
			bad := clientExitUsage
			if cmd == "healthcheck" {
				bad = clientExitFailed
			}
			r := runClientT(t, nil, cmd, "--bogus")
			wantCode(t, r, bad)
			wantContains(t, "stderr", r.stderr, "bogus", "bluegreen "+cmd+" --help")
			wantCode(t, runClientT(t, nil, cmd, "extra-arg"), bad)
		})
	}
	r := runClientT(t, nil, "cutover", "--help")
	wantContains(t, "cutover help", r.stdout, "-to", "-force", "-reason", "-wait-healthy", "-watch", "-json", envAdminTokenFile)
	wantCode(t, runClientT(t, nil, "cutover", "--watch", "soon"), clientExitUsage)
	wantCode(t, runClientT(t, nil, "cutover", "--watch", "-1s"), clientExitUsage)
	wantCode(t, runClientT(t, nil, "nope"), clientExitUsage)
}

// What a newcomer types first: --version prints the version, and
// "help COMMAND" is that command's help, as "COMMAND --help" is.
func TestVersionFlagAndHelpCommand(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--version"}, "bluegreen dev"},
		{[]string{"-version"}, "bluegreen dev"},
		{[]string{"help", "cutover"}, "Usage: bluegreen cutover"},
		{[]string{"help", "rollout"}, "Usage: bluegreen rollout"},
		{[]string{"help", "serve"}, "Usage: bluegreen [serve]"},
		{[]string{"help"}, "bluegreen: a reverse proxy for blue/green releases"},
	}
	for _, c := range cases {
		var stdout, stderr strings.Builder
		if code := run(t.Context(), c.args, nil, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), c.want) || stderr.Len() != 0 {
			t.Errorf("bluegreen %v: exit %d, stdout %q, stderr %q; want 0 and %q", c.args, code, stdout.String(), stderr.String(), c.want)
		}
	}
	var stdout, stderr strings.Builder
	if code := run(t.Context(), []string{"help", "nope"}, nil, &stdout, &stderr); code != exitConfig || !strings.Contains(stderr.String(), `unknown command "nope"`) {
		t.Errorf("bluegreen help nope: exit %d, stderr %q", code, stderr.String())
	}
}
