package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cryoprotect/bluegreen/admin"
)

// TestStatusPageWithoutJavaScript reads the server-rendered page as a client
// without JavaScript would: the live colour, every instance with its state
// and version, the history, under a strict CSP; and page views are not
// proxy traffic.
func TestStatusPageWithoutJavaScript(t *testing.T) {
	st := startStack(t, 1, 2)
	st.eventually(func() bool { return st.status().Colors["green"].Healthy == 2 }, "both green instances healthy")
	for range 5 {
		if c, code := st.colorOf("/"); c != "blue" || code != 200 {
			t.Fatalf("proxy answered %s %d", c, code)
		}
	}
	if code, body := st.post("/admin/cutover", `{"reason":"page test"}`); code != 200 {
		t.Fatalf("cutover: %d %v", code, body)
	}

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(st.adm + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	for _, path := range []string{"/", "/ui/"} {
		res, page := get(path)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		csp := res.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("CSP %q lacks %q", csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(page, "<script>") || strings.Contains(page, " style=") {
			t.Errorf("inline script or style on the page")
		}
		must := []string{
			`id="active-color">GREEN<`, `id="previous">blue<`, `>v0</td>`, `page test`, `cutover`,
		}
		for _, s := range append(st.green, st.blue...) {
			must = append(must, `data-url="`+s.URL+`" class="st-up"`)
		}
		for _, m := range must {
			if !strings.Contains(page, m) {
				t.Errorf("GET %s: page lacks %q", path, m)
			}
		}
		if !strings.Contains(page, "✓ healthy") {
			t.Error("instance state is not written out in words")
		}
	}
	for path, ctype := range map[string]string{"/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		res, body := get(path)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || len(body) < 100 {
			t.Errorf("GET %s: %d %q, %d bytes", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
	}

	// The five proxied requests are counted on blue; the page views on the
	// admin listener are not traffic.
	res, body := get("/admin/stats?step=10s")
	if res.StatusCode != 200 {
		t.Fatalf("stats: %d %s", res.StatusCode, body)
	}
	var sa admin.StatsAnswer
	if err := json.Unmarshal([]byte(body), &sa); err != nil {
		t.Fatal(err)
	}
	if b, g := sa.Colors["blue"].LastMinute.Requests, sa.Colors["green"].LastMinute.Requests; b != 5 || g != 0 {
		t.Errorf("last minute: blue %d green %d requests, want 5 and 0", b, g)
	}
	if n := len(sa.Colors["blue"].Points); n < 89 || n > 91 || sa.StepSeconds != 10 {
		t.Errorf("%d points of %d s", n, sa.StepSeconds)
	}
	if res, _ := get("/admin/stats?step=1ms"); res.StatusCode != 400 {
		t.Errorf("bad step: %d, want 400", res.StatusCode)
	}
}
