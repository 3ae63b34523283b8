package h1

import (
	"errors"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Exchange is the scratch space of one request, pooled: two heads of up to
// 100 fields are too large to keep per idle connection.
type Exchange struct {
	Req, Res Head
	// Start is when the request's first byte was seen.
	Start time.Time

	wbuf      []byte
	path      string
	consumed  bool // the request head was taken out of the read buffer
	early     bool // the instance answered before it had the whole body
	continued bool // the client was told 100 Continue
}

// Path is the request's path as the client sent it (without the query).
func (x *Exchange) Path() string {
	if x.path == "" {
		x.path = string(pathOf(x.Req.target))
	}
	return x.path
}

// Early reports whether the instance answered before it had the whole
// request body (RFC 9112 9.5); the client connection then closes after
// the answer.
func (x *Exchange) Early() bool { return x.early }

// ClientError is a failure on the client's side of an exchange: the
// client's body was malformed, the client stopped sending it, or the
// client went away. It is never the instance's fault.
type ClientError struct {
	Kind string // ClientMalformed, ClientTimeout or ClientGone
	Err  error
}

// Kinds of ClientError.
const (
	ClientMalformed = "malformed"
	ClientTimeout   = "timeout"
	ClientGone      = "gone"
)

func (e *ClientError) Error() string { return "client " + e.Kind + ": " + e.Err.Error() }
func (e *ClientError) Unwrap() error { return e.Err }

// clientReadError wraps an error reading the client's body.
func clientReadError(err error) error {
	if isTimeout(err) {
		return &ClientError{Kind: ClientTimeout, Err: err}
	}
	return &ClientError{Kind: ClientGone, Err: err}
}

var errClientLeft = errors.New("the client closed the connection while waiting for the answer")

// earlyWriteSlice bounds one write of a request body to the instance, so
// an instance that stopped reading because it answered early is noticed.
const earlyWriteSlice = 20 * time.Millisecond

// Send writes the request head, rebuilt with the forwarding headers and
// without hop-by-hop fields, and the body, to uc; prefix is the instance's
// base path. sent reports whether any byte of the request may have reached
// the instance. While a body is sent, an answer from the instance ends the
// sending (x.Early); a client that stops sending or leaves is a
// *ClientError. A client that waits for 100 Continue before its body (see
// awaitContinue) sends it only once the instance is heard from. On a
// connection from GetUnchecked a request without a body is written by
// ReadResponseHead, which must come next.
func (c *Conn) Send(x *Exchange, uc *UpConn, prefix string) (sent bool, err error) {
	s := c.s
	req := &x.Req
	w := x.wbuf[:0]
	w = append(w, req.method...)
	w = append(w, ' ')
	w = append(w, prefix...)
	w = append(w, req.target...)
	w = append(w, " HTTP/1.1\r\n"...)
	var host []byte
	hasXFH, hasXFP := false, false
	for i := range req.fields {
		f := &req.fields[i]
		switch f.id {
		case fHost:
			host = f.value
		case fConnection, fKeepAlive, fProxyConnection, fProxyAuthenticate, fProxyAuthorization, fTrailer, fXForwardedFor, fAlias:
			continue
		case fTE:
			if !equalFold(f.value, "trailers") {
				continue
			}
		case fXForwardedHost:
			if !c.trusted {
				continue
			}
			hasXFH = true
		case fXForwardedProto:
			if !c.trusted {
				continue
			}
			hasXFP = true
		case fXForwardedOther, fXRealIP, fForwarded:
			if !c.trusted {
				continue
			}
		case fOther:
			if s.StripField != "" && equalFold(f.name, s.StripField) {
				continue
			}
		}
		w = append(w, f.name...)
		w = append(w, ": "...)
		w = append(w, f.value...)
		w = append(w, "\r\n"...)
	}
	w = append(w, "X-Forwarded-For: "...)
	if c.trusted {
		for i := range req.fields {
			if f := &req.fields[i]; f.id == fXForwardedFor && len(f.value) > 0 {
				w = append(w, f.value...)
				w = append(w, ", "...)
			}
		}
	}
	w = append(w, c.clientIP...)
	if !hasXFH {
		w = append(w, "\r\nX-Forwarded-Host: "...)
		w = append(w, host...)
	}
	switch {
	case hasXFP:
	case c.opts.HTTPS:
		w = append(w, "\r\nX-Forwarded-Proto: https"...)
	default:
		w = append(w, "\r\nX-Forwarded-Proto: http"...)
	}
	w = append(w, "\r\n\r\n"...)
	if !x.consumed {
		c.cr.discard(req.end)
		x.consumed = true
	}
	c.upstream.Store(uc)
	if s.closed.Load() {
		uc.nc.Close() // Close ran between the pick and the store
	}

	rem := max(req.contentLength, 0)
	// Nothing of the body has come: the client waits for 100 Continue.
	awaitBody := rem > 0 && req.continue100 && c.cr.buffered() == 0
	if rem > 0 {
		take := min(rem, int64(c.cr.buffered()))
		if len(w)+int(take) <= cap(w) {
			w = append(w, c.cr.bytes()[:take]...)
			c.cr.discard(int(take))
			rem -= take
		}
	}
	x.wbuf = w[:0]
	if uc.lazy && rem == 0 && req.contentLength <= 0 && uc.cr.rc != nil {
		uc.pend = w // written by readResponseHead, inside the wait for the answer
		return false, nil
	}
	if uc.check {
		uc.check = false
		if !uc.open() {
			return false, ErrStaleConn
		}
	}
	if _, err := uc.cr.write(w); err != nil {
		return req.contentLength > 0, err
	}
	if awaitBody {
		// Until the instance is heard from, no byte of the body has left,
		// so a failure here may be retried like a failed write of the head.
		send, err := c.awaitContinue(x, uc)
		if !send {
			return false, err
		}
	}
	if rem > 0 {
		if x.path == "" { // the target is overwritten by the body
			x.path = string(pathOf(req.target))
		}
		return true, c.sendBody(x, uc, rem)
	}
	return false, nil
}

// sendBody relays the rest of a Content-Length body. The client has
// ClientBodyTimeout between two reads; the instance may answer at any
// point, which ends the sending.
func (c *Conn) sendBody(x *Exchange, uc *UpConn, rem int64) error {
	s := c.s
	c.deadlineSet = true
	defer uc.nc.SetWriteDeadline(time.Time{})
	stall := sendStall{limit: s.ResponseHeaderTimeout}
	for rem > 0 {
		if uc.cr.peekState() == peekData {
			x.early = true
			return nil
		}
		if c.cr.buffered() == 0 && rem >= spliceMin {
			if sp := newSplicer(c.nc, uc.nc); sp != nil {
				defer sp.close()
				return c.spliceIn(x, uc, sp, rem)
			}
		}
		if c.cr.buffered() == 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(s.ClientBodyTimeout))
			if err := c.cr.fill(); err != nil {
				return clientReadError(err)
			}
		}
		p := c.cr.bytes()
		if int64(len(p)) > rem {
			p = p[:rem]
		}
		for len(p) > 0 {
			_ = uc.nc.SetWriteDeadline(time.Now().Add(earlyWriteSlice))
			n, err := uc.nc.Write(p)
			c.cr.discard(n)
			rem -= int64(n)
			p = p[n:]
			if stop, early, err := stall.wrote(uc, n, err); stop {
				x.early = early
				return err
			}
		}
	}
	return nil
}

// sendStall bounds how long an instance may take no byte of a request
// body it is sent (the Server's ResponseHeaderTimeout): a write blocked
// for longer is the instance's timeout, as nginx's proxy_send_timeout,
// and not a slow reader's pace.
type sendStall struct {
	limit time.Duration // 0: none
	since time.Time     // when the writes began to block (zero: they do not)
}

// wrote judges a write to uc of n bytes of a request body that ended
// with err, for every way a body is sent (sendBody, spliceIn, WriteBody):
// stop reports whether the sending ends, early that it ends because the
// instance answered (RFC 9112 9.5: its answer is what the client gets, no
// error), err a failure or the instance's stall past limit. A write that
// only timed out is a slow reader's pace and goes on.
func (st *sendStall) wrote(uc *UpConn, n int, err error) (stop, early bool, _ error) {
	if err == nil {
		st.since = time.Time{}
		return false, false, nil
	}
	switch uc.cr.peekState() {
	case peekData:
		return true, true, nil
	case peekNothing, peekUnknown:
		if !isTimeout(err) {
			return true, false, err
		}
	default:
		return true, false, err
	}
	if st.limit <= 0 {
		return false, false, nil
	}
	now := time.Now()
	if n > 0 || st.since.IsZero() {
		st.since = now
		return false, false, nil
	}
	if now.Sub(st.since) >= st.limit {
		return true, false, connError("write", uc.nc, os.ErrDeadlineExceeded)
	}
	return false, false, nil
}

// spliceIn moves the last rem bytes of a request body from the client to
// the instance by splice, with sendBody's timeouts and early answers: the
// client has ClientBodyTimeout for each drain, and a pump blocked for
// earlyWriteSlice looks whether the instance answered.
func (c *Conn) spliceIn(x *Exchange, uc *UpConn, sp *splicer, rem int64) error {
	s := c.s
	stall := sendStall{limit: s.ResponseHeaderTimeout}
	for rem > 0 {
		if uc.cr.peekState() == peekData {
			x.early = true
			return nil
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(s.ClientBodyTimeout))
		got, err := sp.drain(int(min(rem, spliceMax)))
		if err == nil && got == 0 {
			err = io.EOF
		}
		if err != nil {
			return clientReadError(err)
		}
		rem -= int64(got)
		for sp.inPipe > 0 {
			_ = uc.nc.SetWriteDeadline(time.Now().Add(earlyWriteSlice))
			n, err := sp.pump()
			if stop, early, err := stall.wrote(uc, n, err); stop {
				x.early = early
				return err
			}
		}
	}
	return nil
}

// ExpectContinueTimeout is how long the codec waits for an instance's
// answer to the head of an Expect: 100-continue request before sending the
// body anyway, as http.Transport's ExpectContinueTimeout in transport.go.
const ExpectContinueTimeout = time.Second

// continueSlice is how often awaitContinue looks whether the client sent
// its body without waiting.
const continueSlice = 50 * time.Millisecond

// awaitContinue waits, once the head of an Expect: 100-continue request is
// sent, for the instance's first answer, at most ExpectContinueTimeout.
// A 100 Continue is relayed to the client, and the body follows (send).
// A final answer comes before the body, which is never read (x.early: the
// client connection closes after it, and so does the instance's). Silence
// is no refusal: the client is told 100 Continue, and the body follows.
// A client that sends its body (or leaves) without waiting ends the wait
// within continueSlice (bodyCame).
func (c *Conn) awaitContinue(x *Exchange, uc *UpConn) (send bool, err error) {
	defer uc.nc.SetReadDeadline(time.Time{})
	end := time.Now().Add(ExpectContinueTimeout)
	res := &x.Res
	for infos := 0; ; {
		d := end
		if t := time.Now().Add(continueSlice); t.Before(end) {
			d = t
		}
		_ = uc.nc.SetReadDeadline(d)
		n, err := nextHead(res, uc)
		switch {
		case isTimeout(err) && d.Before(end):
			if c.bodyCame() {
				return true, nil // the body (or the end) is on its way
			}
			continue
		case isTimeout(err):
			c.ensureOut()
			c.out.writeString("HTTP/1.1 100 Continue\r\n")
			c.out.writeString(c.opts.ResponseFields)
			c.out.writeString("\r\n")
			c.out.flush()
			x.continued = true
			return true, nil
		case err != nil:
			return false, err
		case res.code >= 200:
			x.early = true // ReadResponseHead takes this head
			return false, nil
		case res.code == http.StatusSwitchingProtocols:
			return false, errUpstream101
		case infos == MaxInformational:
			return false, ErrTooMany1xx
		}
		infos++
		c.relayInformational(x, res)
		uc.cr.discard(n)
		if res.code == http.StatusContinue {
			return true, nil
		}
	}
}

// bodyCame reports, without waiting, whether a client whose request waits
// for 100 Continue sent something since (its body, or the end): a peek at
// its socket; on a TLS connection also a read that cannot wait (expired
// deadline), which takes what the TLS connection already holds, since its
// records may have been read from the socket with the head's.
func (c *Conn) bodyCame() bool {
	if c.cr.rc != nil {
		return peekConn(c.cr.rc) != peekNothing
	}
	if c.opts.sock != nil && peekConn(c.opts.sock) != peekNothing {
		return true
	}
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	err := c.cr.fill()
	_ = c.nc.SetReadDeadline(time.Time{})
	c.deadlineSet = true // the idle wait's deadline is gone: re-arm it
	return c.cr.buffered() > 0 || err != nil && !isTimeout(err)
}

// relayInformational passes an instance's 1xx answer on to the client,
// but a second 100 Continue.
func (c *Conn) relayInformational(x *Exchange, res *Head) {
	if res.code == http.StatusContinue {
		if x.continued {
			return
		}
		x.continued = true
	}
	c.ensureOut()
	c.writeHead(res, false, false, false)
	c.out.flush()
}

var errUpstream101 = errors.New("instance switched protocols without being asked")

// MaxInformational is how many informational (1xx) answers one request
// may get before its final one, on every codec, as http.Transport allows;
// more are the instance's fault (ErrTooMany1xx).
const MaxInformational = 5

// ErrTooMany1xx is an instance's answer with more than MaxInformational
// informational answers before its final one.
var ErrTooMany1xx = errors.New("instance sent more than 5 informational answers")

// ReadResponseHead reads the instance's response head into x.Res, passing
// informational (1xx) responses on to the client. A client that closes its
// connection meanwhile cancels the wait: *ClientError of kind ClientGone.
// The Server's ResponseHeaderTimeout is enforced by watchWaits, not by a
// read deadline per request (two timer updates and three clock reads):
// the wait ends within watchEvery after it, as a read past its deadline
// (os.ErrDeadlineExceeded), even when the head came meanwhile. A client
// that leaves meanwhile ends it with a ClientError: the instance
// connection is then closed, or, for a request sent whole, given
// AbandonGrace to answer; a short answer is read and dropped, and Done
// pools the connection.
func (c *Conn) ReadResponseHead(x *Exchange, uc *UpConn) error {
	if c.s.ResponseHeaderTimeout > 0 {
		c.waitSince.Store(time.Now().UnixNano())
	}
	c.whole = !x.early
	c.waiting.Store(waitHead)
	err := c.readResponseHead(x, uc)
	if !c.waiting.CompareAndSwap(waitHead, waitNone) {
		st := c.endWait()
		if st == waitTimedOut {
			return connError("read", uc.nc, os.ErrDeadlineExceeded)
		}
		if err == nil && c.whole {
			// The client left but the answer came within the grace:
			// a short one is read and dropped, and the connection
			// kept for the next request (Upstream.Done).
			body := uc.StartBody(&x.Res, x.Req.method == http.MethodHead)
			uc.settled = body.Drain(AbandonDrain) && body.upKeep
		}
		return &ClientError{Kind: ClientGone, Err: errClientLeft}
	}
	return err
}

// endWait ends a wait that watchWaits ended first and returns how it
// ended (waitCancelled or waitTimedOut).
func (c *Conn) endWait() int32 {
	st := c.waiting.Load()
	for st == waitCancelling { // watchWaits is between its two steps
		runtime.Gosched()
		st = c.waiting.Load()
	}
	c.waiting.Store(waitNone)
	return st
}

func (c *Conn) readResponseHead(x *Exchange, uc *UpConn) error {
	if p := uc.pend; p != nil {
		check := uc.check
		uc.pend, uc.check = nil, false
		if err := uc.cr.sendFill(p, check); err != nil {
			if err == ErrStaleConn && uc.cr.staleClosed {
				uc.limit.ClosedAfter(uc.idleFor)
			} else if err == ErrStaleConn {
				uc.stray()
			}
			return err
		}
	}
	return uc.readHead(&x.Res, func(res *Head) { c.relayInformational(x, res) })
}

// readHead reads the instance's final response head into res, for both
// the codec's own exchanges (Conn.ReadResponseHead) and the legs of other
// codecs (ReadHead). Informational heads (1xx but 101) go to info, when
// set, with res holding them, and are skipped. The final head stays in
// the read buffer until the body is started.
func (uc *UpConn) readHead(res *Head, info func(res *Head)) error {
	for i := 0; ; i++ {
		n, err := nextHead(res, uc)
		if err != nil {
			return err
		}
		if res.code >= 200 {
			if res.keepAlive != nil {
				uc.limit.KeepAlive(res.keepAlive)
			}
			return nil
		}
		if res.code == http.StatusSwitchingProtocols {
			return errUpstream101
		}
		if i == MaxInformational {
			return ErrTooMany1xx
		}
		if info != nil {
			info(res)
		}
		uc.cr.discard(n)
	}
}

// nextHead reads the instance's next response head into res and returns
// its length; the head stays in uc's read buffer.
func nextHead(res *Head, uc *UpConn) (int, error) {
	for {
		n := FindHeadEnd(uc.cr.bytes())
		if n > 0 {
			return n, res.ParseResponse(uc.cr.bytes()[:n])
		}
		if n < 0 {
			return 0, errors.New("malformed response head: bare LF")
		}
		if err := uc.cr.fill(); err != nil {
			if err == errBufferFull {
				return 0, ErrResponseHeadTooLarge
			}
			return 0, err
		}
	}
}

// Body framings of a response.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// bodyFraming is how the body of the response head h is framed, its
// length when it has a Content-Length, and whether the instance
// connection may be reused after it; head: the request was HEAD. A head
// with both Transfer-Encoding and Content-Length is framed by the first
// (RFC 9112 6.3) and its connection not reused: the instance may have
// meant the other, and what it sent past the chunked end would be read as
// the next client's answer.
func (h *Head) bodyFraming(head bool) (framing int, length int64, upKeep bool) {
	framing = bodyUntilClose
	switch {
	case head || h.code == http.StatusNoContent || h.code == http.StatusNotModified:
		framing = bodyNone
	case h.te > 0:
		framing = bodyChunked
	case h.nCL > 0:
		framing, length = bodyLength, h.contentLength
		if length == 0 {
			framing = bodyNone
		}
	}
	return framing, length, !h.closeConn && !h.http10 && framing != bodyUntilClose && !(h.te > 0 && h.nCL > 0)
}

// lengthAllowed reports whether a response of h's status may carry
// Content-Length: not a 1xx or a 204 (RFC 9110 8.6), which an instance
// may still send; nghttp2 (curl, h2load) refuses such an HTTP/2 answer,
// a 204 with a length but "0" and a 1xx with any.
func (h *Head) lengthAllowed() bool {
	return h.code >= 200 && h.code != http.StatusNoContent
}

// Response is how a response head was relayed.
type Response struct {
	Code    int
	Stream  bool // an event stream: its duration is a connection's lifetime
	framing int
	length  int64
	upKeep  bool // the instance connection may be reused
	keep    bool // the client connection may carry another request
}

// WriteResponseHead writes the head read into x.Res to the client.
func (c *Conn) WriteResponseHead(x *Exchange, uc *UpConn) Response {
	req, res := &x.Req, &x.Res
	r := Response{Code: res.code}
	r.framing, r.length, r.upKeep = res.bodyFraming(req.method == http.MethodHead)
	// After an early answer the instance may still wait for the rest of
	// the body: its connection is not reused.
	r.upKeep = r.upKeep && !x.early
	r.keep = !req.closeConn && r.framing != bodyUntilClose && c.s.keepAlive() && !x.early
	c.ensureOut()
	c.writeHead(res, r.framing == bodyChunked, !res.hasDate, !r.keep)
	uc.cr.discard(res.end)
	r.Stream = res.sse && r.framing != bodyLength
	return r
}

// RelayBody relays the response body and returns the instance connection
// to its pool when the exchange ended cleanly. It reports whether the
// client connection may carry another request, and an error of the
// instance's side (nil when only the client failed).
func (c *Conn) RelayBody(r *Response, uc *UpConn, u *Upstream) (keep bool, err error) {
	if r.framing != bodyNone {
		c.waiting.Store(waitBody)
	}
	uc.stall = 0
	if !r.Stream {
		uc.stall = c.s.ResponseHeaderTimeout
	}
	switch r.framing {
	case bodyLength:
		err = c.copyLength(uc, r.length)
	case bodyChunked:
		err = c.copyChunked(uc)
	case bodyUntilClose:
		err = c.copyUntilClose(uc)
	}
	if r.framing != bodyNone && !c.waiting.CompareAndSwap(waitBody, waitNone) {
		// The client left (watchWaits closed the instance connection):
		// its doing, as a failed write to it is.
		c.endWait()
		uc.Close()
		if c.out.err == nil {
			c.out.err = errClientLeft
		}
		return false, nil
	}
	if c.endedAtBoundary(err) {
		c.writeLastChunk() // drainend.go: a clean end, the client reconnects
		uc.Close()
		return false, nil
	}
	c.out.flush()
	if err != nil || c.out.err != nil {
		uc.Close()
		if c.out.err != nil {
			err = nil
		}
		return false, err
	}
	if r.upKeep {
		u.Put(uc)
	} else {
		uc.Close()
	}
	return r.keep, nil
}

// StreamCloser ends or closes both sides of an exchange: for draining an
// event stream (see drainend.go).
func (c *Conn) StreamCloser(uc *UpConn) interface {
	Close() error
	End()
} {
	c.ending.Store(false)
	c.endWaited = false
	return &streamCloser{c: c, uc: uc}
}

// writeHead writes a response head: the status line and the instance's
// fields without the hop-by-hop ones (Transfer-Encoding stays when the
// chunked body is relayed as it is).
func (c *Conn) writeHead(res *Head, chunked, addDate, closeConn bool) {
	o := &c.out
	o.writeString("HTTP/1.1 ")
	o.writeCode(res.code)
	if len(res.reason) > 0 {
		o.write(res.reason)
	} else {
		o.writeString(http.StatusText(res.code))
	}
	o.writeString("\r\n")
	lengthWritten := false
	for i := range res.fields {
		f := &res.fields[i]
		switch f.id {
		case fConnection, fKeepAlive, fProxyConnection, fTE, fUpgrade, fProxyAuthenticate, fProxyAuthorization:
			continue
		case fTransferEncoding, fTrailer:
			if !chunked {
				continue
			}
		case fContentLength:
			// Repeats carry the same value (ParseResponse refuses others):
			// one is written, as net/http's path does (RFC 9110 8.6).
			if chunked || lengthWritten || !res.lengthAllowed() {
				continue
			}
			lengthWritten = true
		}
		if res.nConnTokens > 0 && f.id != fContentLength && f.id != fTransferEncoding && res.connectionNamed(f.name) {
			continue // hop-by-hop by the instance's word; the framing stays, it is relayed as is
		}
		o.write(f.name)
		o.writeString(": ")
		o.write(f.value)
		o.writeString("\r\n")
	}
	if addDate {
		o.writeString("Date: ")
		o.write(c.s.date.get(time.Now()))
		o.writeString("\r\n")
	}
	if closeConn {
		o.writeString("Connection: close\r\n")
	}
	o.writeString(c.opts.ResponseFields)
	o.writeString("\r\n")
}

// dateCache formats the Date field once a second.
type dateCache struct{ p atomic.Pointer[dateValue] }

type dateValue struct {
	sec int64
	b   []byte
}

func (d *dateCache) get(now time.Time) []byte {
	sec := now.Unix()
	if v := d.p.Load(); v != nil && v.sec == sec {
		return v.b
	}
	v := &dateValue{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	d.p.Store(v)
	return v.b
}

// exchangePool lends the per-request scratch space.
type exchangePool struct{ p sync.Pool }

func (ep *exchangePool) get() *Exchange {
	if x, _ := ep.p.Get().(*Exchange); x != nil {
		return x
	}
	return &Exchange{wbuf: make([]byte, 0, clientBufSize+1024)}
}

func (ep *exchangePool) put(x *Exchange) {
	x.path, x.consumed, x.early, x.continued = "", false, false, false
	ep.p.Put(x)
}
