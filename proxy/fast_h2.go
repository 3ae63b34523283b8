package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/cryoprotect/bluegreen/proxy/h1"
	"github.com/cryoprotect/bluegreen/proxy/h2"
)

// HTTP/2 on the fast pipeline: the streams of a connection that
// negotiated h2 run the same pipeline as the fast codec's requests (route,
// pick, attempt over the instance's keep-alive pool h1.Upstream as
// HTTP/1.1, retry, finish), framed by the proxy's own HTTP/2 codec
// (package h2). Requests are forwarded exactly as the fast codec forwards
// those of HTTPS/1.1 (X-Forwarded-For/Host/Proto, hop-by-hop and preview
// fields stripped), answers carry HSTS when set, and a client that resets
// its stream or drops its connection is the client's doing (499), never
// an instance's.

// ServeH2 serves one HTTP/2 connection, whose TLS handshake is done (ALPN
// h2), in the calling goroutine until it closes; with Serve's and
// ServeTLS's connections for Shutdown, Close and EndKeepAlives. It needs
// the fast path (Router.FastPath).
func (s *Server) ServeH2(tc *tls.Conn) error {
	if s.Fallback == nil || s.Router == nil || !s.Router.fast {
		tc.Close()
		return errors.New("proxy: ServeH2 needs Router, Fallback and the fast path")
	}
	s.configure()
	return s.h2.ServeConn(tc)
}

// configureH2 sets up the HTTP/2 codec; part of configure.
func (s *Server) configureH2() {
	rt := s.Router
	h := &s.h2
	h.Handler = &h2Handler{rt: rt, hsts: s.HSTS}
	h.Log = rt.log
	h.IdleTimeout = s.IdleTimeout
	h.ReadHeaderTimeout = s.ReadHeaderTimeout
	h.StallTimeout = rt.clientSendTimeout
	h.ProtocolError = rt.refused
	h.KeepAlivesEnded = s.h1.KeepAlivesEnded
}

// h2Handler runs the pipeline for the streams of the HTTP/2 codec.
type h2Handler struct {
	rt      *Router
	hsts    string
	scratch sync.Pool // *h2Scratch
	date    atomic.Pointer[h2DateValue]
}

// h2Scratch is one stream's working space, pooled.
type h2Scratch struct {
	early  bool // the instance answered before it had the whole request body
	res    h1.Head
	head   []byte
	buf    []byte
	fields []hpack.HeaderField
	lower  []byte
}

func (h *h2Handler) getScratch() *h2Scratch {
	if x, _ := h.scratch.Get().(*h2Scratch); x != nil {
		return x
	}
	return &h2Scratch{head: make([]byte, 0, 4096), buf: make([]byte, 16<<10)}
}

func (h *h2Handler) putScratch(x *h2Scratch) {
	x.early = false
	clear(x.fields)
	x.fields = x.fields[:0]
	h.scratch.Put(x)
}

var errH2Malformed = errors.New("malformed HTTP/2 request")

// ServeH2 routes, picks, attempts (retrying where the policy allows) and
// finishes one stream.
func (h *h2Handler) ServeH2(st *h2.Stream) {
	rt := h.rt
	if st.Method == http.MethodConnect {
		_ = st.WriteHeaders(http.StatusMethodNotAllowed, []hpack.HeaderField{
			{Name: "allow", Value: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
			{Name: "content-type", Value: "text/plain; charset=utf-8"},
		}, []byte("405 method not allowed\n"), true)
		return
	}
	x := h.getScratch()
	defer h.putScratch(x)
	preview := rt.previewable() && h2WantsPreview(st.Fields, rt.previewLower, rt.previewCookie) && rt.previewAllowed(st.Remote())
	var key []byte
	var setCookie string
	if !preview && rt.rolloutRunning() {
		key, setCookie = rt.rolloutKeyH2(st)
	}
	pool := rt.route(preview, key)
	o := outcome{pool: pool, method: st.Method, start: st.Start, remote: st.Remote(), proto: "HTTP/2.0"}
	if rt.access != nil {
		o.path = h2PathOnly(st.Path)
	}
	if !validH2Request(st) {
		h.refuse(st, &o, x, http.StatusBadRequest, errH2Malformed)
		return
	}
	b := pool.Pick()
	if b == nil {
		o.status = http.StatusServiceUnavailable
		rt.finish(&o)
		x.fields = append(x.fields[:0],
			hpack.HeaderField{Name: "retry-after", Value: rt.retryAfter},
			hpack.HeaderField{Name: "cache-control", Value: "no-store"},
			hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"})
		x.fields = h.appendCommon(x.fields, setCookie)
		_ = st.WriteHeaders(o.status, x.fields, []byte(unavailableBody(pool)), true)
		return
	}
	pool.begin(b)
	o.b, o.inst = b, b
	hasBody := st.HasBody
	fresh := false
	for try := 0; ; try++ {
		var uc *h1.UpConn
		var err error
		if st.IsReset() {
			// Reset before it reached an instance (a rapid reset): no
			// instance connection is taken, and so none is lost.
			err = h2.ErrReset
		} else {
			uc, err = b.conns.Get(fresh)
		}
		sent := false
		if uc != nil {
			if hasBody {
				st.OnReset(uc.Interrupt) // a request cut mid-body cannot end cleanly
			} else {
				st.OnReset(uc.Abandon)
			}
			sent, err = h.send(st, x, uc, b.conns.Prefix())
			if err == nil {
				err = uc.ReadHead(&x.res, rt.respHeaderTimeout, func(res *h1.Head) { h.informational(st, x, res) })
			}
			if err == nil {
				o.inst = b
				h.relay(st, x, uc, b, &o, setCookie)
				return
			}
			st.OnReset(nil)
			uc.Close()
		}
		if st.IsReset() {
			err = resetFault(st, &o, err)
		}
		next, fr := rt.attemptOver(&o, b, err, attempt{
			method: o.method, hasBody: hasBody, bodySent: sent, firstTry: try == 0, try: try, start: o.start,
		}, func() string { return h2PathOnly(st.Path) })
		if next != nil {
			b, fresh = next, fr
			continue
		}
		if o.status != 499 {
			x.fields = append(x.fields[:0], hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"})
			x.fields = h.appendCommon(x.fields, setCookie)
			_ = st.WriteHeaders(o.status, x.fields, []byte(http.StatusText(o.status)+"\n"), true)
		}
		return
	}
}

// resetFault is the client's error for a request whose stream was found
// reset: its leaving (499), or a protocol violation on the stream (400),
// which the codec answered with the reset and counted as it found it.
func resetFault(st *h2.Stream, o *outcome, err error) error {
	if st.Violated() {
		o.clientCounted = true
		return &h1.ClientError{Kind: ClientMalformed, Err: err}
	}
	return &h1.ClientError{Kind: ClientGone, Err: err}
}

// refuse answers a request the pipeline does not forward.
func (h *h2Handler) refuse(st *h2.Stream, o *outcome, x *h2Scratch, code int, err error) {
	o.status, o.fault, o.kind, o.err = code, clientFault, ClientMalformed, err
	h.rt.finish(o)
	x.fields = append(x.fields[:0], hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"})
	x.fields = h.appendCommon(x.fields, "")
	_ = st.WriteHeaders(code, x.fields, []byte(http.StatusText(code)+"\n"), true)
}

// appendCommon adds the fields every answer carries: HSTS, and a new
// rollout cookie.
func (h *h2Handler) appendCommon(fields []hpack.HeaderField, setCookie string) []hpack.HeaderField {
	if h.hsts != "" {
		fields = append(fields, hpack.HeaderField{Name: "strict-transport-security", Value: h.hsts})
	}
	if setCookie != "" {
		fields = append(fields, hpack.HeaderField{Name: "set-cookie", Value: setCookie})
	}
	return fields
}

// validH2Request checks what goes into the HTTP/1.1 request line and Host
// field: a token method, an origin-form path (or * for OPTIONS) and an
// authority without spaces, controls or userinfo.
func validH2Request(st *h2.Stream) bool {
	if st.Method == "" || st.Path == "" || st.Authority == "" {
		return false
	}
	for i := 0; i < len(st.Method); i++ {
		if c := st.Method[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	if st.Path[0] != '/' && !(st.Path == "*" && st.Method == http.MethodOptions) {
		return false
	}
	for i := 0; i < len(st.Path); i++ {
		if c := st.Path[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	for i := 0; i < len(st.Authority); i++ {
		if c := st.Authority[i]; c <= ' ' || c >= 0x7f || c == '@' || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}

func h2PathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// send writes the request as HTTP/1.1, rebuilt as the fast codec rebuilds
// those of HTTPS/1.1, and its body. sent reports whether any byte of a body
// may have reached the instance.
func (h *h2Handler) send(st *h2.Stream, x *h2Scratch, uc *h1.UpConn, prefix string) (sent bool, err error) {
	rt := h.rt
	x.early = false
	trusted := len(rt.trusted) > 0 && rt.trustedPeer(st.Remote())
	w := x.head[:0]
	w = append(w, st.Method...)
	w = append(w, ' ')
	w = append(w, prefix...)
	w = append(w, st.Path...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, st.Authority...)
	w = append(w, "\r\n"...)
	hasXFH, hasXFP, cookies := false, false, 0
	for _, f := range st.Fields {
		switch f.Name {
		case "host", "proxy-authenticate", "proxy-authorization", "trailer", "x-forwarded-for", "expect":
			continue
		case "cookie":
			cookies++
			continue
		case "x-forwarded-host":
			if !trusted {
				continue
			}
			hasXFH = true
		case "x-forwarded-proto":
			if !trusted {
				continue
			}
			hasXFP = true
		case "x-real-ip", "forwarded":
			if !trusted {
				continue
			}
		default:
			if strings.HasPrefix(f.Name, "x-forwarded-") && !trusted || h1.ForwardingAlias(f.Name) {
				continue
			}
			if rt.stripPreview && f.Name == rt.previewLower {
				continue
			}
		}
		w = append(w, f.Name...)
		w = append(w, ": "...)
		w = append(w, f.Value...)
		w = append(w, "\r\n"...)
	}
	if cookies > 0 { // RFC 9113 8.2.3: one field again for HTTP/1.1
		w = append(w, "Cookie: "...)
		n := 0
		for _, f := range st.Fields {
			if f.Name == "cookie" {
				if n > 0 {
					w = append(w, "; "...)
				}
				w = append(w, f.Value...)
				n++
			}
		}
		w = append(w, "\r\n"...)
	}
	w = append(w, "X-Forwarded-For: "...)
	if trusted {
		for _, f := range st.Fields {
			if f.Name == "x-forwarded-for" && f.Value != "" {
				w = append(w, f.Value...)
				w = append(w, ", "...)
			}
		}
	}
	w = append(w, peerHost(st.Remote())...)
	if !hasXFH {
		w = append(w, "\r\nX-Forwarded-Host: "...)
		w = append(w, st.Authority...)
	}
	if !hasXFP {
		w = append(w, "\r\nX-Forwarded-Proto: https"...)
	}
	chunked := st.HasBody && st.ContentLength < 0
	if chunked {
		w = append(w, "\r\nTransfer-Encoding: chunked"...)
	}
	w = append(w, "\r\n\r\n"...)
	x.head = w
	if !st.HasBody {
		_, err = uc.Write(w)
		return false, err
	}
	if _, err = uc.Write(w); err != nil {
		return true, err
	}
	if h2ExpectsContinue(st.Fields) {
		// Expect is not forwarded (the body is relayed as it comes): the
		// client is told to send it at once.
		if err := st.WriteHeaders(http.StatusContinue, nil, nil, false); err != nil {
			return true, &h1.ClientError{Kind: h1.ClientGone, Err: err}
		}
	}
	st.ReadTimeout = rt.clientBodyTimeout
	buf := x.buf
	for {
		off := 0
		if chunked {
			off = 10 // room for the chunk-size line
		}
		n, rerr := st.Read(buf[off : len(buf)-2])
		if n > 0 {
			p := buf[off : off+n]
			if chunked {
				line := strconv.AppendInt(buf[:0:off], int64(n), 16)
				line = append(line, "\r\n"...)
				start := off - len(line)
				copy(buf[start:], line)
				p = buf[start : off+n+2]
				buf[off+n], buf[off+n+1] = '\r', '\n'
			}
			early, err := uc.WriteBody(p, rt.respHeaderTimeout)
			if err != nil {
				return true, err
			}
			if early {
				x.early = true // the instance answered: its answer is relayed, the connection not reused
				return true, nil
			}
		}
		switch {
		case rerr == io.EOF:
			if chunked { // the last chunk, with the request's trailers
				w := append(x.head[:0], "0\r\n"...)
				for _, f := range st.Trailers() {
					if h.validTrailer(f.Name) {
						w = append(append(append(append(w, f.Name...), ": "...), f.Value...), "\r\n"...)
					}
				}
				x.head = append(w, "\r\n"...)
				_, err = uc.Write(x.head)
			}
			return true, err
		case errors.Is(rerr, h2.ErrBodyTimeout):
			return true, &h1.ClientError{Kind: h1.ClientTimeout, Err: rerr}
		case rerr != nil:
			return true, &h1.ClientError{Kind: h1.ClientGone, Err: rerr}
		}
	}
}

// informational relays an instance's 1xx answer (103 Early Hints and the
// like; not 100, which the proxy gave itself when it was asked for).
func (h *h2Handler) informational(st *h2.Stream, x *h2Scratch, res *h1.Head) {
	if res.Code() == http.StatusContinue {
		return
	}
	_ = st.WriteHeaders(res.Code(), h.responseFields(x, res), nil, false)
}

// responseFields converts a response head's end-to-end fields to HTTP/2's
// (names in lower case), in x.fields.
func (h *h2Handler) responseFields(x *h2Scratch, res *h1.Head) []hpack.HeaderField {
	fields := x.fields[:0]
	lower := x.lower[:0]
	res.EachEndToEndField(func(name, value []byte) {
		start := len(lower)
		for _, c := range name {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower = append(lower, c)
		}
		fields = append(fields, hpack.HeaderField{Name: string(lower[start:]), Value: string(value)})
	})
	x.lower = lower
	x.fields = fields
	return fields
}

// relay writes the instance's answer, whose head is in x.res, to the
// stream and finishes the request.
func (h *h2Handler) relay(st *h2.Stream, x *h2Scratch, uc *h1.UpConn, b *Backend, o *outcome, setCookie string) {
	rt := h.rt
	res := &x.res
	code := res.Code()
	b.observe(code)
	o.status = code
	fields := h.responseFields(x, res)
	if !res.HasDate() {
		fields = append(fields, hpack.HeaderField{Name: "date", Value: h.dateNow()})
	}
	fields = h.appendCommon(fields, setCookie)
	x.fields = fields
	body := uc.StartBody(res, st.Method == http.MethodHead)
	if !body.Stream {
		uc.BodyStall(rt.respHeaderTimeout) // an event stream may be quiet
	}
	var ending *h2StreamEnd
	graced := false // an ending waits for the rest of a chunk
	if body.Stream {
		o.longLived = true
		ending = &h2StreamEnd{st: st, uc: uc}
		tracked := o.pool.streams.add(ending)
		defer o.pool.streams.remove(tracked)
	}
	ended := false // a drain ended the event stream
	var err error
	var werr error
	if body.Empty() {
		werr = st.WriteHeaders(code, fields, nil, true)
	} else {
		headSent := false
		if !body.Buffered() {
			werr = st.WriteHeaders(code, fields, nil, false)
			headSent = true
		}
		for werr == nil {
			var p []byte
			p, err = body.Next()
			if err == io.EOF {
				err = nil
				switch {
				case !headSent:
					werr = st.WriteHeaders(code, fields, nil, true)
				case len(body.Trailers) > 0:
					werr = st.WriteTrailers(trailerFields(body.Trailers))
				default:
					werr = st.WriteData(nil, true)
				}
				break
			}
			if err != nil {
				if ending != nil && ending.wasEnded() && !graced && !body.AtBoundary() {
					// Ended mid-chunk: the rest of it, within endGrace.
					graced = true
					uc.SetReadDeadline(time.Now().Add(endGrace))
					continue
				}
				break
			}
			end := body.Length() == 0
			if !headSent {
				werr = st.WriteHeaders(code, fields, p, end)
				headSent = true
			} else {
				werr = st.WriteData(p, end)
			}
			if end {
				break
			}
			if ending != nil && ending.wasEnded() && body.AtBoundary() {
				err = errDrainEnded
				break
			}
		}
	}
	st.OnReset(nil)
	if ending != nil {
		ended = ending.finish() // no End or Close after this: uc may go back to the pool
	}
	// The client reset the stream or left before it had the whole answer
	// (or broke the protocol on the stream, which the codec reset and
	// counted): its doing. Otherwise a failed read of the body is the
	// instance's, after the head was relayed. A drain or shutdown that
	// ended an event stream is neither. Outlier detection hears of the
	// body's end once, as on the HTTP/1.1 codec.
	clientCut := !ended && (werr != nil || st.IsReset() && !st.Answered())
	var broke error
	if !ended && !clientCut {
		broke = err
	}
	kind := b.bodyEnded(code, broke, clientCut)
	switch {
	case ended:
		// A clean end at a chunk boundary, else (the chunk did not
		// complete within endGrace) a reset. Nobody is charged.
		uc.Close()
		switch {
		case err != nil && !body.AtBoundary():
			st.Reset(http2.ErrCodeCancel)
		case err != nil || werr != nil:
			_ = st.WriteData(nil, true)
		}
	case clientCut:
		// The rest of a short answer is read and dropped, and the
		// connection kept (Abandon).
		if err == nil && body.Drain(h1.AbandonDrain) {
			body.Finish(b.conns)
		} else {
			uc.Close()
		}
		o.status, o.fault, o.kind = 499, clientFault, ClientGone
		if errors.Is(werr, h2.ErrStalled) {
			o.kind = ClientTimeout
		}
		if st.Violated() {
			o.status, o.kind, o.clientCounted = http.StatusBadRequest, ClientMalformed, true
		}
		st.Reset(http2.ErrCodeCancel)
	case broke != nil:
		// The client keeps the status it got; the stream is reset so it
		// sees the answer is incomplete.
		uc.Close()
		o.broken = true
		rt.log.Warn("upstream error in the response body", "color", o.pool.color, "instance", b.name,
			"method", o.method, "kind", kind, "err", err)
		st.Reset(http2.ErrCodeInternal)
	case x.early:
		uc.Close() // part of the request body was never sent
	default:
		body.Finish(b.conns)
	}
	rt.finish(o)
}

// validTrailer reports whether a request trailer may be forwarded: not a
// field that frames, routes or authenticates a request (RFC 9110 6.5.1).
func (h *h2Handler) validTrailer(name string) bool {
	switch name {
	case "content-length", "host", "authorization", "cookie", "expect", "te", "trailer", "transfer-encoding",
		"proxy-authorization", "proxy-authenticate", "content-type", "content-encoding", "content-range", "cache-control",
		"max-forwards", "range", "set-cookie", "www-authenticate":
		return false
	}
	return !strings.HasPrefix(name, "x-forwarded-") && !h1.ForwardingAlias(name) && !(h.rt.stripPreview && name == h.rt.previewLower)
}

// h2ExpectsContinue reports an Expect: 100-continue request field.
func h2ExpectsContinue(fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if f.Name == "expect" && strings.EqualFold(f.Value, "100-continue") {
			return true
		}
	}
	return false
}

// trailerFields converts a chunked body's trailer lines to HTTP/2 fields.
func trailerFields(lines [][]byte) []hpack.HeaderField {
	fields := make([]hpack.HeaderField, 0, len(lines))
	for _, ln := range lines {
		name, value, ok := h1.TrailerField(ln)
		if !ok {
			continue
		}
		fields = append(fields, hpack.HeaderField{Name: strings.ToLower(string(name)), Value: string(value)})
	}
	return fields
}

// h2StreamEnd ends or closes an event stream relayed to an HTTP/2 client,
// for draining: End ends it cleanly at its next chunk boundary (END_STREAM
// after the events relayed; a chunk under way gets endGrace to complete),
// Close resets it. Neither acts once the relay finished.
type h2StreamEnd struct {
	st    *h2.Stream
	uc    *h1.UpConn
	mu    sync.Mutex
	done  bool
	ended bool
}

func (e *h2StreamEnd) End() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.done {
		e.ended = true
		e.uc.SetReadDeadline(time.Now()) // the relay's wait for the next chunk ends
	}
}

// wasEnded reports whether End was called.
func (e *h2StreamEnd) wasEnded() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ended
}

var errDrainEnded = errors.New("the event stream was ended by a drain or shutdown")

func (e *h2StreamEnd) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.done {
		e.st.Reset(http2.ErrCodeCancel)
		e.uc.Interrupt()
	}
	return nil
}

// finish stops End and Close from acting and reports whether End did.
func (e *h2StreamEnd) finish() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.done = true
	return e.ended
}

// h2WantsPreview is Head.WantsPreview for HTTP/2 fields: the first preview
// field decides, and the first cookie of that name.
func h2WantsPreview(fields []hpack.HeaderField, headerLower, cookie string) bool {
	if headerLower != "" {
		for _, f := range fields {
			if f.Name == headerLower {
				if truthy(f.Value) {
					return true
				}
				break
			}
		}
	}
	if cookie != "" {
		if v, ok := h2Cookie(fields, cookie); ok && truthy(v) {
			return true
		}
	}
	return false
}

// h2Cookie returns the first cookie called name among the cookie fields.
func h2Cookie(fields []hpack.HeaderField, name string) (string, bool) {
	for _, f := range fields {
		if f.Name != "cookie" {
			continue
		}
		for v := f.Value; v != ""; {
			var part string
			part, v, _ = strings.Cut(v, ";")
			part = strings.TrimSpace(part)
			if k, val, ok := strings.Cut(part, "="); ok && k == name {
				if len(val) > 1 && val[0] == '"' && val[len(val)-1] == '"' {
					val = val[1 : len(val)-1]
				}
				return val, true
			}
		}
	}
	return "", false
}

// rolloutKeyH2 is rolloutKeyHTTP for an HTTP/2 stream: with the cookie key
// and no cookie, the client gets a fresh id (the returned Set-Cookie
// value) and is routed by it.
func (rt *Router) rolloutKeyH2(st *h2.Stream) (key []byte, setCookie string) {
	switch rt.rolloutKey.Kind {
	case KeyHeader:
		for _, f := range st.Fields {
			if f.Name == rt.rolloutKeyLower {
				return bytesOf(f.Value), ""
			}
		}
		return nil, ""
	case KeyIP:
		return bytesOf(peerHost(st.Remote())), ""
	}
	if v, ok := h2Cookie(st.Fields, RolloutCookie); ok && v != "" {
		return bytesOf(v), ""
	}
	id := newRolloutID()
	return bytesOf(id), rolloutSetCookie(id)
}

// dateNow is the Date field's value, formatted once a second.
func (h *h2Handler) dateNow() string {
	now := time.Now()
	sec := now.Unix()
	if v := h.date.Load(); v != nil && v.sec == sec {
		return v.s
	}
	v := &h2DateValue{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	h.date.Store(v)
	return v.s
}

type h2DateValue struct {
	sec int64
	s   string
}
