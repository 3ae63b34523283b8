package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests of large Content-Length bodies on the fast path, which move by
// splice(2) between the two sockets on Linux (proxy/h1/splice_linux.go)
// and are copied elsewhere: integrity, keep-alive framing on both sides
// after them, and blame and timeouts when a side fails mid-body.

// bigBody is a deterministic pseudo-random body of n bytes.
func bigBody(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// bodyHandler answers POST /up with the SHA-256 of the body it read,
// GET /down/N with N bytes of bigBody(N), GET /short/N with a head
// announcing N bytes, half of them and a close, and anything else with a
// short "ok <path>".
func bodyHandler(c net.Conn, _ *bufio.Reader, r *http.Request, body []byte) bool {
	write := func(s string) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(s))+"\r\n\r\n"+s)
		return err == nil
	}
	switch p := r.URL.Path; {
	case p == "/up":
		return write(sum(body))
	case strings.HasPrefix(p, "/down/"), strings.HasPrefix(p, "/short/"):
		n, _ := strconv.Atoi(p[strings.LastIndexByte(p, '/')+1:])
		data := bigBody(n)
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"); err != nil {
			return false
		}
		if strings.HasPrefix(p, "/short/") {
			_, _ = c.Write(data[:n/2])
			return false // the instance dies mid-body
		}
		_, err := c.Write(data)
		return err == nil
	default:
		return write("ok " + p)
	}
}

type spliceFront struct {
	inst *rawInstance
	logs *logRecorder
	cf   *codecFronts // its counters; fast is the fast front
}

func newSpliceFront(t *testing.T) *spliceFront {
	t.Helper()
	return newSpliceFrontTimeout(t, 300*time.Millisecond)
}

// newSpliceFrontTimeout is newSpliceFront with another ClientBodyTimeout.
func newSpliceFrontTimeout(t *testing.T, bodyTimeout time.Duration) *spliceFront {
	t.Helper()
	inst := newRawInstance(t, bodyHandler)
	logs := &logRecorder{min: slog.LevelWarn}
	f := newFixture(t, []string{inst.URL}, []string{inst.URL}, func(c *Config) {
		c.Log = slog.New(logs)
		c.ClientBodyTimeout = bodyTimeout
	})
	cf := &codecFronts{rt: f.rt, reg: f.reg}
	cf.fast = startFast(t, f.rt, nil).addr
	cf.std = startNetHTTPOnly(t, f.rt)
	return &spliceFront{inst: inst, logs: logs, cf: cf}
}

// openPipes counts this process's open pipes: every splice pipe is closed
// when its body ends.
func openPipes(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// TestFastLargeBodies: multi-MiB uploads and downloads through the fast
// path arrive whole (checksums), and both connections stay usable after
// them: a request pipelined right behind an upload body, and the next
// request after a download, are answered on the same client connection,
// over the one instance connection the pool keeps. A body whose rest is
// shorter than the splice threshold (copied) and one just above it
// (spliced) are there too.
func TestFastLargeBodies(t *testing.T) {
	sf := newSpliceFront(t)
	pipes := openPipes(t)
	rc := dialRaw(t, sf.cf.fast)
	for _, n := range []int{8<<20 + 123, 3 << 20, 64<<10 + 9000, 40 << 10} {
		up := bigBody(n)
		// The head and the first bytes of the body in one write (read
		// with the head, sent first), the rest in pieces, and a small
		// request pipelined right behind the body.
		head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n)
		rc.send(head + string(up[:1000]))
		for off := 1000; off < n; off += 1 << 20 {
			end := min(off+1<<20, n)
			chunk := string(up[off:end])
			if end == n {
				chunk += "GET /after-upload HTTP/1.1\r\nHost: a\r\n\r\n"
			}
			rc.send(chunk)
		}
		if res, body := rc.mustRead("POST"); res.StatusCode != 200 || body != sum(up) {
			t.Fatalf("upload of %d bytes: %d, checksum %q, want %q", n, res.StatusCode, body, sum(up))
		}
		if res, body := rc.mustRead("GET"); res.StatusCode != 200 || body != "ok /after-upload" {
			t.Fatalf("request pipelined after an upload of %d bytes: %d %q", n, res.StatusCode, body)
		}

		rc.send(fmt.Sprintf("GET /down/%d HTTP/1.1\r\nHost: a\r\n\r\n", n))
		res, body := rc.mustRead("GET")
		if res.StatusCode != 200 || len(body) != n || sum([]byte(body)) != sum(bigBody(n)) {
			t.Fatalf("download of %d bytes: %d, %d bytes, checksum mismatch: %v", n, res.StatusCode, len(body), sum([]byte(body)) != sum(bigBody(n)))
		}
		rc.send("GET /after-download HTTP/1.1\r\nHost: a\r\n\r\n")
		if res, body := rc.mustRead("GET"); res.StatusCode != 200 || body != "ok /after-download" {
			t.Fatalf("request after a download of %d bytes: %d %q", n, res.StatusCode, body)
		}
	}
	if a := sf.inst.accepted.Load(); a != 1 {
		t.Errorf("the instance accepted %d connections, want 1 (kept and reused after every body)", a)
	}
	if n := sf.inst.parseErrors.Load(); n != 0 {
		t.Errorf("the instance could not parse %d requests: %v", n, sf.inst.lastParseError.Load())
	}
	if p := openPipes(t); p != pipes {
		t.Errorf("%d pipes open after the bodies, %d before", p, pipes)
	}
}

// TestFastLargeBodiesSlowPeers: the body timeout is between reads, not for
// the whole body, while a body is spliced: an upload that pauses 150 ms
// between pieces for 1.5 s in all (ClientBodyTimeout is 1 s, a margin a
// loaded machine's scheduling delays cannot eat) goes through, and a
// download read slowly arrives whole; the connection serves the next
// request after each.
func TestFastLargeBodiesSlowPeers(t *testing.T) {
	const bodyTimeout = time.Second
	sf := newSpliceFrontTimeout(t, bodyTimeout)
	rc := dialRaw(t, sf.cf.fast)
	const n = 2 << 20
	up := bigBody(n)
	rc.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n))
	start := time.Now()
	for off := 0; off < n; off += n / 10 {
		time.Sleep(150 * time.Millisecond)
		rc.send(string(up[off:min(off+n/10, n)]))
	}
	if res, body := rc.mustRead("POST"); res.StatusCode != 200 || body != sum(up) {
		t.Fatalf("slow upload: %d, checksum %q, want %q", res.StatusCode, body, sum(up))
	}
	if took := time.Since(start); took < bodyTimeout {
		t.Fatalf("the upload took %v, want over %v (the point is a body slower than the timeout)", took, bodyTimeout)
	}

	rc.send(fmt.Sprintf("GET /down/%d HTTP/1.1\r\nHost: a\r\n\r\n", n))
	res, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("slow download: %v %v", res, err)
	}
	var got []byte
	buf := make([]byte, 64<<10)
	for err == nil {
		time.Sleep(5 * time.Millisecond)
		var k int
		k, err = res.Body.Read(buf)
		got = append(got, buf[:k]...)
	}
	if err != io.EOF || len(got) != n || sum(got) != sum(bigBody(n)) {
		t.Fatalf("slow download: %d bytes, err %v, intact %v", len(got), err, sum(got) == sum(bigBody(n)))
	}
	rc.send("GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, body := rc.mustRead("GET"); res.StatusCode != 200 || body != "ok /after" {
		t.Fatalf("request after the slow bodies: %d %q", res.StatusCode, body)
	}
	if a := sf.inst.accepted.Load(); a != 1 {
		t.Errorf("the instance accepted %d connections, want 1", a)
	}
}

// waitCounters polls the counters until ok accepts them or 3 s pass: the
// counts land as the request finishes, which may be after the client saw
// its end.
func waitCounters(t *testing.T, cf *codecFronts, before counters, ok func(d counters) bool) counters {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		after := cf.counters(t)
		d := counters{
			upstreamErrors: after.upstreamErrors - before.upstreamErrors,
			ejections:      after.ejections - before.ejections,
			retries:        after.retries - before.retries,
			client:         diffMap(after.client, before.client),
			requests:       diffMap(after.requests, before.requests),
		}
		if ok(d) || time.Now().After(deadline) {
			return d
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFastLargeBodyFaults: faults in the middle of a large body.
//
//   - The client leaves mid-upload: 499, counted as the client's
//     (gone), not as the instance's, not retried.
//   - The client stalls mid-upload: 408 after ClientBodyTimeout (the
//     timeout applies between reads while the body is spliced), counted
//     as the client's.
//   - The instance announces 8 MiB, sends half and closes: the client
//     gets the head and half the body and its connection is closed; the
//     instance is blamed in the log and in its upstream error count,
//     and the request is not retried.
//
// No pipe and no goroutine outlives them (goleak checks the goroutines).
func TestFastLargeBodyFaults(t *testing.T) {
	sf := newSpliceFront(t)
	cf := sf.cf
	pipes := openPipes(t)
	const n = 8 << 20
	up := bigBody(n)
	head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", n)

	t.Run("client leaves mid-upload", func(t *testing.T) {
		before, hits := cf.counters(t), sf.inst.hits.Load()
		status, _ := runFaultCase(t, cf.fast, faultCase{send: head + string(up[:3<<20]), then: "close"})
		if status != 0 {
			t.Errorf("status %d, want none (the client left)", status)
		}
		d := waitCounters(t, cf, before, func(d counters) bool { return d.requests["499"] == 1 })
		if d.requests["499"] != 1 || d.client[ClientGone] != 1 || d.upstreamErrors != 0 || d.retries != 0 || d.ejections != 0 {
			t.Errorf("requests %v, client errors %v, %v upstream errors, %v retries, %v ejections; want one 499, one %q client error, nothing else",
				d.requests, d.client, d.upstreamErrors, d.retries, d.ejections, ClientGone)
		}
		if h := sf.inst.hits.Load() - hits; h != 0 {
			t.Errorf("the instance got %d complete requests, want 0", h)
		}
	})

	t.Run("client stalls mid-upload", func(t *testing.T) {
		before := cf.counters(t)
		status, took := runFaultCase(t, cf.fast, faultCase{send: head + string(up[:2<<20]), then: "stall"})
		if status != http.StatusRequestTimeout {
			t.Errorf("status %d, want 408", status)
		}
		if took > 3*time.Second {
			t.Errorf("the answer took %v; the body timeout is 300ms", took)
		}
		d := waitCounters(t, cf, before, func(d counters) bool { return d.client[ClientTimeout] == 1 })
		if d.client[ClientTimeout] != 1 || d.upstreamErrors != 0 || d.retries != 0 || d.ejections != 0 {
			t.Errorf("client errors %v, %v upstream errors, %v retries, %v ejections; want one %q client error",
				d.client, d.upstreamErrors, d.retries, d.ejections, ClientTimeout)
		}
	})

	t.Run("instance dies mid-download", func(t *testing.T) {
		before, hits := cf.counters(t), sf.inst.hits.Load()
		rc := dialRaw(t, cf.fast)
		rc.send(fmt.Sprintf("GET /short/%d HTTP/1.1\r\nHost: a\r\n\r\n", n))
		res, body, err := rc.read("GET")
		if err == nil || res == nil || res.StatusCode != 200 {
			t.Fatalf("got %v, %d body bytes, err %v; want the 200 head and a cut body", res, len(body), err)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != n/2 || body != string(bigBody(n)[:n/2]) {
			t.Errorf("body: %d bytes (want the %d the instance sent, intact), err %v", len(body), n/2, err)
		}
		if !rc.closedWithin(2 * time.Second) {
			t.Error("the client connection stayed open after a cut body")
		}
		d := waitCounters(t, cf, before, func(d counters) bool { return d.requests["200"] == 1 })
		if d.retries != 0 || len(d.client) != 0 || d.upstreamErrors != 1 {
			t.Errorf("%v retries, client errors %v, %v upstream errors; want none, none, 1 (the cut body is the instance's)", d.retries, d.client, d.upstreamErrors)
		}
		if h := sf.inst.hits.Load() - hits; h != 1 {
			t.Errorf("the instance got %d requests, want 1 (not retried)", h)
		}
		deadline := time.Now().Add(2 * time.Second)
		for sf.logs.find("upstream error in the response body") == "" && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if sf.logs.find("upstream error in the response body") == "" {
			t.Error("the cut body was not logged as the instance's error")
		}
	})

	t.Run("instance dies mid-download, net/http codec", func(t *testing.T) {
		before, hits := cf.counters(t), sf.inst.hits.Load()
		rc := dialRaw(t, cf.std)
		rc.send(fmt.Sprintf("GET /short/%d HTTP/1.1\r\nHost: a\r\n\r\n", n))
		res, body, err := rc.read("GET")
		// net/http drops what it still buffers when the handler aborts, so
		// the client gets a cut prefix of what the instance sent.
		if err == nil || res == nil || res.StatusCode != 200 || len(body) > n/2 || body != string(bigBody(n)[:len(body)]) {
			t.Fatalf("got %v, %d body bytes, err %v; want the 200 head and at most the %d bytes sent", res, len(body), err, n/2)
		}
		d := waitCounters(t, cf, before, func(d counters) bool { return d.requests["200"] == 1 && d.upstreamErrors == 1 })
		if d.retries != 0 || len(d.client) != 0 || d.upstreamErrors != 1 {
			t.Errorf("%v retries, client errors %v, %v upstream errors; want none, none, 1", d.retries, d.client, d.upstreamErrors)
		}
		if h := sf.inst.hits.Load() - hits; h != 1 {
			t.Errorf("the instance got %d requests, want 1 (not retried)", h)
		}
	})

	// A client that leaves in the middle of a download is its own fault,
	// counted alike on either codec (as on HTTP/2): 499, gone.
	for _, front := range []struct{ name, addr string }{{"fast", cf.fast}, {"net/http", cf.std}} {
		t.Run("client leaves mid-download, "+front.name, func(t *testing.T) {
			before := cf.counters(t)
			nc, err := net.Dial("tcp", front.addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(nc, "GET /down/%d HTTP/1.1\r\nHost: a\r\n\r\n", 64<<20)
			if _, err := io.ReadFull(nc, make([]byte, 1<<20)); err != nil {
				t.Fatalf("read the first MiB: %v", err)
			}
			nc.Close()
			total := func(m map[string]float64) (n float64) {
				for _, v := range m {
					n += v
				}
				return n
			}
			d := waitCounters(t, cf, before, func(d counters) bool { return total(d.requests) == 1 && len(d.client) > 0 })
			if d.requests["499"] != 1 || total(d.requests) != 1 || d.client[ClientGone] != 1 ||
				d.upstreamErrors != 0 || d.ejections != 0 || d.retries != 0 {
				t.Errorf("requests %v, client errors %v, %v upstream errors, %v ejections, %v retries; want one 499, one %q client error and nothing charged to the instance",
					d.requests, d.client, d.upstreamErrors, d.ejections, d.retries, ClientGone)
			}
		})
	}

	deadline := time.Now().Add(3 * time.Second)
	for openPipes(t) != pipes && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	if p := openPipes(t); p != pipes {
		t.Errorf("%d pipes open after the faults, %d before", p, pipes)
	}
}
