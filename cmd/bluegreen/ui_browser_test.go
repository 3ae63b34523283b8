package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium (or another Chrome) for the browser
// tests: skipped on a developer machine without one, a failure in CI.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (CI installs it from .ci/apt/ui.txt)")
	}
	t.Skip("chromium is not installed")
	return ""
}

// loopbackAddr returns a loopback address whose port was free a moment ago.
func loopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// artifactDir is where the browser test writes its screenshot:
// $BLUEGREEN_UI_ARTIFACTS, or a new temporary directory that is kept.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("BLUEGREEN_UI_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "bluegreen-ui-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// newBrowser starts a headless chromium (exe) with its own profile and
// returns a tab's context, which ends after timeout; extra adds flags.
// The browser stops when the test ends.
func newBrowser(t *testing.T, exe string, timeout time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()))
	base, cancelTime := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(base, append(opts, extra...)...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelTime()
	})
	return ctx
}

// TestStatusPageInBrowser drives the status page in a real headless
// chromium against a real proxy and demo apps: blue is shown live; a wrong
// token gets the API's 401 message; the right token and "Cut over" with a
// reason show green within 2 s with the history row; a green instance that
// dies is shown unhealthy within a health interval (plus one poll); a
// progressive rollout started through the API is shown (step, weights),
// paused from the page, shown in a 1280×800 screenshot written as an
// artifact, and aborted from the page with a reason (phase and history row); across a restart of the
// proxy the page says it is offline, then goes on and rolls back; a cut over
// to a colour with no healthy instance shows the API's 409.
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts chromium")
	}
	exe := chromiumPath(t)
	const interval = time.Second
	// Fixed ports, so the page survives the proxy's restart at the end.
	ports := []string{"BLUEGREEN_LISTEN=" + loopbackAddr(t), "BLUEGREEN_ADMIN_LISTEN=" + loopbackAddr(t),
		"BLUEGREEN_ADMIN_TOKEN=s3cret-token", "BLUEGREEN_HEALTH_INTERVAL=" + interval.String()}
	st := startStack(t, 1, 2, ports...)
	pub, client := st.pub, &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	st.eventually(func() bool { return st.status().Colors["green"].Healthy == 2 }, "both green instances healthy")

	// Some traffic, so the charts have lines.
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if res, err := client.Get(pub + "/"); err == nil {
				res.Body.Close()
			}
		}
	})
	defer func() { close(stopLoad); load.Wait() }()

	ctx := newBrowser(t, exe, 2*time.Minute, chromedp.WindowSize(1280, 800))

	// Script errors fail the test.
	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			problems = append(problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, d.Text))
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				problems = append(problems, "console error: "+strings.Join(parts, " "))
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// waitFor polls a JavaScript condition and returns how long it took.
	waitFor := func(what, cond string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		ok, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(limit)))
		if err != nil || !ok {
			msg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("message").textContent`))
			t.Fatalf("%s: not within %v (%v); message %q", what, limit, err, msg)
		}
		return time.Since(start)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	cutover := func(token, reason string) {
		t.Helper()
		run("cut over",
			chromedp.SendKeys(chromedp.CSS("#token"), token),
			chromedp.Click(chromedp.CSS("#token-save")),
			chromedp.Click(chromedp.CSS("#btn-cutover")),
			chromedp.WaitVisible(chromedp.CSS("#reason")),
			chromedp.SendKeys(chromedp.CSS("#reason"), reason),
			chromedp.Click(chromedp.CSS("#confirm-ok")))
	}

	run("open the page", chromedp.Navigate(st.adm+"/"), chromedp.WaitVisible(chromedp.CSS("#active-color")))
	// Content-Security-Policy violations after the load are collected too.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`window.cspViolations = []; document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI))`)); err != nil {
		t.Fatal(err)
	}
	if got := text("#active-color"); got != "BLUE" {
		t.Fatalf("live colour shown %q, want BLUE", got)
	}
	waitFor("the script to poll", `document.getElementById("conn").textContent.startsWith("live")`, 5*time.Second)

	// A wrong token: the API's 401 message, and nothing changes.
	cutover("wrong-token", "should be refused")
	waitFor("the 401 message", `document.getElementById("message").textContent.includes("401")`, 5*time.Second)
	if msg := text("#message"); !strings.Contains(msg, "missing or wrong bearer token") {
		t.Fatalf("message %q lacks the API's reason", msg)
	}
	if a := st.status().Active; a != "blue" {
		t.Fatalf("a refused cutover switched to %s", a)
	}

	// The right token: green within 2 s, and the history row.
	cutover("s3cret-token", "release v1 from the browser")
	took := waitFor("green shown live", `document.getElementById("active-color").textContent === "GREEN"`, 2*time.Second)
	waitFor("the history row", `document.querySelector("#history tbody tr").textContent.includes("release v1 from the browser")`, 2*time.Second)
	t.Logf("green shown %v after the confirm click", took.Round(time.Millisecond))
	if a := st.status().Active; a != "green" {
		t.Fatalf("store says %s is live", a)
	}
	if stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("bluegreen.admin-token")`)); err != nil || stored != "s3cret-token" {
		t.Fatalf("token in sessionStorage %q (%v)", stored, err)
	}
	if cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`)); err != nil || cookies != "" {
		t.Fatalf("the page set cookies: %q", cookies)
	}

	// A green instance dies: its row turns unhealthy within a health
	// interval plus one poll (and some slack for a loaded machine).
	dead := st.green[1]
	dead.CloseClientConnections()
	dead.Close()
	row := fmt.Sprintf(`document.querySelector('tr[data-url="%s"]')`, dead.URL)
	took = waitFor("the dead instance shown unhealthy", row+`.textContent.includes("unhealthy")`, interval+1500*time.Millisecond+3*time.Second)
	t.Logf("dead instance shown unhealthy %v after it died (health interval %v, poll 1.5s)", took.Round(time.Millisecond), interval)
	if got := text(`tr[data-url="` + dead.URL + `"] .state`); !strings.Contains(got, "✗") {
		t.Fatalf("state cell %q has no symbol besides the colour", got)
	}

	// A progressive rollout back to blue, started through the API: the page
	// shows its phase, step and weights; "Pause" with a reason pauses it.
	if code, m := st.post("/admin/rollout", `{"to":"blue","steps":[10,50,100],"step_interval":"10m","reason":"release v2 to a tenth"}`,
		"Authorization", "Bearer s3cret-token"); code != http.StatusOK {
		t.Fatalf("start a rollout: %d %v", code, m)
	}
	const roShown = `document.getElementById("ro-phase").textContent === "running" && document.getElementById("ro-step").textContent.startsWith("1 of 3") &&
		document.getElementById("ro-weight").textContent === "blue 10 % · green 90 %" && document.getElementById("ro-meter").value === 10 &&
		document.querySelector('#ro-colors tr[data-color="blue"]').textContent.includes("target") &&
		document.getElementById("ro-counts").textContent === "this replica's traffic"`
	took = waitFor("the rollout shown", roShown, 5*time.Second)
	t.Logf("rollout shown %v after it started", took.Round(time.Millisecond))
	rolloutAction := func(action, reason string) {
		t.Helper()
		run(action,
			chromedp.Click(chromedp.CSS("#btn-ro-"+action)),
			chromedp.WaitVisible(chromedp.CSS("#reason")),
			chromedp.SendKeys(chromedp.CSS("#reason"), reason),
			chromedp.Click(chromedp.CSS("#confirm-ok")))
	}
	rolloutAction("pause", "hold at a tenth")
	waitFor("the rollout shown paused", `document.getElementById("ro-phase").textContent === "paused" &&
		document.getElementById("ro-verdict").textContent.includes("hold at a tenth") && !document.getElementById("btn-ro-resume").disabled`, 2*time.Second)
	if v := st.rolloutView(); v.Phase != "paused" || v.Weight != 10 {
		t.Fatalf("after the pause the rollout is %s at %d %%", v.Phase, v.Weight)
	}

	// A few polls so the charts carry the traffic, the switch and the
	// rollout's step, then the screenshot.
	waitFor("charts drawn", `document.querySelectorAll("#chart-rate path.s-blue, #chart-rate line.switch").length >= 2 && document.querySelector("#chart-rate line.step") !== null`, 15*time.Second)
	run("viewport", chromedp.EmulateViewport(1280, 800))
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(artifactDir(t), "status-page-1280x800.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", out)

	// "Abort" with a reason: the page shows it aborted, and the history row.
	rolloutAction("abort", "canary looked wrong")
	waitFor("the rollout shown aborted", `document.getElementById("ro-phase").textContent === "aborted" &&
		document.getElementById("ro-line").textContent.includes("aborted at 10 %") && document.getElementById("ro-live").hidden`, 2*time.Second)
	waitFor("the abort in the history", `document.querySelector("#history tbody tr").textContent.includes("abort") &&
		document.querySelector("#history tbody tr").textContent.includes("canary looked wrong")`, 2*time.Second)
	if v := st.rolloutView(); v.Phase != "aborted" || v.Active != "green" {
		t.Fatalf("after the abort the rollout is %s, %s live", v.Phase, v.Active)
	}

	// The proxy restarts: the page says it is offline, then carries on
	// (the token still in the tab) and rolls back.
	if err := st.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	waitFor("the page to notice the proxy is gone", `document.getElementById("conn").textContent.startsWith("OFFLINE")`, 10*time.Second)
	st.start(append([]string{
		"BLUEGREEN_BLUE_URLS=" + urls(st.blue), "BLUEGREEN_GREEN_URLS=" + urls(st.green),
		"BLUEGREEN_STATE=file:" + st.statePath, "BLUEGREEN_HEALTH_RISE=1", "BLUEGREEN_HEALTH_FALL=1",
	}, ports...))
	waitFor("the page to be live again", `document.getElementById("conn").textContent.startsWith("live")`, 10*time.Second)
	if got := text("#active-color"); got != "GREEN" {
		t.Fatalf("after the restart the page shows %q", got)
	}
	run("roll back",
		chromedp.Click(chromedp.CSS("#btn-rollback")),
		chromedp.WaitVisible(chromedp.CSS("#reason")),
		chromedp.SendKeys(chromedp.CSS("#reason"), "green looks slow"),
		chromedp.Click(chromedp.CSS("#confirm-ok")))
	waitFor("blue shown live after the roll back", `document.getElementById("active-color").textContent === "BLUE"`, 2*time.Second)
	waitFor("the roll back in the history", `document.querySelector("#history tbody tr").textContent.includes("green looks slow")`, 2*time.Second)

	// With no healthy green instance left, a cut over is refused with the
	// API's 409 and its reason.
	st.green[0].CloseClientConnections()
	st.green[0].Close()
	waitFor("green shown with no healthy instance", `document.querySelector("#color-green .healthy-count").textContent.startsWith("0/2")`, interval+5*time.Second)
	cutover("s3cret-token", "try green again")
	waitFor("the 409 message", `document.getElementById("message").textContent.includes("409")`, 5*time.Second)
	t.Logf("refusal shown: %q", text("#message"))
	if a := st.status().Active; a != "blue" {
		t.Fatalf("a refused cutover switched to %s", a)
	}

	csp, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.cspViolations`))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range csp {
		problems = append(problems, "CSP violation: "+v)
	}
	for _, p := range problems {
		t.Errorf("page problem: %s", p)
	}
}

// TestCrossSiteFormCannotSwitch: a page on another site that posts a form
// to the admin listener, in a real headless chromium, does not switch
// colours. No token is set, as by default on loopback, and a switch needs
// no body: before the admin API checked where a browser's request comes
// from, opening such a page flipped the active colour.
func TestCrossSiteFormCannotSwitch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts chromium")
	}
	exe := chromiumPath(t)
	st := startStack(t, 1, 1)
	st.eventually(func() bool { return st.status().Colors["green"].Healthy == 1 }, "green healthy")
	before := st.status()
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form id="f" method="POST" action="%s/admin/cutover"></form><script>document.getElementById("f").submit()</script>`, st.adm)
	}))
	defer evil.Close()
	// localhost against the listener's 127.0.0.1: another site.
	page := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)

	ctx := newBrowser(t, exe, time.Minute)
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	// The form's navigation ends on the admin API's answer.
	answered := `location.href.startsWith(` + strconv.Quote(st.adm+"/admin/cutover") + `) && document.body !== null && document.body.innerText.length > 0`
	if ok, err := chromedp.Run(ctx, chromedp.Poll[bool](answered, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil || !ok {
		t.Fatalf("the form was not answered: %v", err)
	}
	body, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil || !strings.Contains(body, "cross_origin") {
		t.Fatalf("answer to the cross-site form: %q %v", body, err)
	}
	after := st.status()
	if after.Active != before.Active || after.Generation != before.Generation {
		t.Fatalf("a cross-site form switched %s (generation %d) to %s (generation %d)", before.Active, before.Generation, after.Active, after.Generation)
	}
	if !strings.Contains(st.logs.String(), "sent by a browser from another site") {
		t.Fatal("the refusal is not logged")
	}
	// The same empty POST from a client that is not a browser switches.
	res, err := http.Post(st.adm+"/admin/cutover", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || st.status().Active == before.Active {
		t.Fatalf("a plain POST: %d, active %s", res.StatusCode, st.status().Active)
	}
}

// TestRebindingPageCannotReadInBrowser: chromium, told that rebind.test is
// 127.0.0.1 as a DNS rebinding attack would make it, opens the admin
// listener (loopback, no token) at that name. The status page is refused,
// and a script running in that origin, the listener's own to the browser,
// cannot read /admin/status. The same browser at 127.0.0.1 reads it.
func TestRebindingPageCannotReadInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts chromium")
	}
	exe := chromiumPath(t)
	st := startStack(t, 1, 1)
	port := st.adm[strings.LastIndex(st.adm, ":")+1:]
	ctx := newBrowser(t, exe, time.Minute, chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1"))
	readStatus := func(page string) (shown, fetched string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
			t.Fatalf("open %s: %v", page, err)
		}
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		if err != nil {
			t.Fatal(err)
		}
		fetched, err = chromedp.Run(ctx, chromedp.Evaluate[string](
			`fetch("/admin/status").then(r => r.text().then(b => r.status + " " + b))`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("fetch from %s: %v", page, err)
		}
		return shown, fetched
	}
	shown, fetched := readStatus("http://rebind.test:" + port + "/")
	if !strings.Contains(shown, "foreign_host") {
		t.Fatalf("the status page at a rebound name shows %.200q, want the refusal", shown)
	}
	if !strings.HasPrefix(fetched, "403 ") || !strings.Contains(fetched, "foreign_host") || strings.Contains(fetched, `"active"`) {
		t.Fatalf("a script at a rebound name read the status: %.300q", fetched)
	}
	if !strings.Contains(st.logs.String(), "Host is not a loopback name") {
		t.Fatal("the refusal is not logged")
	}
	if _, fetched = readStatus(st.adm + "/"); !strings.HasPrefix(fetched, "200 ") || !strings.Contains(fetched, `"active"`) {
		t.Fatalf("the status page's own origin could not read the status: %.300q", fetched)
	}
}
