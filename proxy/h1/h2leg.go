package h1

import (
	"bytes"
	"errors"
	"io"
	"time"
)

// The instance leg of a request that did not arrive on this codec (the
// HTTP/2 codec, package h2): the caller writes the request head it built
// and the body, then reads the answer's head and its body in pieces, with
// chunked framing decoded and trailers parsed.

// Write writes p to the instance.
func (c *UpConn) Write(p []byte) (int, error) { return c.cr.write(p) }

// WriteBody writes request body bytes, as the codec's own requests send
// theirs: a write blocked for a moment looks whether the instance
// answered, and an instance that answered (before it had the whole body,
// RFC 9112 9.5) ends the sending with early true; the rest is not sent,
// and the connection must not be reused. A slow reader is no failure, but
// one that takes no byte for stall (0: no limit) is the instance's
// timeout (sendStall).
func (c *UpConn) WriteBody(p []byte, stall time.Duration) (early bool, err error) {
	defer c.nc.SetWriteDeadline(time.Time{})
	st := sendStall{limit: stall}
	for len(p) > 0 {
		if c.cr.peekState() == peekData {
			return true, nil
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(earlyWriteSlice))
		n, err := c.cr.write(p)
		p = p[n:]
		if stop, early, err := st.wrote(c, n, err); stop {
			return early, err
		}
	}
	return false, nil
}

// Interrupt closes the socket, so what blocks on the connection, now or
// later, fails at once; from any goroutine. The connection must then be
// closed with Close, not pooled.
func (c *UpConn) Interrupt() { _ = c.nc.Close() }

// AbandonGrace is how long an abandoned exchange may still take to end
// cleanly; AbandonDrain bounds what is read and dropped of its answer to
// keep the connection: a longer answer costs the connection instead.
const (
	AbandonGrace = time.Second
	AbandonDrain = 256 << 10
)

// Abandon is Interrupt for an exchange whose client left but which may
// still end cleanly: the instance gets AbandonGrace from now to answer and
// send the rest of its answer, after which what waits on the connection
// fails. An answer that ends within it (LegBody.Drain) leaves the
// connection reusable, so a client resetting the requests it sent costs
// the instance no connection. From any goroutine.
func (c *UpConn) Abandon() {
	t := time.Now().Add(AbandonGrace)
	c.abandoned.Store(t.UnixNano())
	_ = c.nc.SetDeadline(t)
}

// keepAbandoned puts back an abandon's deadline over one just set: Abandon
// stores its time before it sets the deadline, so either this sees it or
// Abandon's deadline comes last.
func (c *UpConn) keepAbandoned() {
	if a := c.abandoned.Load(); a != 0 {
		_ = c.nc.SetDeadline(time.Unix(0, a))
	}
}

// Reused reports whether the connection came from the idle pool.
func (c *UpConn) Reused() bool { return c.reused }

// ReadHead reads the instance's final response head into res; timeout
// bounds the wait (0: none). Informational answers (1xx but 101) go to
// info, when set, with res holding them, and are skipped. The final head
// stays in the read buffer, and res's fields valid, until StartBody.
func (c *UpConn) ReadHead(res *Head, timeout time.Duration, info func(res *Head)) error {
	if timeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
		c.keepAbandoned()
		defer func() {
			_ = c.nc.SetReadDeadline(time.Time{})
			c.keepAbandoned()
		}()
	}
	return c.readHead(res, info)
}

// Code is a response's status code.
func (h *Head) Code() int { return h.code }

// HasDate reports whether a response carries a Date field.
func (h *Head) HasDate() bool { return h.hasDate }

// EachEndToEndField calls fn with each field of a response that is not
// hop-by-hop (nor named by its Connection field) and not part of its
// HTTP/1.1 framing (Transfer-Encoding, Trailer; Content-Length unless the
// body is chunked, and once: repeats carry the same value; never in a 1xx
// or 204 answer, see lengthAllowed).
func (h *Head) EachEndToEndField(fn func(name, value []byte)) {
	lengthGiven := false
	for i := range h.fields {
		f := &h.fields[i]
		switch f.id {
		case fConnection, fKeepAlive, fProxyConnection, fTE, fUpgrade, fProxyAuthenticate, fProxyAuthorization,
			fTransferEncoding, fTrailer:
			continue
		case fContentLength:
			if h.te > 0 || lengthGiven || !h.lengthAllowed() {
				continue
			}
			lengthGiven = true
		}
		if h.nConnTokens > 0 && f.id != fContentLength && h.connectionNamed(f.name) {
			continue
		}
		fn(f.name, f.value)
	}
}

// LegBody reads a response body in pieces.
type LegBody struct {
	uc       *UpConn
	framing  int
	rem      int64 // Content-Length left, or of the current chunk
	chunkEnd bool  // a chunk's data was read: its CRLF is next
	done     bool
	upKeep   bool
	// Stream: an event stream (its duration is a connection's lifetime).
	Stream bool
	// Trailers of a chunked body, "Name: value" lines, valid until the
	// connection is reused.
	Trailers [][]byte
}

// StartBody takes the head read by ReadHead out of the buffer and
// returns the reader of its body; head: the request was HEAD.
func (c *UpConn) StartBody(res *Head, head bool) LegBody {
	b := LegBody{uc: c}
	c.stall = 0
	b.framing, b.rem, b.upKeep = res.bodyFraming(head)
	b.Stream = res.sse && b.framing != bodyLength
	b.done = b.framing == bodyNone
	c.cr.discard(res.end)
	return b
}

// Empty reports whether the body has no bytes at all (HEAD, 204, 304,
// Content-Length: 0).
func (b *LegBody) Empty() bool { return b.framing == bodyNone }

// Length is the body's Content-Length; -1 when it has none.
func (b *LegBody) Length() int64 {
	switch b.framing {
	case bodyLength:
		return b.rem
	case bodyNone:
		return 0
	}
	return -1
}

// AtBoundary reports whether the body read so far ends with a whole chunk
// (always, for a body that is not chunked): where an event stream may be
// ended cleanly.
func (b *LegBody) AtBoundary() bool { return b.framing != bodyChunked || b.rem == 0 }

// SetReadDeadline sets the read deadline of the connection; from any
// goroutine.
func (c *UpConn) SetReadDeadline(t time.Time) { _ = c.nc.SetReadDeadline(t) }

// Buffered reports whether body bytes are already read and waiting.
func (b *LegBody) Buffered() bool { return b.uc.cr.buffered() > 0 }

// Next returns the next piece of the body, valid until the next call;
// io.EOF at its end (after which Trailers are set). It blocks only when
// nothing of the body is buffered.
func (b *LegBody) Next() ([]byte, error) {
	cr := b.uc.cr
	for {
		if b.done {
			return nil, io.EOF
		}
		switch b.framing {
		case bodyLength:
			if b.rem == 0 {
				b.done = true
				continue
			}
			return b.take(true)
		case bodyUntilClose:
			if cr.buffered() == 0 {
				if err := b.uc.fillBody(); err != nil {
					if err == io.EOF {
						b.done = true
						continue
					}
					return nil, err
				}
			}
			p := cr.bytes()
			cr.discard(len(p))
			return p, nil
		case bodyChunked:
			if b.rem > 0 {
				return b.take(true)
			}
			if b.chunkEnd {
				ln, err := b.line()
				if err != nil {
					return nil, err
				}
				if len(ln) != 2 {
					return nil, errors.New("malformed chunked body: no CRLF after a chunk")
				}
				cr.discard(2)
				b.chunkEnd = false
			}
			ln, err := b.line()
			if err != nil {
				return nil, err
			}
			size, ok := parseChunkSize(ln[:len(ln)-2])
			if !ok {
				return nil, errors.New("malformed chunked body: bad chunk size")
			}
			cr.discard(len(ln))
			if size == 0 {
				return nil, b.trailers()
			}
			b.rem, b.chunkEnd = size, true
		}
	}
}

// take returns what is buffered of the current length, reading first when
// nothing is.
func (b *LegBody) take(exact bool) ([]byte, error) {
	cr := b.uc.cr
	if cr.buffered() == 0 {
		if err := b.uc.fillBody(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	p := cr.bytes()
	if int64(len(p)) > b.rem {
		p = p[:b.rem]
	}
	cr.discard(len(p))
	b.rem -= int64(len(p))
	if b.rem == 0 && b.framing == bodyLength {
		b.done = true
	}
	return p, nil
}

// line returns the next CRLF-terminated line, still in the buffer.
func (b *LegBody) line() ([]byte, error) {
	cr := b.uc.cr
	for {
		p := cr.bytes()
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			if i == 0 || p[i-1] != '\r' {
				return nil, errors.New("malformed chunked body: bare LF")
			}
			return p[:i+1], nil
		}
		if len(p) > maxChunkLine {
			return nil, errors.New("malformed chunked body: line too long")
		}
		if err := b.uc.fillBody(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// trailers reads the trailer section up to its blank line. The lines are
// copied: the buffer may move while they are read.
func (b *LegBody) trailers() error {
	b.Trailers = b.Trailers[:0]
	for {
		ln, err := b.line()
		if err != nil {
			return err
		}
		b.uc.cr.discard(len(ln))
		if len(ln) == 2 {
			b.done = true
			return io.EOF
		}
		if len(b.Trailers) >= maxFields {
			return errors.New("malformed chunked body: too many trailer fields")
		}
		b.Trailers = append(b.Trailers, append([]byte(nil), ln[:len(ln)-2]...))
	}
}

// Drain reads and drops the rest of the body of an abandoned exchange
// (Abandon), at most max bytes and within the abandon's grace. It reports
// whether the answer ended cleanly, so that Finish may pool the
// connection; false for an exchange not abandoned.
func (b *LegBody) Drain(max int64) bool {
	if b.uc.abandoned.Load() == 0 {
		return false
	}
	for n := int64(0); n <= max; {
		p, err := b.Next()
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
		n += int64(len(p))
	}
	return false
}

// Finish returns the connection to u when the body was read to its end
// and the instance keeps it, else closes it.
func (b *LegBody) Finish(u *Upstream) {
	if b.done && b.upKeep {
		u.Put(b.uc)
		return
	}
	b.uc.Close()
}

// TrailerField splits a trailer line into its name and value; ok false
// when it is malformed or a field that must not be a trailer.
func TrailerField(line []byte) (name, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	name, value = line[:i], trimSpaceTab(line[i+1:])
	for _, c := range name {
		if !isTokenChar(c) {
			return nil, nil, false
		}
	}
	switch classifyField(name) {
	case fOther, fContentType:
		return name, value, true
	}
	return nil, nil, false
}
