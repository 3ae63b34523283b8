package proxy

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
)

func TestParseRolloutKey(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RolloutKey
		bad  bool
	}{
		{in: "cookie", want: RolloutKey{Kind: KeyCookie}},
		{in: "", want: RolloutKey{Kind: KeyCookie}},
		{in: "ip", want: RolloutKey{Kind: KeyIP}},
		{in: "header:x-user-id", want: RolloutKey{Kind: KeyHeader, Header: "X-User-Id"}},
		{in: "header:", bad: true},
		{in: "header:a b", bad: true},
		{in: "session", bad: true},
	} {
		got, err := ParseRolloutKey(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseRolloutKey(%q) = %+v, %v", tc.in, got, err)
		}
		if err == nil && tc.in != "" {
			if again, _ := ParseRolloutKey(got.String()); again != got {
				t.Errorf("%q does not survive String: %q", tc.in, got.String())
			}
		}
	}
}

// The target's share over 10,000 distinct clients is the weight within
// the bounds, whatever the keys look like.
func TestRolloutShare(t *testing.T) {
	keysets := map[string]func(i int) string{
		"random ids":      func(int) string { return newRolloutID() },
		"sequential ids":  func(i int) string { return fmt.Sprintf("client-%d", i) },
		"ipv4 addresses":  func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) },
		"numeric user id": func(i int) string { return fmt.Sprint(1_000_000 + i) },
	}
	for name, key := range keysets {
		keys := make([]string, 10_000)
		for i := range keys {
			keys[i] = key(i)
		}
		for _, tc := range []struct{ weight, tol float64 }{{1, 0.5}, {5, 1}, {10, 1.5}, {25, 2}, {50, 2}} {
			t.Run(fmt.Sprintf("%s/%v%%", name, tc.weight), func(t *testing.T) {
				n := 0
				for _, k := range keys {
					if onTarget(k, weightOf(int(tc.weight))) {
						n++
					}
				}
				share := float64(n) / float64(len(keys)) * 100
				t.Logf("share %.2f%% at weight %v%%", share, tc.weight)
				if math.Abs(share-tc.weight) > tc.tol {
					t.Fatalf("share %.2f%% at weight %v%%, want within ±%v", share, tc.weight, tc.tol)
				}
			})
		}
	}
	if onTarget("x", weightOf(0)) || !onTarget("x", weightOf(100)) {
		t.Fatal("weight 0 must send nobody, 100 everybody")
	}
}

// Raising the weight never moves a client back to the baseline.
func TestRolloutMonotone(t *testing.T) {
	for i := range 10_000 {
		key := newRolloutID()
		on := false
		for w := 0; w <= 100; w++ {
			now := onTarget(key, weightOf(w))
			if on && !now {
				t.Fatalf("client %d (%s) left the target when the weight rose to %d%%", i, key, w)
			}
			on = now
		}
		if !on {
			t.Fatalf("client %s is not on the target at 100%%", key)
		}
	}
}

// colourOf sends one request and returns the colour that answered and the
// rollout cookie set, if any.
func colourOf(t *testing.T, c *http.Client, url string, hdr map[string]string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	id := ""
	for _, ck := range res.Cookies() {
		if ck.Name == RolloutCookie {
			id = ck.Value
			if ck.MaxAge <= 0 || !ck.HttpOnly || ck.Path != "/" {
				t.Fatalf("rollout cookie %+v", ck)
			}
		}
	}
	return string(body), id
}

// 1,000 cookie clients through 1→5→25→50→100 on both codecs (the same
// client alternates between them): none is ever answered by the baseline
// after the target, the share follows the weight, and only a client
// without the cookie gets one.
func TestRolloutStickinessThroughSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("11,000 requests")
	}
	blue, green := newBackend(t, "blue", 1), newBackend(t, "green", 1)
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	fast := startFast(t, f.rt, nil)
	fronts := []string{f.front.URL, fast.url}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	keep := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(keep.CloseIdleConnections)

	const clients = 1000
	ids := make([]string, clients)
	onGreen := make([]bool, clients)
	gen := uint64(1)
	for _, w := range []int{1, 5, 25, 50, 100} {
		gen++
		if w == 100 {
			if err := f.rt.SetActive("green", gen); err != nil { // the last step is the cutover
				t.Fatal(err)
			}
		} else if err := f.rt.SetActiveWeighted("blue", gen, w); err != nil {
			t.Fatal(err)
		}
		n := 0
		for i := range clients {
			front := fronts[(i+w)%2]
			var colour, set string
			if ids[i] == "" {
				colour, set = colourOf(t, fresh, front, nil)
				if set == "" {
					t.Fatalf("client %d got no rollout cookie on %s", i, front)
				}
				ids[i] = set
			} else {
				colour, set = colourOf(t, keep, front, map[string]string{"Cookie": "a=b; " + RolloutCookie + "=" + ids[i]})
				if set != "" {
					t.Fatalf("client %d with a cookie got a new one", i)
				}
			}
			if onGreen[i] && colour != "green" {
				t.Fatalf("client %d went back to %s at %d%% after green", i, colour, w)
			}
			if colour == "green" {
				onGreen[i] = true
				n++
			}
		}
		share := float64(n) / clients * 100
		t.Logf("weight %3d%%: %d of %d clients on green", w, n, clients)
		if tol := 4.0; w < 100 && math.Abs(share-float64(w)) > tol+float64(w)/10 {
			t.Errorf("weight %d%%: share %.1f%%", w, share)
		}
	}
	for i, g := range onGreen {
		if !g {
			t.Fatalf("client %d never reached green", i)
		}
	}
	// After the cutover no rollout runs: no cookie is handed out.
	if _, set := colourOf(t, fresh, fast.url, nil); set != "" {
		t.Fatal("cookie set without a rollout")
	}
}

// The header and ip keys, and the preview header over the weight, on both
// codecs.
func TestRolloutOtherKeysAndPreview(t *testing.T) {
	blue, green := newBackend(t, "blue", 1), newBackend(t, "green", 1)
	for _, key := range []string{"header:X-User", "ip"} {
		t.Run(key, func(t *testing.T) {
			k, _ := ParseRolloutKey(key)
			f := newFixture(t, []string{blue.URL}, []string{green.URL}, func(c *Config) { c.RolloutKey = k })
			fast := startFast(t, f.rt, nil)
			if err := f.rt.SetActiveWeighted("blue", 2, 50); err != nil {
				t.Fatal(err)
			}
			c := &http.Client{}
			green := 0
			for u := range 200 {
				hdr := map[string]string{"X-User": fmt.Sprint("user-", u)}
				a, set1 := colourOf(t, c, f.front.URL, hdr)
				b, set2 := colourOf(t, c, fast.url, hdr)
				if a != b || set1 != "" || set2 != "" {
					t.Fatalf("user %d: net/http %s, fast %s, cookies %q %q", u, a, b, set1, set2)
				}
				want := "blue"
				if key == "ip" && onTarget("127.0.0.1", weightOf(50)) || key != "ip" && onTarget(hdr["X-User"], weightOf(50)) {
					want = "green"
				}
				if a != want {
					t.Fatalf("user %d on %s, want %s", u, a, want)
				}
				if a == "green" {
					green++
				}
			}
			if key != "ip" && (green < 70 || green > 130) {
				t.Fatalf("%d of 200 users on green at 50%%", green)
			}
			if key == "header:X-User" {
				// No header: the active colour.
				for _, u := range []string{f.front.URL, fast.url} {
					if col, _ := colourOf(t, c, u, nil); col != "blue" {
						t.Fatalf("a request without the key header went to %s", col)
					}
				}
			}
			// The preview header forces the idle colour whatever the key.
			for _, u := range []string{f.front.URL, fast.url} {
				for i := range 20 {
					if col, _ := colourOf(t, c, u, map[string]string{"X-User": fmt.Sprint(i), "X-Bluegreen-Preview": "1"}); col != "green" {
						t.Fatalf("preview answered by %s", col)
					}
				}
			}
		})
	}
}

func TestRolloutSetCookie(t *testing.T) {
	v := rolloutSetCookie(newRolloutID())
	if !strings.HasPrefix(v, RolloutCookie+"=") || !strings.Contains(v, "HttpOnly") || len(newRolloutID()) != 24 {
		t.Fatal(v)
	}
}
