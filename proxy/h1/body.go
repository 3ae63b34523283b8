package h1

import (
	"errors"
	"io"
	"net"
)

// Body framing of responses: Content-Length, chunked (relayed as it is,
// its framing checked so the end of the message is known) and until close.

// fillUp reads more of the response, first sending the client what is
// pending: the read may block, and a stream's client must not wait on it.
func (c *Conn) fillUp(uc *UpConn) error {
	if c.out.pending() > 0 {
		c.out.flush()
		if c.out.err != nil {
			return nil // reported through c.out.err
		}
	}
	err := uc.fillBody()
	if err != nil && c.midChunkEnd(uc, err) {
		err = uc.fillBody() // the rest of the chunk, within endGrace (drainend.go)
	}
	return err
}

func (c *Conn) copyN(uc *UpConn, n int64) error {
	for n > 0 && c.out.err == nil {
		if uc.cr.buffered() == 0 {
			if err := c.fillUp(uc); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			if c.out.err != nil {
				return nil
			}
		}
		p := uc.cr.bytes()
		if int64(len(p)) > n {
			p = p[:n]
		}
		c.out.write(p)
		uc.cr.discard(len(p))
		n -= int64(len(p))
	}
	return nil
}

// Content-Length bodies between two TCP sockets move by splice(2) (see
// splice_linux.go) when at least spliceMin bytes of them are not yet read;
// shorter ones are copied through the read buffer, which costs fewer calls
// (measured in splice_test.go, BenchmarkRelayLength). A drain moves at most
// spliceMax bytes, the pipe's size.
const (
	spliceMin = 64 << 10
	spliceMax = 1 << 20
)

// copyLength relays a Content-Length body of n bytes: what is buffered
// first, then the rest by splice when it is long and both ends are TCP
// sockets, else by copyN.
func (c *Conn) copyLength(uc *UpConn, n int64) error {
	b := uc.cr.buffered()
	if n-int64(b) < spliceMin {
		return c.copyN(uc, n)
	}
	sp := newSplicer(uc.nc, c.nc)
	if sp == nil {
		return c.copyN(uc, n)
	}
	sp.waits = c.cr // for the watch over clients that stop reading
	defer sp.close()
	c.out.write(uc.cr.bytes())
	uc.cr.discard(b)
	c.out.flush()
	if c.out.err != nil {
		return nil
	}
	return c.spliceOut(uc, sp, n-int64(b))
}

// spliceOut moves n bytes of a response body from the instance to the
// client. As with copyN, a failure of the instance's side is returned and
// one of the client's is left in c.out.err.
func (c *Conn) spliceOut(uc *UpConn, sp *splicer, n int64) error {
	for n > 0 {
		got, err := uc.drainBody(sp, int(min(n, spliceMax)))
		if err != nil {
			return err
		}
		if got == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= int64(got)
		if _, err := sp.pump(); err != nil {
			c.out.err = err
			return nil
		}
	}
	return nil
}

func (c *Conn) copyUntilClose(uc *UpConn) error {
	for c.out.err == nil {
		if uc.cr.buffered() == 0 {
			if err := c.fillUp(uc); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if c.out.err != nil {
				return nil
			}
		}
		p := uc.cr.bytes()
		c.out.write(p)
		uc.cr.discard(len(p))
	}
	return nil
}

const maxChunkLine = 4096

// line returns the next CRLF-terminated line of the response (with its
// CRLF), still in the read buffer.
func (c *Conn) line(uc *UpConn) ([]byte, error) {
	for {
		p := uc.cr.bytes()
		for i, ch := range p {
			if ch == '\n' {
				if i == 0 || p[i-1] != '\r' {
					return nil, errors.New("malformed chunked body: bare LF")
				}
				return p[:i+1], nil
			}
		}
		if len(p) > maxChunkLine {
			return nil, errors.New("malformed chunked body: line too long")
		}
		if err := c.fillUp(uc); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if c.out.err != nil {
			return nil, c.out.err
		}
	}
}

// copyChunked relays a chunked body as it is, checking its framing so the
// end of the message is known.
func (c *Conn) copyChunked(uc *UpConn) error {
	for c.out.err == nil {
		c.atChunkStart = true
		ln, err := c.line(uc)
		c.atChunkStart = false
		if err != nil {
			return errChunkBoundary{err} // drainend.go
		}
		size, ok := parseChunkSize(ln[:len(ln)-2])
		if !ok {
			return errors.New("malformed chunked body: bad chunk size")
		}
		c.out.write(ln)
		uc.cr.discard(len(ln))
		if size == 0 {
			for { // trailer fields up to the blank line
				ln, err := c.line(uc)
				if err != nil {
					return err
				}
				// A line that is no field line is not passed on: the
				// body has been relayed, and a strict client (Go's)
				// would fail the whole answer on it.
				if _, _, ok := splitField(ln[:len(ln)-2]); ok || len(ln) == 2 {
					c.out.write(ln)
				}
				uc.cr.discard(len(ln))
				if len(ln) == 2 {
					return nil
				}
			}
		}
		if err := c.copyN(uc, size); err != nil {
			return err
		}
		ln, err = c.line(uc)
		if err != nil {
			return err
		}
		if len(ln) != 2 {
			return errors.New("malformed chunked body: no CRLF after a chunk")
		}
		c.out.write(ln)
		uc.cr.discard(2)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
