package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestParseVersionSource(t *testing.T) {
	for _, bad := range []string{"json", "header:", "body:version", ":x"} {
		if _, err := ParseVersionSource(bad); err == nil {
			t.Errorf("ParseVersionSource(%q) accepted", bad)
		}
	}
	for _, good := range []string{"", "json:version", "header:x-app-version"} {
		if _, err := ParseVersionSource(good); err != nil {
			t.Errorf("ParseVersionSource(%q): %v", good, err)
		}
	}
}

// TestProbeReadsVersion probes real servers that report a version in a JSON
// body or a header, and one whose body is not JSON.
func TestProbeReadsVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App-Version", "h-2.0")
		switch r.URL.Path {
		case "/json":
			_, _ = w.Write([]byte(`{"status":"ok","version":"v1.2.3"}`))
		case "/num":
			_, _ = w.Write([]byte(`{"version":7}`))
		case "/long":
			_, _ = w.Write([]byte(`{"version":"` + strings.Repeat("é", 100) + `"}`))
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	for _, tc := range []struct{ path, source, want string }{
		{"/json", "json:version", "v1.2.3"},
		{"/num", "json:version", "7"},
		{"/text", "json:version", ""},
		{"/json", "json:missing", ""},
		{"/text", "header:x-app-version", "h-2.0"},
		{"/json", "", ""},
	} {
		src, err := ParseVersionSource(tc.source)
		if err != nil {
			t.Fatal(err)
		}
		c := NewChecker("blue", []*url.URL{u}, Config{Path: tc.path, Version: src}, srv.Client(), nil, nil, nil, nil)
		c.CheckOnce(context.Background())
		if got := c.Status()[0].Version; got != tc.want {
			t.Errorf("%s with %q: version %q, want %q", tc.path, tc.source, got, tc.want)
		}
	}
	src, _ := ParseVersionSource("json:version")
	c := NewChecker("blue", []*url.URL{u}, Config{Path: "/long", Version: src}, srv.Client(), nil, nil, nil, nil)
	c.CheckOnce(context.Background())
	if got := c.Status()[0].Version; len(got) > maxVersionLen || !strings.HasPrefix(got, "éé") || strings.ToValidUTF8(got, "") != got {
		t.Errorf("long version %q", got)
	}
}
