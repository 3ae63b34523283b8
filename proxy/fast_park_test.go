//go:build linux

package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"testing"
	"time"
)

// TestFastParkedConnectionsAcrossCutover: keep-alive connections parked
// (their goroutines ended, proxy/h1/park_linux.go) while the active colour
// changes resume on the new colour, and the request metrics count every
// answer with nothing left in flight.
func TestFastParkedConnectionsAcrossCutover(t *testing.T) {
	blue := newRawInstance(t, okHandler("blue"))
	green := newRawInstance(t, okHandler("green"))
	f := newFixture(t, []string{blue.URL}, []string{green.URL}, nil)
	ff := startFast(t, f.rt, func(s *Server) { s.h1.ParkAfter = 30 * time.Millisecond })
	const n = 20
	conns := make([]*rawConn, n)
	get := func(i int, path, want string) {
		t.Helper()
		conns[i].send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n")
		if res, body := conns[i].mustRead("GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("connection %d: %s %q, want 200 %q", i, res.Status, body, want)
		}
	}
	for i := range conns {
		conns[i] = dialRaw(t, ff.addr)
		get(i, fmt.Sprintf("/before/%d", i), fmt.Sprintf("blue /before/%d", i))
	}
	waitParked := func() {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ff.srv.h1.Parked() != n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d connections parked", ff.srv.h1.Parked(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitParked()
	if err := f.rt.SetActive("green", 2); err != nil {
		t.Fatal(err)
	}
	for i := range conns {
		get(i, fmt.Sprintf("/after/%d", i), fmt.Sprintf("green /after/%d", i))
	}
	waitParked()
	for deadline := time.Now().Add(5 * time.Second); ; {
		total, by := sumMetric(t, f.reg, "bluegreen_requests_total", "color")
		if total == 2*n && by["blue"] == n && by["green"] == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests counted: %v by colour %v, want %d on each", total, by, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, color := range []string{"blue", "green"} {
		if v := metricValue(t, f.reg, "bluegreen_inflight_requests", map[string]string{"color": color}); v != 0 {
			t.Errorf("%s in flight with every connection parked: %v", color, v)
		}
	}
}

// A client that connects and sends nothing is closed after the
// read-header timeout, parked (plain) or not (TLS), as net/http closes
// it; it used to wait the idle timeout (120 s in serve). Once a request
// has been answered, the connection waits the idle timeout for the next.
func TestFastSilentConnectionClosedAtReadHeaderTimeout(t *testing.T) {
	inst := newRawInstance(t, okHandler("blue"))
	rt := newRouterOnly(t, []string{inst.URL}, []string{inst.URL}, nil)
	timeouts := func(s *Server) { s.ReadHeaderTimeout, s.IdleTimeout = 300*time.Millisecond, 30*time.Second }
	plain, secure := startFast(t, rt, timeouts), startH2(t, rt, timeouts)
	dialTLS := func() *rawConn {
		nc, err := tls.Dial("tcp", secure.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	}
	for _, front := range []struct {
		name string
		dial func() *rawConn
	}{{"plain, parked", func() *rawConn { return dialRaw(t, plain.addr) }}, {"TLS, not parked", dialTLS}} {
		silent, served := front.dial(), front.dial()
		served.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if res, _ := served.mustRead("GET"); res.StatusCode != 200 {
			t.Fatalf("%s: %s", front.name, res.Status)
		}
		start := time.Now()
		if !silent.closedWithin(3 * time.Second) {
			t.Fatalf("%s: a connection that sent nothing is still open after 3 s (read-header timeout 300 ms)", front.name)
		}
		t.Logf("%s: the silent connection closed after %v", front.name, time.Since(start).Round(10*time.Millisecond))
		served.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if res, _ := served.mustRead("GET"); res.StatusCode != 200 {
			t.Fatalf("%s: the kept-alive connection, idle past the read-header timeout: %s", front.name, res.Status)
		}
	}
}
