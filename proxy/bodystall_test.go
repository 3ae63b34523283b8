package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/stats"
)

// An instance that stops sending an answer's body it has begun gets the
// answer cut after the upstream timeout, charged to it as a timeout, on
// every codec, as nginx's proxy_read_timeout cuts between two reads: the
// client, which has the head and part of the body, sees an incomplete
// answer instead of waiting for as long as the instance holds its
// connection, and a client that gave up first was counted as gone, the
// stalled instance never charged. The request is evidence against the
// colour in the traffic statistics (rollout analysis, the status page),
// as a 5xx is: a release that breaks its answers off passed a rollout's
// analysis with no error counted.
func TestAnswerBodyStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	bodies := []struct{ name, head, part string }{
		{"Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "hello"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n"},
		// Long enough for the fast codec to splice the rest.
		{"Content-Length spliced", "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n", strings.Repeat("s", 300<<10)},
	}
	for _, bc := range bodies {
		t.Run(bc.name, func(t *testing.T) {
			inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
				if _, err := io.WriteString(c, bc.head+bc.part); err != nil {
					return false
				}
				_, _ = io.Copy(io.Discard, c) // and nothing more, until the proxy closes
				return false
			})
			rec := stats.New([]string{"blue", "green"}, nil)
			f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) {
				c.Upstream.ResponseHeaderTimeout = stall
				c.Stats = rec
			})
			cases := everyCodec(t, f)
			for _, c := range cases {
				var body io.Reader
				if c.method == "POST" {
					body = strings.NewReader("order")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, c.method, c.url+"/", body)
				start := time.Now()
				status, n := "no answer", 0
				res, err := c.client.Do(req)
				if err == nil {
					var got []byte
					got, err = io.ReadAll(res.Body)
					res.Body.Close()
					status, n = res.Status, len(got)
				}
				took, timedOut := time.Since(start), ctx.Err() != nil
				cancel()
				if err == nil || timedOut || took < stall || took > 5*time.Second || status != "200 OK" || n < 5 {
					t.Errorf("%s: %s, %d bytes, error %v after %v; want the head and the first bytes, then an incomplete answer after about %v", c.name, status, n, err, took, stall)
				}
			}
			if _, byKind := sumMetric(t, f.reg, "bluegreen_upstream_errors_total", "kind"); byKind[KindTimeout] != float64(len(cases)) {
				t.Errorf("instance errors %v, want %d of kind timeout", byKind, len(cases))
			}
			// HTTP/2 resets the stream before it records the request.
			want := int64(len(cases))
			w := rec.Window("blue", time.Now().Add(-time.Minute))
			for deadline := time.Now().Add(2 * time.Second); w.Requests < want && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
				w = rec.Window("blue", time.Now().Add(-time.Minute))
			}
			if w.Requests != want || w.InstanceErrors != want {
				t.Errorf("blue's traffic: %d requests, %d instance errors; want %d of each", w.Requests, w.InstanceErrors, want)
			}
		})
	}
}

// An event stream may be quiet for longer than the upstream timeout: it
// is not cut, on any codec (nginx cuts it unless proxy_read_timeout is
// raised for it).
func TestQuietEventStreamOutlivesUpstreamTimeout(t *testing.T) {
	const stall = 200 * time.Millisecond
	inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n8\r\ndata: a\n\r\n"); err != nil {
			return false
		}
		time.Sleep(4 * stall)
		_, err := io.WriteString(c, "8\r\ndata: b\n\r\n0\r\n\r\n")
		return err == nil
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) { c.Upstream.ResponseHeaderTimeout = stall })
	ff := startFast(t, f.rt, nil)
	h2 := startH2(t, f.rt, nil)
	for _, c := range []struct {
		name, url string
		client    *http.Client
	}{{"fast", ff.url, http.DefaultClient}, {"net/http", f.front.URL, http.DefaultClient}, {"HTTP/2", h2.url, h2Client(t)}} {
		res, err := c.client.Get(c.url + "/events")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(got) != "data: a\ndata: b\n" {
			t.Errorf("%s: %q, %v; want the whole stream", c.name, got, err)
		}
	}
	if total, byKind := sumMetric(t, f.reg, "bluegreen_upstream_errors_total", "kind"); total != 0 {
		t.Errorf("instance errors %v, want none", byKind)
	}
}
