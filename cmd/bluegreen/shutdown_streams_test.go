package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// SIGTERM ends 50 WebSockets with close 1001 and event streams with their
// last chunk (curl exits 0), and the process exits 0.
func TestShutdownEndsWebSocketsAndStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	curl := testkit.Tool(t, "curl", ".ci/apt/ops.txt")
	blue, green := testkit.StreamingInstance(t, 5*time.Millisecond, 0), testkit.StreamingInstance(t, 5*time.Millisecond, 0)
	r := newReplica(t, blue.URL, green.URL, "BLUEGREEN_SHUTDOWN_DELAY=0s", "BLUEGREEN_DRAIN_TIMEOUT=10s")
	r.start()

	const n = 50
	codes := make(chan websocket.StatusCode, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range n {
		c, _, err := websocket.Dial(ctx, "ws://"+r.pub+"/ws", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.CloseNow()
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatalf("first message: %v", err)
		}
		go func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					codes <- websocket.CloseStatus(err)
					return
				}
			}
		}()
	}
	var mu sync.Mutex
	var exits []string
	var wg sync.WaitGroup
	for range 3 {
		cmd := exec.Command(curl, "-sS", "-N", "--max-time", "30", "-o", os.DevNull, "http://"+r.pub+"/events")
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
			exits = append(exits, fmt.Sprintf("exit %d%s", code, strings.TrimSpace(" "+stderr.String())))
			mu.Unlock()
		})
	}
	// The streams are open once the proxy counts them.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(metricsText(t, "http://"+r.adm), "bluegreen_inflight_requests{color=\"blue\"} 53") {
		if time.Now().After(deadline) {
			t.Fatalf("53 long-lived requests not in flight:\n%s", metricsText(t, "http://"+r.adm))
		}
		time.Sleep(20 * time.Millisecond)
	}

	r.signal(syscall.SIGTERM)
	got := map[websocket.StatusCode]int{}
	for range n {
		select {
		case c := <-codes:
			got[c]++
		case <-time.After(20 * time.Second):
			t.Fatalf("only %v of %d WebSockets ended", got, n)
		}
	}
	wg.Wait()
	if code := r.p.ExitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	t.Logf("SIGTERM: close codes seen by %d WebSocket clients %v; curl %v", n, got, exits)
	if got[websocket.StatusGoingAway] != n {
		t.Fatalf("close codes %v, want all %d 1001", got, n)
	}
	for _, e := range exits {
		if e != "exit 0" {
			t.Fatalf("curl: %v, want all exit 0", exits)
		}
	}
}
