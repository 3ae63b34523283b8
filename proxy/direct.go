package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/h1"
	"golang.org/x/net/http/httpguts"
)

// directConns is the net/http codec's upstream leg to one plain-http
// instance for requests without a body: the request is written and its
// answer read on the handler's own goroutine, over a LIFO pool of
// keep-alive connections. http.Transport does the same exchange with a
// reader and a writer goroutine per connection and two hand-offs per
// request, which cost about as much CPU as the proxying itself. Requests
// with a body, upgrades and Expect go through http.Transport (see
// directable), which keeps 100-continue, the early 413 and the body's
// fault rules in one place.
type directConns struct {
	addr          string
	dialer        net.Dialer
	idleTimeout   time.Duration
	headerTimeout time.Duration
	maxIdle       int
	now           func() time.Time
	limit         *h1.IdleLimit // the instance's, shared with the fast codec's pool

	idle    h1.IdleStack[*directConn]
	mu      sync.Mutex  // guards sweeper and armed
	sweeper *time.Timer // closes expired idle connections; armed while any is idle
	armed   bool
}

type directConn struct {
	nc     net.Conn
	rc     syscall.RawConn // for the look before reuse; nil without raw access
	lim    headLimit       // between nc and br
	br     *bufio.Reader
	bw     *bufio.Writer
	reused bool
}

// headLimit is a Reader that reads at most n more bytes from r, then fails
// with h1.ErrResponseHeadTooLarge; n < 0: no limit.
type headLimit struct {
	r io.Reader
	n int64
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, h1.ErrResponseHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// aLongTimeAgo is a deadline that has passed: it wakes a blocked read or
// write at once.
var aLongTimeAgo = time.Unix(1, 0)

func newDirectConns(hostport string, cfg TransportConfig, now func() time.Time, limit *h1.IdleLimit) *directConns {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "80")
	}
	return &directConns{
		addr:          hostport,
		dialer:        net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		idleTimeout:   cfg.IdleConnTimeout,
		headerTimeout: cfg.ResponseHeaderTimeout,
		maxIdle:       cfg.MaxIdleConnsPerHost,
		now:           now,
		limit:         limit,
	}
}

// directable reports whether req can take the direct leg: no body, no
// upgrade, no Expect.
func directable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	h := req.Header
	if _, ok := h["Upgrade"]; ok {
		return false
	}
	_, expect := h["Expect"]
	return !expect
}

// get pops the most recently used idle connection that is still usable,
// closing the others on the way, or dials.
func (d *directConns) get(fresh bool) (*directConn, error) {
	if !fresh {
		now := d.now()
		limit := d.limit.Limit(d.idleTimeout)
		for {
			c, since, ok := d.idle.Pop()
			if !ok {
				break
			}
			if age := now.Sub(since); age >= limit || !h1.IdleOpen(c.rc, age, d.limit) {
				// Expired, closed by the instance, or holding bytes nobody
				// asked for (they would be read as the next answer).
				c.nc.Close()
				continue
			}
			c.reused = true
			return c, nil
		}
	}
	nc, err := d.dialer.Dial("tcp", d.addr)
	if err != nil {
		return nil, err
	}
	c := &directConn{nc: nc, bw: bufio.NewWriter(nc)}
	c.lim.r = nc
	c.br = bufio.NewReader(&c.lim)
	if sc, ok := nc.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	return c, nil
}

// put pools a connection whose exchange ended cleanly.
func (d *directConns) put(c *directConn) {
	if c.br.Buffered() != 0 { // the instance sent more than it announced
		c.nc.Close()
		return
	}
	if !d.idle.Push(c, d.now(), d.maxIdle) {
		c.nc.Close()
		return
	}
	d.mu.Lock()
	if !d.armed {
		d.armed = true
		if d.sweeper == nil {
			d.sweeper = time.AfterFunc(d.idleTimeout, d.sweep)
		} else {
			d.sweeper.Reset(d.idleTimeout)
		}
	}
	d.mu.Unlock()
}

// sweep closes the expired idle connections, as http.Transport's idle
// timers do, and checks again later while some stay idle.
func (d *directConns) sweep() {
	d.closeIdle(true)
	d.mu.Lock()
	if d.idle.Len() > 0 {
		d.sweeper.Reset(max(d.idleTimeout/2, 10*time.Millisecond))
	} else {
		d.armed = false
	}
	d.mu.Unlock()
}

// closeIdle closes the idle connections, or only the expired ones.
func (d *directConns) closeIdle(expiredOnly bool) {
	for _, c := range d.idle.Remove(!expiredOnly, d.now().Add(-d.limit.Limit(d.idleTimeout))) {
		c.nc.Close()
	}
}

// roundTrip sends req and reads its answer's head. A pooled connection
// that turns out closed before any answer (the instance's keep-alive
// timeout won the race) is replaced by a fresh one once when http.Transport
// would do so: the request could not be written, or it is replayable
// (GET, HEAD, OPTIONS, TRACE or an idempotency key). Other methods go back
// to the pipeline's retry policy with the error.
func (d *directConns) roundTrip(req *http.Request) (*http.Response, error) {
	if err := checkFields(req); err != nil {
		return nil, err
	}
	for fresh := false; ; fresh = true {
		c, err := d.get(fresh)
		if err != nil {
			return nil, err
		}
		res, stale, err := d.exchange(c, req)
		if err == nil {
			return res, nil
		}
		c.nc.Close()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if stale == notStale || !c.reused || fresh || stale == staleRead && !replayable(req) {
			return nil, err
		}
	}
}

// checkFields refuses, as the client's fault, a Host or a field that
// http.Transport would refuse to send: req.Write writes them as they are
// (only CR and LF become spaces), so a name with a colon or a space, or a
// value with a control byte, would reach the instance. The codecs in front
// (net/http's servers) refuse them already; this keeps the leg safe on its
// own.
func checkFields(req *http.Request) error {
	if !httpguts.ValidHostHeader(req.Host) {
		return &h1.ClientError{Kind: ClientMalformed, Err: errors.New("proxy: invalid Host " + strconv.Quote(req.Host))}
	}
	for name, values := range req.Header {
		if !httpguts.ValidHeaderFieldName(name) {
			return &h1.ClientError{Kind: ClientMalformed, Err: errors.New("proxy: invalid header field name " + strconv.Quote(name))}
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return &h1.ClientError{Kind: ClientMalformed, Err: errors.New("proxy: invalid value of header field " + strconv.Quote(name))}
			}
		}
	}
	return nil
}

// staleness tells how a failed exchange on a reused connection may be
// retried.
type staleness uint8

const (
	notStale   staleness = iota
	staleWrite           // the request could not be written
	staleRead            // written, and the connection ended before any answer byte
)

// replayable is http.Request's isReplayable for a request without a body.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// exchange writes req on c and reads the answer's head; stale reports a
// failure before the instance sent anything.
func (d *directConns) exchange(c *directConn, req *http.Request) (res *http.Response, stale staleness, err error) {
	ctx := req.Context()
	if d.headerTimeout > 0 {
		_ = c.nc.SetDeadline(time.Now().Add(d.headerTimeout))
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err = req.Write(c.bw); err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return nil, staleWrite, err
	}
	// The answer's heads, informational ones included, may together take
	// h1.MaxResponseHead bytes, as on the fast path: http.ReadResponse
	// has no limit of its own, and an endless head would grow the
	// proxy's memory for as long as the instance sends it.
	c.lim.n = h1.MaxResponseHead - int64(c.br.Buffered())
	if _, err = c.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil, staleRead, err
		}
		return nil, notStale, err
	}
	for n := 0; ; n++ {
		res, err = http.ReadResponse(c.br, req)
		if err != nil {
			return nil, notStale, err
		}
		code := res.StatusCode
		if code < 100 {
			return nil, notStale, errStatus(code)
		}
		if err = badFieldName(res.Header); err != nil {
			return nil, notStale, err
		}
		if code >= 200 {
			if v := res.Header["Keep-Alive"]; len(v) > 0 {
				d.limit.KeepAlive([]byte(v[0]))
			}
			c.lim.n = -1 // the body has no limit; after an error c is closed
			break
		}
		if code == http.StatusSwitchingProtocols {
			return nil, notStale, errors.New("proxy: unexpected informational answer " + res.Status)
		}
		if n == h1.MaxInformational {
			return nil, notStale, h1.ErrTooMany1xx
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err = trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, notStale, err
			}
		}
	}
	if d.headerTimeout > 0 {
		_ = c.nc.SetDeadline(time.Time{})
		if ctx.Err() != nil { // cancelled while the deadline was being lifted
			_ = c.nc.SetDeadline(aLongTimeAgo)
		}
	}
	if res.Body == http.NoBody {
		if stop() && !res.Close {
			d.put(c)
		} else {
			c.nc.Close()
		}
		return res, notStale, nil
	}
	res.Body = &directBody{rc: res.Body, c: c, d: d, ctx: ctx, stop: stop, keep: !res.Close}
	return res, notStale, nil
}

// directBody is an answer's body on the direct leg: read to its end, it
// returns the connection to the pool; closed before, it closes it. Close
// may come from another goroutine while a Read waits (a drain ends an
// event stream so): it wakes the Read, as http.Transport's bodies do.
type directBody struct {
	rc    io.ReadCloser
	c     *directConn
	d     *directConns
	ctx   context.Context
	stop  func() bool
	keep  bool
	state atomic.Uint32 // bodyOpen, then bodyDone or bodyClosed
}

const (
	bodyOpen uint32 = iota
	bodyDone
	bodyClosed
)

var errReadOnClosedBody = errors.New("http: read on closed response body")

func (b *directBody) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyDone:
		return 0, io.EOF
	case bodyClosed:
		return 0, errReadOnClosedBody
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		if b.state.CompareAndSwap(bodyOpen, bodyDone) {
			if b.stop() && b.keep {
				b.d.put(b.c)
			} else {
				b.c.nc.Close()
			}
		}
	case err != nil:
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else if b.state.Load() == bodyClosed {
			err = errReadOnClosedBody
		}
		if b.state.CompareAndSwap(bodyOpen, bodyDone) {
			b.stop()
			b.c.nc.Close()
		}
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.stop()
		b.c.nc.Close()
	}
	return nil
}
