package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzRouterHeaders sends requests with arbitrary header names and values,
// Host, path, absolute-URI host and peer address through a Router with
// preview, preview stripping and trusted proxies on. It never panics, and a
// request reaches a configured instance or none: never another listener.
func FuzzRouterHeaders(f *testing.F) {
	blue, green, other := newRecorder(f), newRecorder(f), newRecorder(f)
	otherHost := strings.TrimPrefix(other.URL, "http://")
	cfg := Config{
		PreviewHeader: "X-Bluegreen-Preview", PreviewCookie: "bluegreen_preview", StripPreviewHeader: true,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Log:            testLogger(f),
	}
	cfg.Colors[0] = ColorConfig{Name: "blue", URLs: []*url.URL{mustURL(f, blue.URL)}}
	cfg.Colors[1] = ColorConfig{Name: "green", URLs: []*url.URL{mustURL(f, green.URL)}}
	rt, err := NewRouter(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(rt.CloseIdleConnections)
	for _, p := range rt.pools {
		for _, b := range p.backends {
			p.SetStatus(b.name, true)
		}
	}
	seeds := [][5]string{
		{"X-Bluegreen-Preview", "1", "app.example", "/", "127.0.0.1:1234"},
		{"Cookie", "bluegreen_preview=true; a=b", "app.example", "/x", "10.1.2.3:1"},
		{"X-Forwarded-For", "1.2.3.4, 5.6.7.8", otherHost, "/steal", "10.0.0.1:5"},
		{"X-Forwarded-Host", otherHost, otherHost, "//" + otherHost + "/x", "[::1]:80"},
		{"Connection", "X-Bluegreen-Preview, close", "", "/%2e%2e/", "garbage"},
		{"Upgrade", "websocket", "a b", "/\x00", "1.2.3.4"},
		{"X-Forwarded-Proto", "https\r\nX-Evil: 1", "h:99999", "", "[fe80::1%eth0]:1"},
		{"Host", otherHost, otherHost, "/", "127.0.0.1:1"},
		{"Te", "trailers", "x", "/", ""},
		{"Bad Name", "v", "x", "/", "127.0.0.1:9"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, name, value, host, path, remote string) {
		req := &http.Request{
			Method:     http.MethodGet,
			URL:        &url.URL{Scheme: "http", Host: otherHost, Path: path},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1, ProtoMinor: 1,
			Header:     http.Header{name: {value}},
			Host:       host,
			RemoteAddr: remote,
			Body:       http.NoBody,
		}
		before := blue.hits.Load() + green.hits.Load()
		rec := httptest.NewRecorder()
		rt.ServeHTTP(rec, req)
		if n := other.hits.Load(); n != 0 {
			t.Fatalf("a request reached a listener that is not an instance (%d)", n)
		}
		after := blue.hits.Load() + green.hits.Load()
		if rec.Code == http.StatusOK && after != before+1 {
			t.Fatalf("200 without the instance seeing the request")
		}
		// A field that may not be sent is the client's fault (400);
		// everything else reaches an instance (200) or fails there (502).
		// (The peer's address, which a listener gives, becomes
		// X-Forwarded-For: a control byte there is refused the same way.)
		peer, _, perr := net.SplitHostPort(remote)
		malformed := !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) || !httpguts.ValidHostHeader(host) ||
			perr == nil && !httpguts.ValidHeaderFieldValue(peer)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadGateway && (rec.Code != http.StatusBadRequest || !malformed) {
			t.Fatalf("status %d %q", rec.Code, rec.Body.String())
		}
	})
}
