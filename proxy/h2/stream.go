package h2

import (
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Stream is one request stream. The request's fields are set before the
// Handler runs and not changed after.
type Stream struct {
	c  *conn
	id uint32

	Method, Scheme, Authority, Path string
	// Fields are the regular request fields, names in lower case; the
	// Authority comes from :authority or else Host.
	Fields []hpack.HeaderField
	// ContentLength is the declared body length; -1: none declared.
	ContentLength int64
	// HasBody: the HEADERS frame did not end the stream.
	HasBody bool
	// Start is when the request's head arrived.
	Start time.Time
	// ReadTimeout bounds each wait of Read for body bytes; 0: none.
	ReadTimeout time.Duration

	tooLarge bool // the header list exceeded the limit: answered 431

	// under c.mu
	sendWindow  int64
	recvWindow  int64
	unacked     int64 // body bytes consumed and not yet granted back
	received    int64
	body        []byte
	remoteDone  bool // END_STREAM received
	localDone   bool // we sent END_STREAM or RST_STREAM
	reset       bool // reset, by either side, or the connection is gone
	clientReset bool // the client reset it
	violated    bool // reset for a protocol violation of the client's (streamError)
	interrupt   func()
	headersSent bool
	trailers    []hpack.HeaderField // of the request body
	expired     bool                // the wait of waitLocked timed out
	waits       uint64

	endAt int64 // under c.wmu: c.wbuf.total with our END_STREAM buffered; 0: not yet
}

// ErrReset is returned by a stream's writes and reads once the client
// reset it or the connection is gone: the client's doing.
var ErrReset = errors.New("h2: stream reset by the client or its connection closed")

// ErrStalled is returned by a write that waited StallTimeout for
// flow-control window.
var ErrStalled = errors.New("h2: the client granted no flow-control window in time")

// ErrBodyTimeout is returned by a Read that waited ReadTimeout for body
// bytes.
var ErrBodyTimeout = errors.New("h2: the client sent no request body bytes in time")

// Remote is the client's address.
func (st *Stream) Remote() string { return st.c.remote }

// Conn is the client's connection (for its TLS state).
func (st *Stream) Conn() net.Conn { return st.c.nc }

// ID is the stream's identifier.
func (st *Stream) ID() uint32 { return st.id }

// TooLarge reports a request whose header list exceeded the limit; it has
// no fields, and the handler should answer 431.
func (st *Stream) TooLarge() bool { return st.tooLarge }

// cancelLocked marks the stream reset and interrupts what its handler
// waits for. Under c.mu.
func (st *Stream) cancelLocked() {
	if st.reset {
		return
	}
	st.reset = true
	if st.interrupt != nil {
		st.interrupt()
	}
	st.c.cond.Broadcast()
}

// OnReset sets fn to run when the stream is reset (by the client, or its
// connection closes) while the handler waits elsewhere, e.g. for an
// instance; fn runs at once if it already was, and must not block. nil
// removes it.
func (st *Stream) OnReset(fn func()) {
	c := st.c
	c.mu.Lock()
	st.interrupt = fn
	reset := st.reset
	c.mu.Unlock()
	if reset && fn != nil {
		fn()
	}
}

// Violated reports whether the stream was reset for a protocol violation
// of the client's (a frame its state does not allow, a body longer or
// shorter than its content-length, a flow-control error) while its handler
// ran: Server.ProtocolError counted it then.
func (st *Stream) Violated() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.violated
}

// IsReset reports whether the client reset the stream or its connection
// closed.
func (st *Stream) IsReset() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.reset || c.dead
}

// Read reads the request body; io.EOF at its end, ErrReset when the
// client reset the stream. The bytes read are granted back to the client
// (WINDOW_UPDATE) as they are consumed.
func (st *Stream) Read(p []byte) (int, error) {
	c := st.c
	c.mu.Lock()
	ready := st.waitLocked(func() bool { return len(st.body) > 0 || st.remoteDone || st.reset }, st.ReadTimeout)
	if !ready {
		c.mu.Unlock()
		return 0, ErrBodyTimeout
	}
	if st.reset {
		c.mu.Unlock()
		return 0, ErrReset
	}
	if len(st.body) == 0 {
		c.mu.Unlock()
		return 0, io.EOF
	}
	n := copy(p, st.body)
	st.body = st.body[n:]
	if len(st.body) == 0 {
		st.body = st.body[:0:0]
	}
	st.unacked += int64(n)
	c.recvUnacked += int64(n)
	var sg uint32
	if st.unacked >= int64(c.s.streamWindow())/4 && !st.remoteDone {
		sg = uint32(st.unacked)
		st.recvWindow += st.unacked
		st.unacked = 0
	}
	cg := c.takeConnGrantLocked()
	c.mu.Unlock()
	if sg > 0 || cg > 0 {
		c.write(func() {
			if sg > 0 {
				_ = c.wfr.WriteWindowUpdate(st.id, sg)
			}
			if cg > 0 {
				_ = c.wfr.WriteWindowUpdate(0, cg)
			}
		})
	}
	return n, nil
}

// Trailers are the request's trailer fields, once Read returned io.EOF.
func (st *Stream) Trailers() []hpack.HeaderField {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.trailers
}

// WriteHeaders sends the response head: :status and fields (names in
// lower case), followed, in the same write, by as much of data as the
// flow-control windows allow without waiting (the rest by WriteData), and
// END_STREAM when end (and all of data went).
func (st *Stream) WriteHeaders(status int, fields []hpack.HeaderField, data []byte, end bool) error {
	c := st.c
	c.mu.Lock()
	if st.reset || c.dead {
		c.mu.Unlock()
		return ErrReset
	}
	st.headersSent = true
	n := st.takeWindowLocked(len(data))
	maxFrame := c.peerMaxFrame
	all := n == int64(len(data))
	if end && all {
		st.localDone = true
	}
	c.mu.Unlock()
	err := c.write(func() {
		c.writeFields(st.id, status, fields, end && len(data) == 0, maxFrame)
		if n > 0 || len(data) > 0 && end && all {
			c.writeData(st.id, data[:n], end && all, maxFrame)
		}
		if end && all {
			st.endAt = c.wbuf.total
		}
	})
	if err != nil {
		return ErrReset
	}
	if !all {
		return st.WriteData(data[n:], end)
	}
	return nil
}

// writeFields encodes a header block, :status first when status is not 0
// (a response head; 0: trailers), and writes it. Under wmu.
func (c *conn) writeFields(id uint32, status int, fields []hpack.HeaderField, end bool, maxFrame uint32) {
	c.hbuf.b = c.hbuf.b[:0]
	if status != 0 {
		_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	}
	for _, f := range fields {
		_ = c.henc.WriteField(f)
	}
	c.writeHeaderBlock(id, c.hbuf.b, end, maxFrame)
}

var statusTexts [600]string

func init() {
	for i := 100; i < 600; i++ {
		statusTexts[i] = strconv.Itoa(i)
	}
}

func statusText(code int) string {
	if code >= 100 && code < 600 {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}

// writeData appends DATA frames of at most maxFrame bytes. Under wmu.
func (c *conn) writeData(id uint32, p []byte, end bool, maxFrame uint32) {
	for {
		n := min(len(p), int(maxFrame))
		last := n == len(p)
		_ = c.wfr.WriteData(id, end && last, p[:n])
		p = p[n:]
		if last {
			return
		}
	}
}

// WriteData sends p as DATA, waiting for flow-control window as needed
// (at most StallTimeout each time), with END_STREAM when end.
func (st *Stream) WriteData(p []byte, end bool) error {
	c := st.c
	for {
		n, maxFrame, err := st.awaitWindow(len(p))
		if err != nil {
			return err
		}
		last := n == len(p)
		if end && last {
			c.mu.Lock()
			st.localDone = true
			c.mu.Unlock()
		}
		chunk := p[:n]
		if err := c.write(func() {
			c.writeData(st.id, chunk, end && last, maxFrame)
			if end && last {
				st.endAt = c.wbuf.total
			}
		}); err != nil {
			return ErrReset
		}
		if last {
			return nil
		}
		p = p[n:]
	}
}

// awaitWindow takes up to want bytes of both send windows, waiting for
// some when either is empty (want 0 takes nothing and does not wait).
func (st *Stream) awaitWindow(want int) (int, uint32, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ready := st.waitLocked(func() bool {
		return st.reset || c.dead || want == 0 || st.sendWindow > 0 && c.sendWindow > 0
	}, c.s.stall())
	switch {
	case st.reset || c.dead:
		return 0, 0, ErrReset
	case !ready:
		return 0, 0, ErrStalled
	}
	return int(st.takeWindowLocked(want)), c.peerMaxFrame, nil
}

// takeWindowLocked takes up to want bytes of both send windows and keeps
// the flood budgets' counts of what was sent. Under c.mu.
func (st *Stream) takeWindowLocked(want int) int64 {
	c := st.c
	n := max(min(int64(want), st.sendWindow, c.sendWindow), 0)
	st.sendWindow -= n
	c.sendWindow -= n
	c.dataSent += int((n + int64(c.peerMaxFrame) - 1) / int64(c.peerMaxFrame))
	c.dataBytes += n
	if n > 0 && n < int64(want) && n < dribbleFrame {
		c.dribbles++
	}
	return n
}

// WriteTrailers ends the stream with a trailing HEADERS frame.
func (st *Stream) WriteTrailers(fields []hpack.HeaderField) error {
	c := st.c
	c.mu.Lock()
	if st.reset || c.dead {
		c.mu.Unlock()
		return ErrReset
	}
	st.localDone = true
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	err := c.write(func() {
		c.writeFields(st.id, 0, fields, true, maxFrame)
		st.endAt = c.wbuf.total
	})
	if err != nil {
		return ErrReset
	}
	return nil
}

// Reset ends the stream with RST_STREAM: INTERNAL_ERROR when the answer
// broke (the instance failed mid-body), CANCEL and the like otherwise.
func (st *Stream) Reset(code http2.ErrCode) {
	c := st.c
	c.mu.Lock()
	if st.localDone || c.dead {
		c.mu.Unlock()
		return
	}
	st.localDone = true
	st.cancelLocked()
	c.mu.Unlock()
	c.resetStream(st.id, code)
}

// Answered reports whether the stream's END_STREAM went to the
// connection's socket: the client has the whole answer, whatever becomes
// of the stream or the connection after (a client that closes its
// connection at once resets every stream, IsReset).
func (st *Stream) Answered() bool {
	c := st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return st.endAt > 0 && st.endAt <= c.wdone
}

// HeadersSent reports whether the response head went out.
func (st *Stream) HeadersSent() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.headersSent
}

// streamWorker runs st and then the streams the reader hands it, until
// the connection closes: a stream goroutine is reused with its grown
// stack.
func (c *conn) streamWorker(st *Stream) {
	for ok := true; ok; {
		c.runStream(st)
		if c.idleWorkers.Add(1) > maxIdleWorkers {
			c.idleWorkers.Add(-1)
			return // enough wait already: a burst's goroutines do not stay
		}
		st, ok = <-c.work
		c.idleWorkers.Add(-1)
	}
}

// maxIdleWorkers bounds the stream goroutines a connection keeps waiting
// for its next streams.
const maxIdleWorkers = 32

// waitLocked waits on the connection's cond until ready holds or timeout
// (0: none) passes, and reports whether ready holds. Under c.mu.
func (st *Stream) waitLocked(ready func() bool, timeout time.Duration) bool {
	c := st.c
	var timer *time.Timer
	st.expired = false
	st.waits++
	gen := st.waits
	for !ready() {
		if st.expired {
			return false
		}
		if timer == nil && timeout > 0 {
			timer = time.AfterFunc(timeout, func() {
				c.mu.Lock()
				if st.waits == gen { // not a late timer of an earlier wait
					st.expired = true
				}
				c.cond.Broadcast()
				c.mu.Unlock()
			})
		}
		c.cond.Wait()
	}
	if timer != nil {
		timer.Stop()
	}
	return true
}

// runStream runs the handler and ends the stream's life on the
// connection.
func (c *conn) runStream(st *Stream) {
	defer c.streamDone(st)
	defer func() {
		if v := recover(); v != nil {
			c.s.panicked(c, v) // the stream is reset by streamDone
		}
	}()
	if st.tooLarge {
		_ = st.WriteHeaders(431, nil, nil, true)
		return
	}
	c.s.Handler.ServeH2(st)
}

func (c *conn) streamDone(st *Stream) {
	c.mu.Lock()
	var code http2.ErrCode
	send := false
	switch {
	case !st.localDone && !c.dead:
		send, code = true, http2.ErrCodeInternal // the handler ended without an answer
		st.localDone = true
	case !st.remoteDone && !st.reset && !c.dead:
		send, code = true, http2.ErrCodeNo // answered before the whole request body came
	}
	st.reset = true
	st.interrupt = nil
	// Body bytes nobody will read go back to the connection's window.
	c.recvUnacked += int64(len(st.body))
	st.body = nil
	grant := c.takeConnGrantLocked()
	delete(c.streams, st.id)
	c.running--
	c.armIdleLocked()
	closeNow := c.goingAway && c.running == 0
	c.mu.Unlock()
	if send {
		c.resetStream(st.id, code)
	}
	c.sendGrant(0, grant)
	if closeNow {
		c.closeSoon()
	} else if f := c.s.KeepAlivesEnded; f != nil && f() {
		c.startDrain()
	}
}
