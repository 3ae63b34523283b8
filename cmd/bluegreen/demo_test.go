package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// TestDemo runs the demo subcommand as a newcomer would, on free ports: it
// prints the commands to try, they work, and Ctrl-C (ctx) ends it with 0.
func TestDemo(t *testing.T) {
	out := &testkit.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo"}, []string{
			"BLUEGREEN_LISTEN=127.0.0.1:0", "BLUEGREEN_ADMIN_LISTEN=127.0.0.1:0", "BLUEGREEN_LOG_FORMAT=json",
		}, out, io.Discard)
	}()
	re := regexp.MustCompile(`curl -X POST (http://[0-9.:]+)/admin/cutover`)
	pubRe := regexp.MustCompile(`curl (http://[0-9.:]+)/ `)
	deadline := time.Now().Add(10 * time.Second)
	waitCtx, waitCancel := context.WithDeadline(ctx, deadline)
	_, err := out.Wait(waitCtx, func(s string) bool { return re.MatchString(s) && pubRe.MatchString(s) })
	waitCancel()
	if err != nil {
		t.Fatalf("no banner: %q", out.String())
	}
	adm := re.FindStringSubmatch(out.String())[1]
	pub := pubRe.FindStringSubmatch(out.String())[1]
	get := func(url string) string {
		for time.Now().Before(deadline) {
			res, err := http.Get(url)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == 200 {
					return string(b)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s never answered 200", url)
		return ""
	}
	if b := get(pub + "/"); !strings.HasPrefix(b, "color=blue version=v1") {
		t.Fatalf("demo proxy answered %q", b)
	}
	get(adm + "/readyz") // every instance probed: green is known healthy
	res, err := http.Post(adm+"/admin/cutover", "", nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("cutover without a token on loopback: %v %v", err, res)
	}
	res.Body.Close()
	if b := get(pub + "/"); !strings.HasPrefix(b, "color=green version=v2") {
		t.Fatalf("after cutover %q", b)
	}
	if b := get(adm + "/admin/status"); !strings.Contains(b, `"active": "green"`) {
		t.Fatalf("status %q", b)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("demo exit %d", code)
	}
}
