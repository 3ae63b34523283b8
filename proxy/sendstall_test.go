package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// stalledInstance accepts connections, reads a request's head and then
// reads nothing more: an instance stuck while it is sent a request body.
func stalledInstance(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			go func() {
				br := bufio.NewReaderSize(c, 512)
				for {
					ln, err := br.ReadString('\n')
					if err != nil || ln == "\r\n" {
						return // the head is read; the body never is
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestInstanceThatStopsReadingTheBody: an instance that takes no byte of a
// request body for BLUEGREEN_UPSTREAM_TIMEOUT fails the request with 504,
// charged to it as a timeout, on every codec and whatever way the body
// goes (copied, spliced); before, the request hung until the client gave
// up and was then counted the client's (499).
func TestInstanceThatStopsReadingTheBody(t *testing.T) {
	const stall = 300 * time.Millisecond
	inst := stalledInstance(t)
	f := newFixture(t, []string{inst}, []string{inst}, func(c *Config) {
		c.Upstream.ResponseHeaderTimeout = stall
		c.Outlier = OutlierConfig{Consecutive: 100, Eject: time.Minute}
	})
	cf := &codecFronts{rt: f.rt, reg: f.reg, fast: startFast(t, f.rt, nil).addr, std: startNetHTTPOnly(t, f.rt)}
	h2 := startH2(t, f.rt, nil)
	const size = 64 << 20 // far more than the socket buffers between proxy and instance
	post := map[string]func() (int, error){
		"fast":     func() (int, error) { return postRaw(t, cf.fast, size) },
		"net/http": func() (int, error) { return postRaw(t, cf.std, size) },
		"h2": func() (int, error) {
			res, err := h2Client(t).Post(h2.url+"/up", "application/octet-stream", io.LimitReader(zeros{}, size))
			if err != nil {
				return 0, err
			}
			res.Body.Close()
			return res.StatusCode, nil
		},
	}
	for _, name := range []string{"fast", "net/http", "h2"} {
		before := cf.counters(t)
		start := time.Now()
		code, err := post[name]()
		took := time.Since(start)
		if err != nil || code != http.StatusGatewayTimeout {
			t.Errorf("%s: %d, %v after %v; want 504", name, code, err, took)
		}
		if took > 20*stall {
			t.Errorf("%s: the 504 took %v with a stall limit of %v", name, took, stall)
		}
		d := waitCounters(t, cf, before, func(d counters) bool { return d.upstreamErrors >= 1 && len(d.requests) > 0 })
		if d.upstreamErrors != 1 || d.requests["504"] != 1 || len(d.requests) != 1 || len(d.client) != 0 {
			t.Errorf("%s: %v upstream errors, requests %v, client errors %v; want one instance timeout, 504",
				name, d.upstreamErrors, d.requests, d.client)
		}
	}
}

// postRaw sends a POST with a size-byte body on a raw connection, while
// reading the answer, and returns its status.
func postRaw(t *testing.T, addr string, size int) (int, error) {
	rc := dialRaw(t, addr)
	go func() {
		if _, err := io.WriteString(rc.nc, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n"); err != nil {
			return
		}
		_, _ = io.Copy(rc.nc, io.LimitReader(zeros{}, int64(size)))
	}()
	res, _, err := rc.read("POST")
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}

// TestClientThatStopsReadingIsCut: a client that takes no byte of its
// answer for ClientSendTimeout has its connection cut (HTTP/2: the
// stream reset), so that it holds no instance connection and no exchange,
// on every codec; counted 499, the client's timeout, never against the
// instance. Before, such a client held both for as long as it liked.
func TestClientThatStopsReadingIsCut(t *testing.T) {
	const stall = 300 * time.Millisecond
	ended := make(chan time.Time, 1)
	inst := newRawInstance(t, func(c net.Conn, br *bufio.Reader, r *http.Request, _ []byte) bool {
		if r.URL.Path != "/big" {
			return okHandler("blue")(c, br, r, nil)
		}
		const size = 256 << 20
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		_, _ = io.Copy(c, io.LimitReader(zeros{}, size)) // until the proxy closes the connection
		ended <- time.Now()
		return false
	})
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) {
		c.ClientSendTimeout = stall
		c.Outlier = OutlierConfig{Consecutive: 1, Eject: time.Minute}
	})
	cf := &codecFronts{rt: f.rt, reg: f.reg, fast: startFast(t, f.rt, nil).addr, std: startNetHTTPOnly(t, f.rt)}
	h2 := startH2(t, f.rt, nil)
	open := map[string]func(){
		"fast":     func() { dialRaw(t, cf.fast).send("GET /big HTTP/1.1\r\nHost: a\r\n\r\n") },
		"net/http": func() { dialRaw(t, cf.std).send("GET /big HTTP/1.1\r\nHost: a\r\n\r\n") },
		"h2":       func() { dialH2(t, h2.addr, true).Request(1, "/big", true) },
		"https/1.1": func() {
			tc, err := tls.Dial("tcp", h2.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tc.Close() })
			_, _ = io.WriteString(tc, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
		},
	}
	for _, name := range []string{"fast", "net/http", "h2", "https/1.1"} {
		before := cf.counters(t)
		start := time.Now()
		open[name]() // and never read
		select {
		case at := <-ended:
			if d := at.Sub(start); d < stall || d > 20*stall {
				t.Errorf("%s: the instance's answer ended after %v, the send timeout is %v", name, d, stall)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the client that reads nothing still holds the instance's answer after 10s", name)
		}
		d := waitCounters(t, cf, before, func(d counters) bool {
			return len(d.requests) > 0 && (len(d.client) > 0 || d.upstreamErrors > 0)
		})
		if d.requests["499"] != 1 || len(d.requests) != 1 || d.client[ClientTimeout] != 1 || len(d.client) != 1 || d.upstreamErrors != 0 || d.ejections != 0 {
			t.Errorf("%s: requests %v, client errors %v, %v upstream errors, %v ejections; want one 499, a client timeout, nothing charged to the instance",
				name, d.requests, d.client, d.upstreamErrors, d.ejections)
		}
	}
}
