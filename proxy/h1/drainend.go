package h1

import (
	"errors"
	"time"
)

// Clean endings for the fast codec (see proxy/drainend.go): keep-alive
// connections ended on request before a shutdown, and event streams ended
// with their last chunk at a chunk boundary.

// EndKeepAlives makes every response from now on end its connection
// (Connection: close); idle connections stay open until Shutdown. It is
// the first phase of a graceful stop.
func (s *Server) EndKeepAlives() { s.noKeep.Store(true) }

// KeepAlivesEnded reports whether EndKeepAlives was called.
func (s *Server) KeepAlivesEnded() bool { return s.noKeep.Load() }

// keepAlive reports whether a connection may carry another request after
// the current one.
func (s *Server) keepAlive() bool { return !s.shutdown.Load() && !s.noKeep.Load() }

// endGrace bounds the wait for a chunk boundary: a stream whose chunk does
// not complete within it is cut.
const endGrace = time.Second

// streamCloser ends or closes an event stream the codec relays.
type streamCloser struct {
	c  *Conn
	uc *UpConn
}

// End wakes the relay with a read deadline on the instance connection; if
// it was waiting for the next chunk's size line (a chunk boundary), the
// relay ends the response with the last chunk (see RelayBody).
func (s *streamCloser) End() {
	s.c.ending.Store(true)
	_ = s.uc.nc.SetReadDeadline(time.Now())
	time.AfterFunc(2*endGrace, func() { _ = s.Close() })
}

// Close cuts both connections.
func (s *streamCloser) Close() error {
	s.uc.nc.Close()
	s.c.cut()
	return nil
}

// midChunkEnd reports, for a read error err of the relay, whether End woke
// it in the middle of a chunk: then it gets endGrace more for the rest of
// the chunk, once, and the caller reads again.
func (c *Conn) midChunkEnd(uc *UpConn, err error) bool {
	if c.atChunkStart || c.endWaited || !c.ending.Load() || !isTimeout(err) {
		return false
	}
	c.endWaited = true
	_ = uc.nc.SetReadDeadline(time.Now().Add(endGrace))
	return true
}

// errChunkBoundary wraps an error met while reading a chunk-size line:
// everything relayed before it was whole chunks.
type errChunkBoundary struct{ error }

func (e errChunkBoundary) Unwrap() error { return e.error }

// endedAtBoundary reports whether err is an ended stream's wake-up at a
// chunk boundary. The target of errors.As escapes to the heap: it is
// declared only past the early return, or every request would allocate it.
func (c *Conn) endedAtBoundary(err error) bool {
	if err == nil || !c.ending.Load() {
		return false
	}
	var be errChunkBoundary
	return errors.As(err, &be)
}

// writeLastChunk ends a chunked response.
func (c *Conn) writeLastChunk() {
	c.out.writeString("0\r\n\r\n")
	c.out.flush()
}
