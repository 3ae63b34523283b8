package admin

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/state"
)

func TestFmtHelpers(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "–", 250 * time.Microsecond: "250 µs", 12345 * time.Microsecond: "12.3 ms", 2500 * time.Millisecond: "2.50 s"} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if got := ago(now, now.Add(-90*time.Second)); got != "1m30s ago" {
		t.Errorf("ago = %q", got)
	}
	if fmtTime(time.Time{}) != "never" || fmtClock(now) != "12:00:00Z" {
		t.Error("time formats")
	}
}

// TestPageWithoutRecorder: /admin/stats is a 404 with a JSON reason when
// statistics are off; the page still renders, and what it shows from the
// state (a reason typed by someone) is escaped.
func TestPageWithoutRecorder(t *testing.T) {
	srv, fc := newAPI(t, "", true)
	fc.st.History = []state.Event{{Action: "cutover", From: "green", To: "blue", Trigger: "api", Reason: `<script>alert(1)</script>`, Generation: 1}}
	for path, want := range map[string]int{"/admin/stats": 404, "/": 200, "/ui/": 200, "/ui/nothing": 404} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d: %s", path, res.StatusCode, want, body)
		}
		if path == "/" {
			page := string(body)
			if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
				t.Error("the reason is not escaped")
			}
			if !strings.Contains(page, `id="active-color">BLUE<`) || !strings.Contains(page, "✓ healthy") || !strings.Contains(page, "status 503") {
				t.Error("page lacks the state")
			}
		}
	}
}
