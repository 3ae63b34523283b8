package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// frame builds a WebSocket frame with a payload of n bytes.
func frame(n int, masked bool) []byte {
	b := []byte{0x82}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, make([]byte, n)...)
}

// The tracker finds every frame boundary however the stream is cut into
// reads, for every length encoding, masked or not.
func TestFrameTracker(t *testing.T) {
	var stream []byte
	var ends []int
	for _, f := range [][]byte{frame(0, false), frame(5, false), frame(125, true), frame(126, false), frame(300, true), frame(70000, false), closeGoingAway} {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	for _, step := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		t.Run(fmt.Sprint("reads of ", step), func(t *testing.T) {
			var f frameTracker
			var got []int
			pos := 0
			for pos < len(stream) {
				b := stream[pos:min(pos+step, len(stream))]
				// stop at each boundary, as Read does once ending
				n := f.consume(b, true)
				pos += n
				if f.atBoundary() {
					got = append(got, pos)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(ends) {
				t.Fatalf("boundaries %v, want %v", got, ends)
			}
			var g frameTracker
			if n := g.consume(stream[:ends[2]+1], false); n != ends[2]+1 || g.atBoundary() {
				t.Fatalf("without stop: consumed %d, at boundary %v", n, g.atBoundary())
			}
		})
	}
}

// dialWS opens n WebSockets through the proxy at u and starts reading each;
// the returned channel gets each one's close status once it ends.
func dialWS(t *testing.T, u string, n int) <-chan websocket.StatusCode {
	t.Helper()
	codes := make(chan websocket.StatusCode, n)
	var wg sync.WaitGroup
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		t.Cleanup(cancel)
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(u, "http")+"/ws", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.SetReadLimit(1 << 20)
		t.Cleanup(func() { c.CloseNow() })
		if _, _, err := c.Read(ctx); err != nil { // the first message: relayed
			t.Fatalf("first read: %v", err)
		}
		wg.Add(1)
		go func() {
			wg.Done()
			for {
				if _, _, err := c.Read(ctx); err != nil {
					codes <- websocket.CloseStatus(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return codes
}

func expectCloseCodes(t *testing.T, codes <-chan websocket.StatusCode, n int) {
	t.Helper()
	got := map[websocket.StatusCode]int{}
	for range n {
		select {
		case c := <-codes:
			got[c]++
		case <-time.After(15 * time.Second):
			t.Fatalf("only %v of %d WebSockets ended", got, n)
		}
	}
	t.Logf("close codes seen by %d WebSocket clients: %v", n, got)
	if got[websocket.StatusGoingAway] != n {
		t.Fatalf("close codes %v, want all %d to be 1001 (going away)", got, n)
	}
}

// At shutdown (CloseStreams) and at the end of a drain, 50 WebSocket
// clients with frames in flight each get close 1001, on the fast path's
// hand-over to net/http and on net/http alone.
func TestWebSocketsEndWithGoingAway(t *testing.T) {
	forEachPath(t, func(t *testing.T, fast bool) {
		blue, green := testkit.StreamingInstance(t, 2*time.Millisecond, 200), testkit.StreamingInstance(t, 2*time.Millisecond, 200)
		rt := newRouterOnly(t, []string{blue.URL}, []string{green.URL}, func(c *Config) {
			c.DrainTimeout = 300 * time.Millisecond
			if !fast {
				c.Transport = NewTransport(c.Upstream)
			}
		})
		u := front(t, rt, fast)

		t.Run("shutdown", func(t *testing.T) {
			codes := dialWS(t, u, 50)
			if n := rt.CloseStreams(); n != 50 {
				t.Fatalf("CloseStreams ended %d, want 50", n)
			}
			expectCloseCodes(t, codes, 50)
		})
		t.Run("drain end", func(t *testing.T) {
			codes := dialWS(t, u, 50)
			if err := rt.SetActive("green", 2); err != nil {
				t.Fatal(err)
			}
			expectCloseCodes(t, codes, 50)
			waitFor(t, func() bool { open, _ := rt.Streams("blue"); return open == 0 })
		})
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An event stream ended at shutdown or at the end of a drain ends with the
// last chunk: curl reads a complete response and exits 0.
func TestEventStreamEndsWithLastChunk(t *testing.T) {
	curl := testkit.Tool(t, "curl", ".ci/apt/ops.txt")
	forEachPath(t, func(t *testing.T, fast bool) {
		blue, green := testkit.StreamingInstance(t, 2*time.Millisecond, 200), testkit.StreamingInstance(t, 2*time.Millisecond, 200)
		rt := newRouterOnly(t, []string{blue.URL}, []string{green.URL}, func(c *Config) {
			c.DrainTimeout = 300 * time.Millisecond
			if !fast {
				c.Transport = NewTransport(c.Upstream)
			}
		})
		u := front(t, rt, fast)
		for _, how := range []string{"shutdown", "drain end"} {
			t.Run(how, func(t *testing.T) {
				var exits []string
				var mu sync.Mutex
				var wg sync.WaitGroup
				for range 5 {
					cmd := exec.Command(curl, "-sS", "-N", "--max-time", "20", u+"/events")
					out := &strings.Builder{}
					cmd.Stdout = out
					var stderr strings.Builder
					cmd.Stderr = &stderr
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					wg.Go(func() {
						err := cmd.Wait()
						code := 0
						var ee *exec.ExitError
						if errors.As(err, &ee) {
							code = ee.ExitCode()
						}
						mu.Lock()
						exits = append(exits, fmt.Sprintf("exit %d %s", code, strings.TrimSpace(stderr.String())))
						mu.Unlock()
					})
				}
				waitFor(t, func() bool { open, _ := rt.Streams("blue"); return open == 5 })
				if how == "shutdown" {
					rt.CloseStreams()
				} else {
					if err := rt.SetActive("green", 2); err != nil {
						t.Fatal(err)
					}
					defer rt.SetActive("blue", 3)
				}
				wg.Wait()
				t.Logf("%s: curl %v", how, exits)
				for _, e := range exits {
					if e != "exit 0 " {
						t.Fatalf("curl: %v, want every one exit 0", exits)
					}
				}
			})
		}
	})
}
