package proxy

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// refusingURL is an address where nothing listens: connections are refused.
func refusingURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// TestColorFailingFailsOver: with every blue instance refusing connections,
// a request calls Config.ColorFailing synchronously with the colour and the
// reason; when the callback makes green active, the request, of which
// nothing was sent, is served by green. On both codecs, for a GET and for a
// POST whose body was not read yet.
func TestColorFailingFailsOver(t *testing.T) {
	green := newRawInstance(t, okHandler("green"))
	var mu sync.Mutex
	var calls []string
	var rt *Router
	f := newFixture(t, []string{refusingURL(t), refusingURL(t)}, []string{green.URL}, func(c *Config) {
		c.ColorFailing = func(color, reason string) {
			mu.Lock()
			calls = append(calls, color+": "+reason)
			mu.Unlock()
			if err := rt.SetActive("green", 7); err != nil {
				t.Error(err)
			}
		}
	})
	rt = f.rt
	ff := startFast(t, f.rt, nil)
	for _, front := range []struct{ name, addr string }{{"fast", ff.addr}, {"net/http", startNetHTTPOnly(t, f.rt)}} {
		for _, req := range []string{
			"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
			"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		} {
			if err := rt.SetActive("blue", 6); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			calls = nil
			mu.Unlock()
			rc := dialRaw(t, front.addr)
			rc.send(req)
			method := req[:strings.IndexByte(req, ' ')]
			res, body := rc.mustRead(method)
			mu.Lock()
			got := append([]string(nil), calls...)
			mu.Unlock()
			if res.StatusCode != 200 || body != "green /a" {
				t.Errorf("%s %s: %d %q, want 200 from green", front.name, method, res.StatusCode, body)
			}
			if len(got) != 1 || got[0] != "blue: every instance refuses connections" {
				t.Errorf("%s %s: ColorFailing calls %q", front.name, method, got)
			}
			if c, _ := rt.Active(); c != "green" {
				t.Errorf("%s: active %s", front.name, c)
			}
			t.Logf("%s %s: %d from green after ColorFailing(%q)", front.name, method, res.StatusCode, got)
		}
	}
}
