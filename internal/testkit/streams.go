package testkit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// StreamingInstance is an instance with long-lived answers in flight, for
// the tests of how a proxy ends them: /health answers 200; /events is an
// event stream with an event every eventEvery (each padded with eventPad
// bytes); anything else is upgraded to a WebSocket that sends a 1,500-byte
// message every 50 ms (more than one read of a relay at times) until it is
// closed.
func StreamingInstance(t testing.TB, eventEvery time.Duration, eventPad int) *httptest.Server {
	t.Helper()
	pad := ""
	if eventPad > 0 {
		pad = " " + strings.Repeat("x", eventPad)
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			return
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(w, "data: %d%s\n\n", i, pad); err != nil || rc.Flush() != nil {
					return
				}
				select {
				case <-r.Context().Done():
					return
				case <-time.After(eventEvery):
				}
			}
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := c.CloseRead(r.Context())
		msg := []byte(strings.Repeat("m", 1500))
		for {
			if c.Write(ctx, websocket.MessageBinary, msg) != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}
