//go:build linux

package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// Tests of idle-connection parking (park_linux.go) on real loopback
// sockets: a Server whose Handler answers each request with its path.

const testParkAfter = 30 * time.Millisecond

type pathHandler struct{}

func (pathHandler) ServeH1(c *Conn, x *Exchange) bool {
	keep := c.KeepAfterError(x, false)
	return c.WriteError(x, http.StatusOK, "", "path "+x.Path(), keep) && keep
}

type parkFront struct {
	s    *Server
	addr string
	done chan error
}

func startParking(t *testing.T, ln net.Listener, mutate func(*Server)) *parkFront {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{
		Handler:   pathHandler{},
		Fallback:  &http.Server{ErrorLog: log.New(io.Discard, "", 0)},
		Buffers:   &Buffers{},
		Log:       slog.New(slog.DiscardHandler),
		ParkAfter: testParkAfter,
	}
	if mutate != nil {
		mutate(s)
	}
	f := &parkFront{s: s, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { f.done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return f
}

func (f *parkFront) conns() int {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return len(f.s.conns)
}

type parkClient struct {
	nc net.Conn
	br *bufio.Reader
}

func dialPark(t *testing.T, addr string) *parkClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &parkClient{nc: nc, br: bufio.NewReader(nc)}
}

func request(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n" }

func (c *parkClient) send(s string) error {
	_, err := io.WriteString(c.nc, s)
	return err
}

// read reads one answer and checks it is 200 for path.
func (c *parkClient) read(path string) (*http.Response, error) {
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK || string(b) != "path "+path {
		return nil, fmt.Errorf("answer %q %q for %s", res.Status, b, path)
	}
	return res, nil
}

func (c *parkClient) get(path string) (*http.Response, error) {
	if err := c.send(request(path)); err != nil {
		return nil, err
	}
	return c.read(path)
}

// closedWithin reports whether the server closed the connection (a read
// meets EOF or a reset) within d.
func (c *parkClient) closedWithin(d time.Duration) bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// openParked opens n connections, each answered once, and waits until
// all are parked.
func openParked(t *testing.T, f *parkFront, n int) []*parkClient {
	t.Helper()
	cs := make([]*parkClient, n)
	for i := range cs {
		cs[i] = dialPark(t, f.addr)
		if _, err := cs[i].get(fmt.Sprintf("/first/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitUntil(t, 5*time.Second, "every connection parked", func() bool { return f.s.Parked() == n })
	return cs
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// settledGoroutines is the goroutine count once it stopped changing.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// TestParkedConnectionsResume: many keep-alive connections idle past the
// grace give up their goroutines; each then sends a request and gets its
// own answer, three times over, the last time all at once.
func TestParkedConnectionsResume(t *testing.T) {
	f := startParking(t, nil, nil)
	base := settledGoroutines()
	const n = 200
	cs := openParked(t, f, n)
	if g := settledGoroutines(); g > base+n/10 {
		t.Fatalf("%d goroutines with %d connections parked; %d before they opened", g, n, base)
	}
	for i, c := range cs {
		if _, err := c.get(fmt.Sprintf("/second/%d", i)); err != nil {
			t.Fatalf("connection %d after parking: %v", i, err)
		}
	}
	testkit.WaitUntil(t, 5*time.Second, "every connection parked again", func() bool { return f.s.Parked() == n })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range cs {
		wg.Go(func() {
			if _, err := c.get(fmt.Sprintf("/third/%d", i)); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := f.conns(); got != n {
		t.Fatalf("the server holds %d connections, want %d", got, n)
	}
}

// TestParkBytesAtParking: bytes that arrive while a connection is being
// parked (after its goroutine saw nothing to read, before its socket is
// watched) wake it: a request, and two pipelined ones, sent at exactly
// that moment are answered.
func TestParkBytesAtParking(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			var (
				mu     sync.Mutex
				client *parkClient
				sent   int
			)
			f := startParking(t, nil, func(s *Server) {
				s.beforePark = func(*Conn) {
					mu.Lock()
					defer mu.Unlock()
					if client == nil || sent == 3 {
						return
					}
					sent++
					msg := request(fmt.Sprintf("/at-park/%d", sent))
					if pipelined {
						msg += request(fmt.Sprintf("/at-park/%d/b", sent))
					}
					if err := client.send(msg); err != nil {
						t.Error(err)
					}
				}
			})
			c := dialPark(t, f.addr)
			mu.Lock()
			client = c
			mu.Unlock()
			if _, err := c.get("/before"); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 3; i++ {
				if _, err := c.read(fmt.Sprintf("/at-park/%d", i)); err != nil {
					t.Fatalf("request sent while parking %d: %v", i, err)
				}
				if pipelined {
					if _, err := c.read(fmt.Sprintf("/at-park/%d/b", i)); err != nil {
						t.Fatalf("pipelined request sent while parking %d: %v", i, err)
					}
				}
			}
			testkit.WaitUntil(t, 5*time.Second, "the connection parked again", func() bool { return f.s.Parked() == 1 })
			if _, err := c.get("/after"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestParkRequestsAroundGrace: requests that come just before, at and
// after the grace (whole, or with the head in two pieces around it) are
// all answered.
func TestParkRequestsAroundGrace(t *testing.T) {
	f := startParking(t, nil, nil)
	c := dialPark(t, f.addr)
	for d := time.Duration(0); d <= 3*testParkAfter; d += 5 * time.Millisecond {
		path := fmt.Sprintf("/gap/%v", d)
		if _, err := c.get(path); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		time.Sleep(d)
		if err := c.send("GET " + path + "/split HTTP/1.1\r\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		if err := c.send("Host: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.read(path + "/split"); err != nil {
			t.Fatalf("%s/split: %v", path, err)
		}
	}
}

// TestParkedClientGoes: a parked connection whose client half-closes,
// resets or closes is closed and forgotten, leaving no goroutine and no
// descriptor behind.
func TestParkedClientGoes(t *testing.T) {
	f := startParking(t, nil, nil)
	base, fds := settledGoroutines(), openFDs(t)
	const n = 60
	cs := openParked(t, f, n)
	for i, c := range cs {
		tc := c.nc.(*net.TCPConn)
		switch i % 3 {
		case 0:
			_ = tc.CloseWrite()
		case 1:
			_ = tc.SetLinger(0) // close with a reset
			tc.Close()
		case 2:
			tc.Close()
		}
	}
	for i, c := range cs {
		if i%3 == 0 {
			if !c.closedWithin(5 * time.Second) {
				t.Fatalf("connection %d: half-closed while parked, not closed by the server", i)
			}
			c.nc.Close()
		}
	}
	testkit.WaitUntil(t, 5*time.Second, "every connection forgotten", func() bool { return f.conns() == 0 && f.s.Parked() == 0 })
	testkit.WaitUntil(t, 5*time.Second, "goroutines and descriptors back", func() bool {
		return runtime.NumGoroutine() <= base && openFDs(t) <= fds
	})
}

// TestParkedIdleTimeout: parked connections are closed once idle for
// IdleTimeout, not long before and not long after.
func TestParkedIdleTimeout(t *testing.T) {
	const n = 20
	// The checks need the connections parked well within IdleTimeout: on
	// a slow machine the timeout doubles until they are (never a skip).
	for idle := 500 * time.Millisecond; ; idle *= 2 {
		f := startParking(t, nil, func(s *Server) { s.IdleTimeout = idle })
		start := time.Now()
		cs := openParked(t, f, n)
		if time.Since(start) > idle/2 && idle < 8*time.Second {
			for _, c := range cs {
				c.nc.Close()
			}
			continue
		}
		if cs[0].closedWithin(idle/2 - time.Since(start)) {
			t.Fatalf("a parked connection closed %v after the connections opened; IdleTimeout is %v", time.Since(start), idle)
		}
		for i, c := range cs {
			if !c.closedWithin(idle + time.Second - time.Since(start)) {
				t.Fatalf("connection %d still open %v after the connections opened; IdleTimeout is %v", i, time.Since(start), idle)
			}
		}
		testkit.WaitUntil(t, time.Second, "every connection forgotten", func() bool { return f.conns() == 0 && f.s.Parked() == 0 })
		return
	}
}

// TestParkedShutdown: EndKeepAlives leaves parked connections open (one
// that sends a request gets its answer with Connection: close); Shutdown
// closes the rest at once and returns promptly.
func TestParkedShutdown(t *testing.T) {
	f := startParking(t, nil, nil)
	base := settledGoroutines()
	const n = 50
	cs := openParked(t, f, n)
	f.s.EndKeepAlives()
	if cs[1].closedWithin(100 * time.Millisecond) {
		t.Fatal("EndKeepAlives closed a parked connection")
	}
	res, err := cs[0].get("/last")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Close || !cs[0].closedWithin(time.Second) {
		t.Fatalf("after EndKeepAlives: Connection: close %v, then closed: want both", res.Close)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := f.s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Shutdown took %v with only parked connections", took)
	}
	for i, c := range cs[1:] {
		if !c.closedWithin(time.Second) {
			t.Fatalf("parked connection %d open after Shutdown", i+1)
		}
	}
	if f.s.Parked() != 0 || f.conns() != 0 {
		t.Fatalf("after Shutdown: %d parked, %d connections", f.s.Parked(), f.conns())
	}
	select {
	case err := <-f.done:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve returned %v", err)
		}
		f.done <- err // for the cleanup
	case <-time.After(time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	testkit.WaitUntil(t, 5*time.Second, "goroutines back", func() bool { return runtime.NumGoroutine() < base })
}

// TestParkedClose: Close closes parked connections.
func TestParkedClose(t *testing.T) {
	f := startParking(t, nil, nil)
	c := dialPark(t, f.addr)
	if _, err := c.get("/x"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitUntil(t, 5*time.Second, "the connection parked", func() bool { return f.s.Parked() == 1 })
	_ = f.s.Close()
	if !c.closedWithin(time.Second) {
		t.Fatal("parked connection open after Close")
	}
	if f.s.Parked() != 0 || f.conns() != 0 {
		t.Fatalf("after Close: %d parked, %d connections", f.s.Parked(), f.conns())
	}
}

// plainListener hands out connections without a RawConn, as a TLS
// listener does.
type plainListener struct{ net.Listener }

type plainConn struct{ net.Conn }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// TestNoParkWithoutRawConn: a connection without a RawConn (TLS) is never
// parked; it keeps waiting in its goroutine and is served.
func TestNoParkWithoutRawConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := startParking(t, plainListener{ln}, nil)
	c := dialPark(t, f.addr)
	for i := range 3 {
		if _, err := c.get(fmt.Sprintf("/%d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * testParkAfter)
		if p := f.s.Parked(); p != 0 {
			t.Fatalf("%d connections without a RawConn parked", p)
		}
	}
	if f.conns() != 1 {
		t.Fatalf("the server holds %d connections, want 1", f.conns())
	}
}

// TestParkedHoldNoBuffers: connections whose request and answer each
// needed a buffer hold none once parked: no read buffer, no write buffer,
// no goroutine.
func TestParkedHoldNoBuffers(t *testing.T) {
	f := startParking(t, nil, nil)
	base := settledGoroutines()
	const n = 40
	long := "/" + strings.Repeat("p", 3000) // the head and the answer fill some KiB
	for i := range n {
		c := dialPark(t, f.addr)
		if _, err := c.get(fmt.Sprintf("%s/%d", long, i)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitUntil(t, 5*time.Second, "every connection parked", func() bool { return f.s.Parked() == n })
	conns, parked, holding, _ := f.s.IdleBuffers(func(net.Conn, func()) bool { return false })
	g := settledGoroutines()
	// Close the Server before the clients go: a client's close would
	// resume its connection, whose buffer use the race detector cannot
	// order after the look above; after Close nothing resumes.
	_ = f.s.Close()
	if conns != n || parked != n || holding != 0 {
		t.Fatalf("%d connections, %d parked, %d of them holding a buffer; want %d, %d, 0", conns, parked, holding, n, n)
	}
	if g > base+n/10 {
		t.Fatalf("%d goroutines with %d connections parked; %d before they opened", g, n, base)
	}
}

// TestParkedReleaseMemory: after a wave of parking the parker returns the
// freed memory to the system once (the Go heap holds no free pages right
// after), counts the next wave from zero, and within the interval does not
// release again.
func TestParkedReleaseMemory(t *testing.T) {
	f := startParking(t, nil, nil)
	if _, err := dialPark(t, f.addr).get("/first"); err != nil { // the parker runs from the first connection on
		t.Fatal(err)
	}
	f.s.mu.Lock()
	p := f.s.park
	f.s.mu.Unlock()
	const n = 30
	type release struct {
		number int
		free   uint64
	}
	released := make(chan release, 4)
	p.mu.Lock()
	p.rel.minParked = n
	p.rel.quiet = int64(time.Millisecond)
	p.rel.every = int64(time.Hour)
	p.rel.release = func() {
		debug.FreeOSMemory()
		m := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
		metrics.Read(m)
		p.mu.Lock()
		number := p.rel.count
		p.mu.Unlock()
		released <- release{number, m[0].Value.Uint64()}
	}
	p.mu.Unlock()
	wave := func(name string, parked int) {
		t.Helper()
		for i := range n {
			if _, err := dialPark(t, f.addr).get(fmt.Sprintf("/%s/%d", name, i)); err != nil {
				t.Fatal(err)
			}
		}
		testkit.WaitUntil(t, 5*time.Second, name+" wave parked", func() bool { return f.s.Parked() == parked })
	}
	wave("first", n+1)
	var r release
	select {
	case r = <-released:
	case <-time.After(10 * time.Second):
		t.Fatalf("no release after %d connections parked", n)
	}
	if r.number != 1 {
		t.Fatalf("release number %d, want 1", r.number)
	}
	if r.free > 1<<20 {
		t.Fatalf("%d bytes of the Go heap free and not returned right after the release", r.free)
	}
	wave("second", 2*n+1)
	p.mu.Lock()
	ok, at := p.rel.due(time.Now().UnixNano())
	parks, count, next := p.rel.parked, p.rel.count, p.rel.next
	p.mu.Unlock()
	// The release may have come before the first wave's last park: that
	// one counts in the second.
	if ok || count != 1 || parks < n || at != next {
		t.Fatalf("second wave: due %v at %d, %d parks counted, %d releases; want not due until an hour after the first began (%d), >= %d parks, 1 release",
			ok, at, parks, count, next, n)
	}
}

// TestParkedDetached: a parked TCP connection has left Go's poller: its
// net.Conn is closed (its poll descriptor free for the next connection)
// and the parker holds its socket's descriptor; a request resumes it on a
// new net.Conn, and parking and resuming leak no descriptor.
func TestParkedDetached(t *testing.T) {
	f := startParking(t, nil, nil)
	const n = 50
	cs := openParked(t, f, n)
	check := func(round string) {
		t.Helper()
		f.s.mu.Lock()
		p := f.s.park
		f.s.mu.Unlock()
		p.mu.Lock()
		defer p.mu.Unlock()
		parked := 0
		for _, sl := range p.slots {
			if sl.c == nil {
				continue
			}
			parked++
			if sl.fd < 0 {
				t.Fatalf("%s: a parked connection is not detached", round)
			}
			if err := sl.c.nc.SetReadDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s: the parked connection's net.Conn is open (%v)", round, err)
			}
		}
		if parked != n {
			t.Fatalf("%s: %d slots in use, want %d", round, parked, n)
		}
	}
	check("first")
	fds := openFDs(t)
	for round := range 2 {
		for i, c := range cs {
			if _, err := c.get(fmt.Sprintf("/again/%d/%d", round, i)); err != nil {
				t.Fatalf("connection %d resumed: %v", i, err)
			}
		}
		testkit.WaitUntil(t, 5*time.Second, "every connection parked again", func() bool { return f.s.Parked() == n })
		check(fmt.Sprintf("round %d", round))
		if got := openFDs(t); got != fds {
			t.Fatalf("round %d: %d descriptors open, %d before", round, got, fds)
		}
		if got := f.conns(); got != n {
			t.Fatalf("round %d: the server holds %d connections, want %d", round, got, n)
		}
	}
}

// TestParkedNoReleaseWhileBusy: a wave of parking brings no release while
// most of the server's connections are at work (here: in the middle of a
// request head); once they too are answered and parked, it does.
func TestParkedNoReleaseWhileBusy(t *testing.T) {
	f := startParking(t, nil, nil)
	if _, err := dialPark(t, f.addr).get("/first"); err != nil {
		t.Fatal(err)
	}
	f.s.mu.Lock()
	p := f.s.park
	f.s.mu.Unlock()
	const n = 30
	released := make(chan struct{}, 4)
	p.mu.Lock()
	p.rel.minParked = n
	p.rel.quiet = int64(time.Millisecond)
	p.rel.every = int64(time.Hour)
	p.rel.release = func() { released <- struct{}{} }
	p.mu.Unlock()
	busy := make([]*parkClient, 4*n)
	for i := range busy {
		busy[i] = dialPark(t, f.addr)
		if err := busy[i].send(fmt.Sprintf("GET /busy/%d HTTP/1.1\r\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitUntil(t, 5*time.Second, "the busy connections accepted", func() bool { return f.conns() == 1+4*n })
	for i := range n {
		if _, err := dialPark(t, f.addr).get(fmt.Sprintf("/wave/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitUntil(t, 5*time.Second, "the wave parked", func() bool { return f.s.Parked() == n+1 })
	waved := time.Now().UnixNano()
	// Nothing parks or resumes from now on: only the parker's look at the
	// busy connections (which declines and restarts the quiet time) moves
	// the time of the last activity.
	testkit.WaitUntil(t, 5*time.Second, "the parker looked", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.rel.last > waved
	})
	select {
	case <-released:
		t.Fatalf("a release with %d of %d connections parked", n+1, 1+5*n)
	default:
	}
	for i, c := range busy {
		if err := c.send("Host: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.read(fmt.Sprintf("/busy/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatalf("no release with every connection parked")
	}
}
