package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test binary plays the child process when this variable is set.
const childEnv = "TESTKIT_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child listens on a port of its own choosing, reports it on a JSON ready
// line and serves until SIGTERM; mode "fail" exits 3 at once instead.
func child(mode string) int {
	if mode == "fail" {
		fmt.Fprintln(os.Stderr, "child: bad configuration")
		return 3
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM) // before the ready line, which the test answers with SIGTERM
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	fmt.Printf("{\"msg\":\"not yet\"}\n{\"msg\":\"listening\",\"addr\":%q}\n", ln.Addr().String())
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	<-sig
	return 0
}

func TestProcessReadyLineAndExit(t *testing.T) {
	p := Start(t, "child", os.Args[0], []string{childEnv + "=serve"})
	addr := Addr(p.WaitLog(t, 30*time.Second, "listening"), "addr")
	WaitHTTP(t, 10*time.Second, "http://"+addr+"/", http.StatusOK)
	p.Signal(syscall.SIGTERM)
	if code := p.ExitCode(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}

	f := Start(t, "failing child", os.Args[0], []string{childEnv + "=fail"})
	if code := f.ExitCode(t, 30*time.Second); code != 3 || !strings.Contains(f.Out.String(), "bad configuration") {
		t.Fatalf("exit %d, output %q", code, f.Out.String())
	}
}

func TestBufferWait(t *testing.T) {
	var b Buffer
	go func() {
		for i := range 5 {
			fmt.Fprintf(&b, "line %d\n", i)
		}
	}()
	got, err := b.Wait(t.Context(), func(s string) bool { return strings.Contains(s, "line 4") })
	if err != nil || !strings.Contains(got, "line 0\n") {
		t.Fatalf("Wait: %q %v", got, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Wait(ctx, func(s string) bool { return strings.Contains(s, "never") }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait for what never comes: %v", err)
	}
}

func TestLoadCounts(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	l := StartLoad(t.Context(), 4, 25, func(int, int64) error {
		_, err := Get(srv.Client(), srv.URL)
		return err
	})
	l.Wait()
	if l.Sent.Load() != 100 || l.Failed.Load() != 10 || !strings.Contains(fmt.Sprint(l.FirstErr()), "502") {
		t.Fatalf("sent %d, failed %d, first %v", l.Sent.Load(), l.Failed.Load(), l.FirstErr())
	}
}

func TestListenServesEachConnectionAndCloseWaits(t *testing.T) {
	var served []string // written by the accept loop only, read after Close
	ln := Listen(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 2)
		if _, err := c.Read(buf); err == nil {
			served = append(served, string(buf))
		}
	})
	for _, msg := range []string{"a1", "b2"} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		// The server closes after reading: wait for it, so both are served
		// before Close.
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read a byte the server never wrote")
		}
		c.Close()
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(served, ",") != "a1,b2" {
		t.Fatalf("served %q", served)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the listener still accepts after Close")
	}
	_ = ln.Close() // again, as the test's cleanup does
}
