package testkit

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// SkipIfShort skips a heavy test (it starts etcd, Prometheus, built
// binaries or Docker) in the quick tier, go test -short.
func SkipIfShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skips tests that " + what)
	}
}

// LookTool finds a tool a test needs, or skips the test on a developer's
// machine; with CI set it fails the test instead, so nothing is skipped
// silently there.
func LookTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + " is not installed (" + install + ")"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI must run this test")
		}
		t.Skip(msg)
	}
	return p
}

// WaitUntil calls cond every 20 ms until it holds, and fails the test when
// d passes first. Use it to wait for a state another process reaches, not
// to order events that a signal or a channel can order.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitHTTP waits up to d until GET url answers want, and fails the test
// with the last answer or error when it does not.
func WaitHTTP(t testing.TB, d time.Duration, url string, want int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	last := "no answer yet"
	deadline := time.Now().Add(d)
	for {
		res, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(res.Body, 200))
			res.Body.Close()
			if res.StatusCode == want {
				return
			}
			last = fmt.Sprintf("%s: %q", res.Status, b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s did not answer %d within %s (last: %s)", url, want, d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
