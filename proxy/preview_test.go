package proxy

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// TestFastPreviewRoutingMatchesNetHTTP: the fast path and net/http pick the
// same colour for the same preview header and cookies, so a request does
// not change colour when it happens to take the other path (a larger head,
// a chunked body). net/http (Router.wantsPreview) reads the first
// X-Bluegreen-Preview field and the first valid cookie of the name
// (Request.Cookie: names trimmed; a value may hold blanks and commas, not
// " ; \; a bare name is a cookie with an empty value).
//
// At 689007b "header 0 then 1", "cookie 0 then 1" and "cookie name blank"
// failed (any truthy field or cookie counted; names were not trimmed);
// d7bdeb1 fixed those. At d7bdeb1 "first value has a blank", "first value
// has a comma" and "first is a bare name" failed (cookieValue skipped a
// first cookie net/http takes, and the second one decided); c02f5c6 fixed
// those.
func TestFastPreviewRoutingMatchesNetHTTP(t *testing.T) {
	rt := newRouterOnly(t, []string{"http://127.0.0.1:1"}, []string{"http://127.0.0.1:2"}, nil)
	cases := []struct {
		name    string
		headers [][2]string
	}{
		{"header 1", [][2]string{{"X-Bluegreen-Preview", "1"}}},
		{"header true", [][2]string{{"x-bluegreen-preview", "TrUe"}}},
		{"header 0", [][2]string{{"X-Bluegreen-Preview", "0"}}},
		{"header yes", [][2]string{{"X-Bluegreen-Preview", "yes"}}},
		{"header empty", [][2]string{{"X-Bluegreen-Preview", ""}}},
		{"header 1 then 0", [][2]string{{"X-Bluegreen-Preview", "1"}, {"X-Bluegreen-Preview", "0"}}},
		{"header 0 then 1", [][2]string{{"X-Bluegreen-Preview", "0"}, {"X-Bluegreen-Preview", "1"}}},
		{"cookie", [][2]string{{"Cookie", "bluegreen_preview=1"}}},
		{"cookie among others", [][2]string{{"Cookie", "a=b;bluegreen_preview=true; c=d"}}},
		{"cookie quoted", [][2]string{{"Cookie", `bluegreen_preview="1"`}}},
		{"cookie half quoted", [][2]string{{"Cookie", `bluegreen_preview="1`}}},
		{"cookie 0", [][2]string{{"Cookie", "bluegreen_preview=0"}}},
		{"cookie prefix", [][2]string{{"Cookie", "bluegreen_preview_x=1; xbluegreen_preview=1"}}},
		{"cookie case", [][2]string{{"Cookie", "Bluegreen_preview=1"}}},
		{"cookie value blank", [][2]string{{"Cookie", "bluegreen_preview= 1"}}},
		{"cookie in second field", [][2]string{{"Cookie", "a=b"}, {"Cookie", "bluegreen_preview=1"}}},
		{"cookie 1 then 0", [][2]string{{"Cookie", "bluegreen_preview=1; bluegreen_preview=0"}}},
		{"cookie 0 then 1", [][2]string{{"Cookie", "bluegreen_preview=0; bluegreen_preview=1"}}},
		{"cookie name blank", [][2]string{{"Cookie", "bluegreen_preview =1"}}},
		{"header 0 cookie 1", [][2]string{{"X-Bluegreen-Preview", "0"}, {"Cookie", "bluegreen_preview=1"}}},
		// net/http's cookie values may hold blanks and commas (not " ; \),
		// and a bare name is a cookie with an empty value: the first
		// cookie below decides, and it is not truthy.
		{"first value has a blank", [][2]string{{"Cookie", "bluegreen_preview=a b; bluegreen_preview=1"}}},
		{"first value has a comma", [][2]string{{"Cookie", "bluegreen_preview=a,b; bluegreen_preview=1"}}},
		{"first is a bare name", [][2]string{{"Cookie", "bluegreen_preview; bluegreen_preview=1"}}},
		{"first value invalid", [][2]string{{"Cookie", `bluegreen_preview=a"b; bluegreen_preview=1`}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := "GET / HTTP/1.1\r\nHost: a\r\n"
			for _, kv := range c.headers {
				raw += kv[0] + ": " + kv[1] + "\r\n"
			}
			raw += "\r\n"
			var h h1.Head
			if err := h.ParseRequest([]byte(raw)); err != nil {
				t.Fatalf("fast parse: %v", err)
			}
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatalf("net/http parse: %v", err)
			}
			if fast, std := h.WantsPreview(rt.previewLower, rt.previewCookie), rt.wantsPreview(r); fast != std {
				t.Errorf("preview: fast path %v, net/http %v", fast, std)
			}
		})
	}
}
