package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// waitTimeout bounds every wait on an event, so a bug fails the test instead
// of hanging it.
const waitTimeout = 10 * time.Second

func newServer(t *testing.T, cfg Config) (*App, *httptest.Server) {
	t.Helper()
	a := New(cfg, nil)
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		a.CloseStreams()
		srv.Close()
	})
	return a, srv
}

// do sends one request and returns the response with its body read.
func do(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, body := testkit.Do(t, nil, req)
	return resp, string(body)
}

func TestInfo(t *testing.T) {
	_, srv := newServer(t, Config{Color: "green", Version: "v2"})
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	text := "color=green version=v2 host=" + host + "\n"

	tests := []struct {
		name, path, accept string
		wantJSON           bool
	}{
		{"root without Accept", "/", "", false},
		{"browser", "/", "text/html,application/xhtml+xml,*/*;q=0.8", false},
		{"curl", "/", "*/*", false},
		{"json", "/", "application/json", true},
		{"json over wildcard", "/", "application/json, */*", true},
		{"json preferred by quality", "/", "text/plain;q=0.5, application/json", true},
		{"text preferred by quality", "/", "application/json;q=0.5, text/plain", false},
		{"unknown path as text", "/any/path?x=1", "", false},
		{"unknown path as json", "/any/path?x=1", "application/json", true},
		{"health sub-path by GET", "/health/fail", "application/json", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.accept != "" {
				h.Set("Accept", tt.accept)
			}
			resp, body := do(t, http.MethodGet, srv.URL+tt.path, h)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get(ColorHeader); got != "green" {
				t.Errorf("%s = %q, want green", ColorHeader, got)
			}
			if !tt.wantJSON {
				if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
					t.Errorf("Content-Type = %q", ct)
				}
				if body != text {
					t.Errorf("body = %q, want %q", body, text)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got info
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			path, _, _ := strings.Cut(tt.path, "?")
			want := info{Color: "green", Version: "v2", Hostname: host, Path: path}
			if got != want {
				t.Errorf("body = %+v, want %+v", got, want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	_, srv := newServer(t, Config{})
	resp, body := do(t, http.MethodGet, srv.URL+"/version", nil)
	if resp.StatusCode != http.StatusOK || body != `{"color":"blue","version":"dev"}`+"\n" {
		t.Errorf("GET /version = %d %q", resp.StatusCode, body)
	}
}

func TestWantsJSON(t *testing.T) {
	tests := []struct {
		accept string
		want   bool
	}{
		{"", false},
		{"*/*", false},
		{"text/plain", false},
		{"application/json", true},
		{"Application/JSON", true},
		{"application/*", true},
		{"application/json;q=0", false},
		{"application/json, text/plain", true},
		{"text/plain, application/json", false},
		{"application/json, text/plain, */*", true},
		{"text/*, application/json;q=0.9", false},
		{"application/json;q=0.9, */*;q=0.1", true},
		{"*/*;q=0.9, application/json;q=0", false},
		{"application/json;q=bad", false},
		{"garbage;;", false},
	}
	for _, tt := range tests {
		t.Run(tt.accept, func(t *testing.T) {
			if got := wantsJSON(tt.accept); got != tt.want {
				t.Errorf("wantsJSON(%q) = %v, want %v", tt.accept, got, tt.want)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	a, srv := newServer(t, Config{Color: "blue"})
	steps := []struct {
		name, method, path string
		wantCode           int
		wantBody           string
		wantHealthy        bool
	}{
		{"starts healthy", http.MethodGet, "/health", 200, `{"status":"ok","color":"blue"}`, true},
		{"fail", http.MethodPost, "/health/fail", 200, `{"status":"failing","color":"blue"}`, false},
		{"health fails", http.MethodGet, "/health", 503, `{"status":"failing","color":"blue"}`, false},
		{"fail again", http.MethodPost, "/health/fail", 200, `{"status":"failing","color":"blue"}`, false},
		{"recover", http.MethodPost, "/health/recover", 200, `{"status":"ok","color":"blue"}`, true},
		{"health passes", http.MethodGet, "/health", 200, `{"status":"ok","color":"blue"}`, true},
		{"fail needs POST", http.MethodPut, "/health/fail", 405, "", true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp, body := do(t, st.method, srv.URL+st.path, nil)
			if resp.StatusCode != st.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode, st.wantCode)
			}
			if st.wantBody != "" && body != st.wantBody+"\n" {
				t.Errorf("body = %q, want %q", body, st.wantBody)
			}
			if got := resp.Header.Get(ColorHeader); got != "blue" {
				t.Errorf("%s = %q, want blue", ColorHeader, got)
			}
			if got := a.Healthy(); got != st.wantHealthy {
				t.Errorf("Healthy() = %v, want %v", got, st.wantHealthy)
			}
		})
	}

	a.SetHealthy(false)
	if resp, _ := do(t, http.MethodGet, srv.URL+"/health", nil); resp.StatusCode != 503 {
		t.Errorf("after SetHealthy(false): status = %d, want 503", resp.StatusCode)
	}
}

func TestStatus(t *testing.T) {
	_, srv := newServer(t, Config{Color: "green"})
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/status/503", 503, "status=503 color=green\n"},
		{"/status/200", 200, "status=200 color=green\n"},
		{"/status/418", 418, "status=418 color=green\n"},
		{"/status/599", 599, "status=599 color=green\n"},
		{"/status/204", 204, ""},
		{"/status/304", 304, ""},
		{"/status/100", 400, ""},
		{"/status/101", 400, ""},
		{"/status/600", 400, ""},
		{"/status/-1", 400, ""},
		{"/status/abc", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, srv.URL+tt.path, nil)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if tt.wantCode != 400 && body != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
			if got := resp.Header.Get(ColorHeader); got != "green" {
				t.Errorf("%s = %q, want green", ColorHeader, got)
			}
		})
	}
}

func TestSlowDelay(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", time.Second, false},
		{"0s", 0, false},
		{"500ms", 500 * time.Millisecond, false},
		{"60s", MaxSlow, false},
		{"2h", MaxSlow, false},
		{"-1s", 0, true},
		{"10", 0, true},
		{"soon", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := slowDelay(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("slowDelay(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSlow(t *testing.T) {
	_, srv := newServer(t, Config{Color: "blue"})

	t.Run("waits d", func(t *testing.T) {
		const d = 50 * time.Millisecond
		start := time.Now()
		resp, body := do(t, http.MethodGet, srv.URL+"/slow?d=50ms", nil)
		if elapsed := time.Since(start); elapsed < d {
			t.Errorf("answered after %v, want at least %v", elapsed, d)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "color=blue ") {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
	})

	t.Run("bad d", func(t *testing.T) {
		resp, _ := do(t, http.MethodGet, srv.URL+"/slow?d=forever", nil)
		if resp.StatusCode != 400 {
			t.Errorf("status = %d, want 400", resp.StatusCode)
		}
	})

	t.Run("client cancels", func(t *testing.T) {
		a := New(Config{}, nil)
		started := make(chan struct{})
		returned := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			a.ServeHTTP(w, r)
			close(returned)
		}))
		defer srv.Close()

		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/slow?d=60s", nil)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		<-started
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("client error = %v, want context.Canceled", err)
		}
		select {
		case <-returned:
		case <-time.After(waitTimeout):
			t.Fatal("handler still waiting after the client went away")
		}
	})
}

func TestWebSocketEcho(t *testing.T) {
	_, srv := newServer(t, Config{Color: "green"})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()

	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get(ColorHeader); got != "green" {
		t.Errorf("%s = %q, want green", ColorHeader, got)
	}

	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if typ != websocket.MessageText || string(msg) != "hello from green" {
		t.Errorf("greeting = %v %q, want text %q", typ, msg, "hello from green")
	}

	messages := []struct {
		name string
		typ  websocket.MessageType
		data []byte
	}{
		{"text", websocket.MessageText, []byte("ping 1")},
		{"binary", websocket.MessageBinary, []byte{0, 1, 2, 255}},
	}
	for _, m := range messages {
		t.Run(m.name, func(t *testing.T) {
			if err := c.Write(ctx, m.typ, m.data); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if typ != m.typ || string(got) != string(m.data) {
				t.Errorf("echo = %v %q, want %v %q", typ, got, m.typ, m.data)
			}
		})
	}

	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestWebSocketCloseStreams(t *testing.T) {
	a, srv := newServer(t, Config{})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()

	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, _, err := c.Read(ctx); err != nil { // the greeting
		t.Fatal(err)
	}
	a.CloseStreams()
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("read after CloseStreams: %v (status %v), want status %v", err, got, websocket.StatusGoingAway)
	}
}

// readEvents reads up to n events of an event stream and returns their data.
// It stops early at the end of the stream.
func readEvents(t *testing.T, r *bufio.Reader, n int) []string {
	t.Helper()
	var events []string
	for len(events) < n {
		line, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			return events
		}
		if err != nil {
			t.Fatal(err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			// the blank line that ends an event
		case strings.HasPrefix(line, "data: "):
			events = append(events, strings.TrimPrefix(line, "data: "))
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
	// Consume the blank line that ends the last event.
	if line, err := r.ReadString('\n'); err != nil || line != "\n" {
		t.Fatalf("after event %d: %q, %v; want a blank line", n, line, err)
	}
	return events
}

func getStream(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	return resp
}

func TestEvents(t *testing.T) {
	cfg := Config{Color: "blue", StreamInterval: 10 * time.Millisecond}
	want := []string{"blue 1", "blue 2", "blue 3"}

	t.Run("count=3 ends after 3 events", func(t *testing.T) {
		_, srv := newServer(t, cfg)
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		resp := getStream(t, ctx, srv.URL+"/events?count=3")
		r := bufio.NewReader(resp.Body)
		if got := readEvents(t, r, 3); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("events = %q, want %q", got, want)
		}
		if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
			t.Errorf("after 3 events: %q, %v; want the end of the stream", rest, err)
		}
	})

	// Without count the stream never ends by itself: reading each event as
	// it comes proves that every event is flushed.
	t.Run("flushed as they come, until the client goes away", func(t *testing.T) {
		a := New(cfg, nil)
		returned := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(returned)
			a.ServeHTTP(w, r)
		}))
		defer srv.Close()

		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		resp := getStream(t, ctx, srv.URL+"/events")
		r := bufio.NewReader(resp.Body)
		for i, w := range want {
			if got := readEvents(t, r, 1); len(got) != 1 || got[0] != w {
				t.Fatalf("event %d = %q, want %q", i+1, got, w)
			}
		}
		cancel()
		select {
		case <-returned:
		case <-time.After(waitTimeout):
			t.Fatal("stream still running after the client went away")
		}
	})

	t.Run("CloseStreams ends the stream", func(t *testing.T) {
		a, srv := newServer(t, Config{Color: "blue", StreamInterval: time.Hour})
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		resp := getStream(t, ctx, srv.URL+"/events")
		r := bufio.NewReader(resp.Body)
		if got := readEvents(t, r, 1); len(got) != 1 || got[0] != "blue 1" {
			t.Fatalf("first event = %q", got)
		}
		a.CloseStreams()
		if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
			t.Errorf("after CloseStreams: %q, %v; want the end of the stream", rest, err)
		}
	})

	t.Run("bad count", func(t *testing.T) {
		_, srv := newServer(t, cfg)
		for _, q := range []string{"0", "-2", "x"} {
			if resp, _ := do(t, http.MethodGet, srv.URL+"/events?count="+q, nil); resp.StatusCode != 400 {
				t.Errorf("count=%s: status = %d, want 400", q, resp.StatusCode)
			}
		}
	})
}

func TestColorHeaderOnErrors(t *testing.T) {
	_, srv := newServer(t, Config{Color: "green"})
	tests := []struct{ method, path string }{
		{http.MethodPost, "/"},
		{http.MethodDelete, "/health"},
		{http.MethodGet, "/ws"}, // not a WebSocket handshake
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, _ := do(t, tt.method, srv.URL+tt.path, nil)
			if resp.StatusCode < 400 {
				t.Errorf("status = %d, want an error", resp.StatusCode)
			}
			if got := resp.Header.Get(ColorHeader); got != "green" {
				t.Errorf("%s = %q, want green", ColorHeader, got)
			}
		})
	}
}
