package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Clean endings for long-lived connections. When a drain ends (a colour
// lost the traffic DRAIN_TIMEOUT ago) or the proxy shuts down, a tracked
// connection is ended, not cut: a WebSocket gets a close frame with status
// 1001 (going away) at a frame boundary of the server-to-client stream and
// the instance side is closed; a chunked response (an event stream) gets
// its last chunk (0 CRLF CRLF) at a chunk boundary. Clients then see a
// clean end and reconnect, instead of an abnormal closure (1006) or a
// truncated body (curl exit 18).

// ender is a tracked connection that can end itself cleanly; streamSet
// calls End instead of Close when a drain ends or at shutdown.
type ender interface{ End() }

// endStream ends c cleanly when it can, or closes it.
func endStream(c io.Closer) {
	if e, ok := c.(ender); ok {
		e.End()
		return
	}
	_ = c.Close()
}

// endGrace bounds the wait for a boundary: a frame or chunk that does not
// complete within it is cut.
const endGrace = time.Second

// closeGoingAway is a WebSocket close frame from a server (unmasked) with
// status 1001, going away.
var closeGoingAway = []byte{0x88, 0x02, 0x03, 0xe9}

// frameTracker follows the frame boundaries of a WebSocket byte stream.
// Server frames are unmasked, but the mask bit is honoured either way.
type frameTracker struct {
	hdr       [14]byte
	nh        int    // header bytes seen of the current frame
	remaining uint64 // payload bytes still to come of the current frame
}

// atBoundary reports whether the bytes seen so far end with a whole frame.
func (f *frameTracker) atBoundary() bool { return f.nh == 0 && f.remaining == 0 }

// headerLen is the length of a frame header whose first two bytes are b0
// and b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

// consume follows b. With stop set it stops right after the first frame
// that completes in b and returns how many bytes that is; otherwise, or
// when no frame completes, it returns len(b).
func (f *frameTracker) consume(b []byte, stop bool) int {
	for i := 0; i < len(b); {
		if f.remaining > 0 {
			k := min(uint64(len(b)-i), f.remaining)
			i += int(k)
			f.remaining -= k
			if f.remaining == 0 && stop {
				return i
			}
			continue
		}
		f.hdr[f.nh] = b[i]
		f.nh++
		i++
		if f.nh < 2 || f.nh < headerLen(f.hdr[1]) {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.remaining = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			f.remaining = 0
			for _, c := range f.hdr[2:10] {
				f.remaining = f.remaining<<8 | uint64(c)
			}
		default:
			f.remaining = uint64(n)
		}
		f.nh = 0
		if f.remaining == 0 && stop {
			return i
		}
	}
	return len(b)
}

// wsConn is the instance side of an upgraded connection on the net/http
// path, which relays what Read returns to the client. A pump goroutine
// reads the instance, so that End can take effect at a frame boundary
// while no frame is arriving. After End, Read returns the rest of the
// current frame, then the close frame, then io.EOF; the relay then closes
// both sides. Close closes the instance side at once.
type wsConn struct {
	io.ReadWriteCloser
	set  *streamSet
	st   *stream
	once sync.Once

	chunks chan []byte   // from the pump; closed when the instance side ends
	taken  chan struct{} // Read is done with the last chunk
	end    chan struct{} // closed by End
	endOne sync.Once
	quit   chan struct{} // closed by Close: the pump stops
	qOne   sync.Once
	err    error // the pump's read error, set before chunks is closed

	// Only Read touches these.
	fr      frameTracker
	pending []byte
	tail    []byte // the close frame still to deliver
	ending  bool
	done    bool
}

func (s *streamSet) trackWebSocket(rwc io.ReadWriteCloser) io.ReadWriteCloser {
	c := &wsConn{
		ReadWriteCloser: rwc, set: s,
		chunks: make(chan []byte), taken: make(chan struct{}),
		end: make(chan struct{}), quit: make(chan struct{}),
	}
	c.st = s.add(c)
	go c.pump()
	return c
}

func (c *wsConn) pump() {
	defer close(c.chunks)
	buf := make([]byte, 8<<10)
	for {
		n, err := c.ReadWriteCloser.Read(buf)
		if n > 0 {
			select {
			case c.chunks <- buf[:n]:
			case <-c.quit:
				return
			}
			select {
			case <-c.taken:
			case <-c.quit:
				return
			}
		}
		if err != nil {
			c.err = err
			return
		}
	}
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.done {
			return 0, io.EOF
		}
		if c.ending && len(c.pending) == 0 && c.fr.atBoundary() {
			n := copy(p, c.tail)
			c.tail = c.tail[n:]
			if len(c.tail) == 0 {
				c.done = true
				c.closeInstance()
			}
			return n, nil
		}
		if len(c.pending) > 0 {
			b := c.pending
			if len(b) > len(p) {
				b = b[:len(p)]
			}
			n := c.fr.consume(b, c.ending)
			copy(p, b[:n])
			c.pending = c.pending[len(b):]
			if c.ending && c.fr.atBoundary() {
				c.pending = nil // after the boundary: never sent
			}
			if len(c.pending) == 0 {
				select {
				case c.taken <- struct{}{}:
				case <-c.quit:
				}
			}
			return n, nil
		}
		var endCh <-chan struct{}
		if !c.ending {
			endCh = c.end
		}
		select {
		case b, ok := <-c.chunks:
			if !ok {
				if c.ending && c.fr.atBoundary() {
					continue // deliver the close frame
				}
				if c.err != nil && !errors.Is(c.err, io.EOF) {
					return 0, c.err
				}
				return 0, io.EOF
			}
			c.pending = b
		case <-endCh:
			c.ending, c.tail = true, closeGoingAway
			if !c.fr.atBoundary() {
				// Wait for the frame to complete, within endGrace.
				time.AfterFunc(endGrace, c.closeInstance)
			}
		}
	}
}

// End ends the connection at the next frame boundary with close 1001.
func (c *wsConn) End() { c.endOne.Do(func() { close(c.end) }) }

func (c *wsConn) closeInstance() {
	c.qOne.Do(func() { close(c.quit) })
	_ = c.ReadWriteCloser.Close()
}

func (c *wsConn) Close() error {
	c.once.Do(func() { c.set.remove(c.st) })
	c.qOne.Do(func() { close(c.quit) })
	return c.ReadWriteCloser.Close()
}

// eventBody is a streamed response body on the net/http path. End makes
// its Read return io.EOF between two reads: ReverseProxy has written (and
// flushed) every chunk it read, so the client's stream ends with the last
// chunk at a chunk boundary, written by net/http.
type eventBody struct {
	io.ReadCloser
	set    *streamSet
	st     *stream
	once   sync.Once
	ending atomic.Bool
}

func (s *streamSet) trackEventStream(rc io.ReadCloser) io.ReadCloser {
	b := &eventBody{ReadCloser: rc, set: s}
	b.st = s.add(b)
	return b
}

func (b *eventBody) Read(p []byte) (int, error) {
	if b.ending.Load() {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.ending.Load() {
		return n, io.EOF // the read was cut by End
	}
	return n, err
}

// End ends the stream: a Read waiting for the instance returns io.EOF.
func (b *eventBody) End() {
	b.ending.Store(true)
	_ = b.ReadCloser.Close() // wakes a Read waiting for the instance
}

func (b *eventBody) Close() error {
	b.once.Do(func() { b.set.remove(b.st) })
	return b.ReadCloser.Close()
}
