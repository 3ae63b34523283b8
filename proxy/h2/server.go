// Package h2 is the proxy's HTTP/2 server codec (RFC 9113): one reader
// goroutine per connection parses frames (golang.org/x/net/http2's Framer
// and HPACK), and each request stream runs its Handler in a goroutine
// (reused for the connection's next streams). Streams append their frames
// under one lock to one buffer, and the writes to the connection are
// group-committed: a writer that finds a write under way leaves its frames
// to it, so the answers of many streams share a TLS record and a write.
//
// Everything a client can make the server hold is bounded: concurrent
// streams (MaxConcurrentStreams, beyond which streams are refused, and a
// client that keeps opening them anyway gets GOAWAY ENHANCE_YOUR_CALM),
// the header list (MaxHeaderListSize; a CONTINUATION flood past it ends
// the connection), request body bytes (the flow-control windows the server
// grants), control frames answered (PING and SETTINGS acknowledgements are
// written synchronously by the reader, so a client that does not read
// stops being read), streams reset by the client while their handler still
// runs (rapid reset: they keep their slot until it ends), the wait of an
// answer for flow-control window (StallTimeout), and frames that cost the
// server work and the client nothing: empty DATA frames in a row,
// PRIORITY frames per stream opened and WINDOW_UPDATE frames per DATA
// frame sent (past a budget, GOAWAY ENHANCE_YOUR_CALM).
package h2

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Handler serves one request stream. It runs in the stream's goroutine and
// must answer (WriteHeaders, then WriteData or WriteTrailers) or Reset;
// what it has not ended when it returns is reset.
type Handler interface {
	ServeH2(st *Stream)
}

// Server serves HTTP/2 connections whose TLS handshake (ALPN h2) is done.
type Server struct {
	Handler Handler
	Log     *slog.Logger
	// IdleTimeout closes a connection without a stream for that long;
	// default 120s.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds the wait for the connection preface and
	// the client's first SETTINGS, and for each header block (a HEADERS
	// frame and its CONTINUATION frames) from its first byte; default 10s.
	ReadHeaderTimeout time.Duration
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS; default 250.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE; default 64 KiB.
	MaxHeaderListSize uint32
	// StreamWindow is the flow-control window of each stream's request
	// body; default 1 MiB. The connection's window is four times that.
	StreamWindow int32
	// StallTimeout bounds a stream's wait for flow-control window and a
	// write to the client; default 60s.
	StallTimeout time.Duration
	// KeepAlivesEnded, when set and true after a stream ends, ends its
	// connection gracefully (GOAWAY; the streams in flight finish).
	KeepAlivesEnded func() bool
	// ProtocolError, when set, is called for each connection or stream
	// ended for a protocol violation of the client.
	ProtocolError func()

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown atomic.Bool
	idleCh   chan struct{} // signalled when a connection ends, for Shutdown
}

// Defaults.
const (
	defaultMaxStreams   = 250
	defaultMaxHeaderLen = 64 << 10
	defaultStreamWindow = 1 << 20
	defaultStall        = 60 * time.Second
	defaultIdle         = 120 * time.Second
	defaultReadHeader   = 10 * time.Second
	initialWindow       = 65535
	maxWindow           = 1<<31 - 1
	// refusedLimit is how many streams a connection may have refused
	// (over the concurrency limit) in a row before it is told to calm
	// down: a rapid-reset attack opens and resets streams faster than
	// their handlers end.
	refusedLimit = 100
	// emptyDataLimit is how many DATA frames without data and without
	// END_STREAM a connection may send in a row: they have no use.
	emptyDataLimit = 100
	// priorityPerStream bounds PRIORITY frames: at most this many per
	// stream opened, plus this many (clients that build a priority tree
	// up front send a few).
	priorityPerStream = 100
	// updatesPerFrame bounds WINDOW_UPDATE frames, which wake every stream
	// waiting for window: at most this many per DATA frame sent and per
	// stream opened, plus this many.
	updatesPerFrame = 10
	// A DATA frame cut short by a window under dribbleFrame bytes (the
	// answer had more to send) is a dribble: a client that grants window a
	// few bytes at a time draws a frame, a write and a wake-up per grant
	// (CVE-2019-9511). A connection may cause dribbleLimit of them, plus
	// one per dribbleBytes of DATA sent. Clients grant back what they
	// read, half a window or more at a time: even one with a 1 KiB
	// window draws 512-byte frames, which are not dribbles.
	dribbleFrame = 128
	dribbleLimit = 100
	dribbleBytes = 8 << 10
)

// orDefault is v when set (positive), else d: the zero value of a Server
// field means its default.
func orDefault[T int32 | uint32 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

func (s *Server) maxStreams() uint32 { return orDefault(s.MaxConcurrentStreams, defaultMaxStreams) }
func (s *Server) maxHeaderList() uint32 {
	return orDefault(s.MaxHeaderListSize, defaultMaxHeaderLen)
}
func (s *Server) streamWindow() int32       { return orDefault(s.StreamWindow, defaultStreamWindow) }
func (s *Server) stall() time.Duration      { return orDefault(s.StallTimeout, defaultStall) }
func (s *Server) idle() time.Duration       { return orDefault(s.IdleTimeout, defaultIdle) }
func (s *Server) readHeader() time.Duration { return orDefault(s.ReadHeaderTimeout, defaultReadHeader) }

func (s *Server) protocolError() {
	if s.ProtocolError != nil {
		s.ProtocolError()
	}
}

var errServerClosed = errors.New("h2: server closed")

// ServeConn serves nc, a connection that negotiated h2, in the calling
// goroutine until it closes; it closes nc.
func (s *Server) ServeConn(nc net.Conn) error {
	c := s.newConn(nc)
	if !s.track(c, true) {
		nc.Close()
		return errServerClosed
	}
	defer s.track(c, false)
	return c.serve()
}

func (s *Server) track(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutdown.Load() {
			return false
		}
		if s.conns == nil {
			s.conns = make(map[*conn]struct{})
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if s.idleCh != nil {
		select {
		case s.idleCh <- struct{}{}:
		default:
		}
	}
	return true
}

// Shutdown sends every connection GOAWAY and waits until their streams in
// flight have ended and they closed, or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown.Store(true)
	if s.idleCh == nil {
		s.idleCh = make(chan struct{}, 1)
	}
	ch := s.idleCh
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns { // not under s.mu: a GOAWAY may wait for a slow client
		c.startDrain()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-tick.C:
		}
	}
}

// Close closes every connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.shutdown.Store(true)
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

// Conns reports the connections open.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// conn is one HTTP/2 connection.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	rfr    *http2.Framer // the reader goroutine's
	br     *bufio.Reader

	// writing: wmu orders frames; a writer appends to wbuf (through wfr
	// and henc), and the writes to the connection are group-committed
	// (see write).
	wmu      sync.Mutex
	wcond    sync.Cond // a flush ended
	flushing bool      // a writer is writing the buffer to the connection
	wbuf     writeBuf
	wdone    int64 // of wbuf.total, the bytes written to the connection
	spare    []byte
	wfr      *http2.Framer
	henc     *hpack.Encoder
	hbuf     headerBuf
	werr     error

	mu           sync.Mutex
	cond         sync.Cond // window grants, request body data, stream ends
	streams      map[uint32]*Stream
	maxStreamID  uint32 // the highest stream the client opened
	running      int    // streams whose handler runs
	refused      int    // streams refused in a row
	sendWindow   int64  // the client's connection window for our DATA
	peerInitial  int32  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32
	recvWindow   int64 // our connection window for the client's DATA
	recvUnacked  int64 // consumed bytes not yet granted back
	goingAway    bool  // GOAWAY sent: no new streams
	draining     bool  // the first GOAWAY of a shutdown sent (startDrain)
	dead         bool  // the connection failed or closed
	idleArmed    bool
	headerGuard  bool // a header block's deadline is set: armIdle leaves it

	// Frames that cost the server work and the client nothing (the HTTP/2
	// floods of 2019: CVE-2019-9518's empty frames, PRIORITY and
	// WINDOW_UPDATE floods) are budgeted; past a budget the connection
	// gets GOAWAY ENHANCE_YOUR_CALM (calm). The reader keeps these, under
	// c.mu where a stream goroutine writes them too.
	emptyRun   int   // DATA frames in a row with no data and no END_STREAM
	priorities int   // PRIORITY frames
	updates    int   // WINDOW_UPDATE frames
	opened     int   // streams the client opened
	dataSent   int   // DATA frames granted window for (takeWindowLocked)
	dataBytes  int64 // DATA bytes granted window for
	dribbles   int   // DATA frames cut short by a window under dribbleFrame

	work        chan *Stream // idle stream goroutines wait here for the next stream
	idleWorkers atomic.Int32
}

// writeBuf collects frames for one write to the connection.
type writeBuf struct {
	b     []byte
	total int64 // bytes ever appended
}

func (w *writeBuf) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	w.total += int64(len(p))
	return len(p), nil
}

// headerBuf collects one HPACK header block.
type headerBuf struct{ b []byte }

func (h *headerBuf) Write(p []byte) (int, error) {
	h.b = append(h.b, p...)
	return len(p), nil
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.cond.L = &c.mu
	c.wcond.L = &c.wmu
	c.work = make(chan *Stream)
	c.streams = make(map[uint32]*Stream)
	c.br = bufio.NewReaderSize(nc, 16<<10)
	c.rfr = http2.NewFramer(nil, c.br)
	c.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rfr.MaxHeaderListSize = s.maxHeaderList()
	c.rfr.SetMaxReadFrameSize(16384) // SETTINGS_MAX_FRAME_SIZE's default, which the server keeps
	c.rfr.SetReuseFrames()
	c.wfr = http2.NewFramer(&c.wbuf, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.sendWindow = initialWindow
	c.peerInitial = initialWindow
	c.peerMaxFrame = 16384
	c.recvWindow = initialWindow
	return c
}

// connWindow is our connection-level receive window once the first
// WINDOW_UPDATE raised it.
func (c *conn) connWindow() int64 { return max(4*int64(c.s.streamWindow()), initialWindow) }

var (
	errPreface = errors.New("h2: bad connection preface")
	errPanic   = errors.New("h2: panic serving the connection")
)

// panicked logs a recovered panic of a connection's or stream's goroutine.
func (s *Server) panicked(c *conn, v any) {
	if s.Log != nil {
		s.Log.Error("panic serving an HTTP/2 connection", "remote", c.remote, "panic", v, "stack", string(debug.Stack()))
	}
}

const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func (c *conn) serve() (err error) {
	defer c.close()
	defer func() {
		if v := recover(); v != nil {
			c.s.panicked(c, v)
			err = errPanic
		}
	}()
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.readHeader()))
	c.write(func() {
		_ = c.wfr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.maxStreams()},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.s.streamWindow())},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.s.maxHeaderList()},
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		)
		grant := c.connWindow() - initialWindow
		if grant > 0 {
			_ = c.wfr.WriteWindowUpdate(0, uint32(grant))
		}
		c.mu.Lock()
		c.recvWindow += grant
		c.mu.Unlock()
	})
	p, err := c.br.Peek(len(preface))
	if err != nil || string(p) != preface {
		c.s.protocolError()
		return errPreface
	}
	_, _ = c.br.Discard(len(preface))
	// The first frame must be SETTINGS.
	f, err := c.rfr.ReadFrame()
	if err != nil {
		return c.readFailed(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		c.s.protocolError()
		c.goAway(http2.ErrCodeProtocol)
		return errPreface
	}
	if err := c.processSettings(sf); err != nil {
		return c.connFailed(err)
	}
	c.armIdle()
	for {
		guarded, err := c.headerDeadline()
		if err != nil {
			return c.readFailed(err)
		}
		f, err := c.rfr.ReadFrame()
		if guarded && err == nil {
			c.headerDeadlineDone()
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			if err := c.headerStreamError(se); err != nil {
				return c.connFailed(err)
			}
			continue
		}
		if err != nil {
			return c.readFailed(err)
		}
		if err := c.process(f); err != nil {
			return c.connFailed(err)
		}
	}
}

// headerDeadline, before a frame is read, gives a header block that has
// not arrived whole ReadHeaderTimeout from its first byte: a HEADERS frame
// sent slowly, or one never followed by its CONTINUATION, would otherwise
// hold the reader until the idle timeout, and with other streams running
// for ever. A HEADERS frame with END_HEADERS that is buffered whole (the
// usual case) sets no deadline. It reports whether it set one.
func (c *conn) headerDeadline() (bool, error) {
	h, err := c.br.Peek(9)
	if err != nil {
		return false, err
	}
	typ := http2.FrameType(h[3])
	if typ != http2.FrameHeaders && typ != http2.FrameContinuation {
		return false, nil
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	if typ == http2.FrameHeaders && http2.Flags(h[4]).Has(http2.FlagHeadersEndHeaders) && c.br.Buffered() >= 9+n {
		return false, nil
	}
	c.mu.Lock()
	c.headerGuard = true
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.readHeader()))
	c.mu.Unlock()
	return true, nil
}

// headerDeadlineDone puts back the deadline headerDeadline replaced: the
// idle timeout without a stream running (the moment after a graceful
// GOAWAY when going away), none with one.
func (c *conn) headerDeadlineDone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.headerGuard = false
	switch {
	case c.goingAway && c.running == 0:
		c.closeSoon()
	case c.idleArmed:
		_ = c.nc.SetReadDeadline(time.Now().Add(c.s.idle()))
	default:
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}

// armIdle sets the idle deadline when no stream runs, or clears it; a
// header block's deadline stays (headerDeadlineDone puts the right one
// back).
func (c *conn) armIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armIdleLocked()
}

func (c *conn) armIdleLocked() {
	switch {
	case c.running == 0 && !c.idleArmed:
		c.idleArmed = true
		if !c.headerGuard {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.s.idle()))
		}
	case c.running > 0 && c.idleArmed:
		c.idleArmed = false
		if !c.headerGuard {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
	}
}

// readFailed ends the connection for a frame that could not be read.
func (c *conn) readFailed(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.s.protocolError()
		c.goAway(http2.ErrCodeFrameSize)
		return err
	case errors.As(err, &ne) && ne.Timeout():
		c.mu.Lock()
		idle := c.running == 0
		c.mu.Unlock()
		if idle { // the idle timeout, or the moment after a graceful GOAWAY
			c.goAwayGraceful()
		}
		return err
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		c.s.protocolError()
		c.goAway(http2.ErrCode(ce))
	}
	return err
}

// connFailed ends the connection for an error process reported.
func (c *conn) connFailed(err error) error {
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		c.s.protocolError()
		c.goAway(http2.ErrCode(ce))
	}
	return err
}

// close tears the connection down: every stream still open is reset
// (its handler sees its client gone).
func (c *conn) close() {
	c.mu.Lock()
	c.dead = true
	for _, st := range c.streams {
		st.cancelLocked()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	close(c.work) // no more streams: the idle stream goroutines end
	// A last flush, for a GOAWAY already buffered.
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
	c.nc.Close()
}

// goAway sends GOAWAY with code and stops taking streams.
func (c *conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	c.goingAway = true
	last := c.maxStreamID
	c.mu.Unlock()
	c.write(func() { _ = c.wfr.WriteGoAway(last, code, nil) })
}

// drainPing is the payload of the PING that times a shutdown's two
// GOAWAY frames.
var drainPing = [8]byte{'g', 'o', 'a', 'w', 'a', 'y', '?', 0}

// drainRTT bounds the wait for drainPing's acknowledgement.
const drainRTT = time.Second

// startDrain begins a graceful shutdown of the connection as RFC 9113
// §6.8 advises: a first GOAWAY with the largest stream id tells the client
// to open no more streams while the streams already on their way are still
// served; after a round trip (the acknowledgement of a PING sent with it,
// or drainRTT) goAwayGraceful sends the real last stream id. A single
// GOAWAY would refuse the streams the client opened while it was in
// flight, which a client sees as failed requests.
func (c *conn) startDrain() {
	c.mu.Lock()
	if c.goingAway || c.draining || c.dead {
		c.mu.Unlock()
		return
	}
	c.draining = true
	c.mu.Unlock()
	c.write(func() {
		_ = c.wfr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil)
		_ = c.wfr.WritePing(false, drainPing)
	})
	time.AfterFunc(drainRTT, c.goAwayGraceful)
}

// goAwayGraceful sends GOAWAY NO_ERROR with the last stream id once; the
// connection closes when its last stream ends (at once when it has none).
func (c *conn) goAwayGraceful() {
	c.mu.Lock()
	if c.goingAway || c.dead {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.maxStreamID
	idle := c.running == 0
	c.mu.Unlock()
	c.write(func() { _ = c.wfr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	if idle {
		c.closeSoon()
	}
}

// closeSoon closes a connection that went away and has no stream left,
// after a moment for the client to read the GOAWAY.
func (c *conn) closeSoon() {
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
}

// write runs fn, which appends frames through wfr, under the write lock.
// Writes are group-committed: when no flush runs, the writer becomes the
// flusher and writes the buffer to the connection, without the lock, then
// again what other streams appended meanwhile, until nothing is left; when
// one runs, the frames go with its next write. A writer waits only while
// more than maxPending bytes are pending (a client that does not read).
func (c *conn) write(fn func()) error {
	c.wmu.Lock()
	for c.flushing && len(c.wbuf.b) >= maxPending && c.werr == nil {
		c.wcond.Wait()
	}
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	fn()
	if c.flushing {
		c.wmu.Unlock()
		return nil
	}
	c.flushing = true
	c.flushAll()
	c.flushing = false
	err := c.werr
	c.wcond.Broadcast()
	c.wmu.Unlock()
	return err
}

// maxPending bounds the bytes waiting behind a flush.
const maxPending = 1 << 20

// flushAll writes the buffer until it is empty; wmu held, released while
// writing.
func (c *conn) flushAll() {
	for len(c.wbuf.b) > 0 && c.werr == nil {
		c.wmu.Unlock()
		runtime.Gosched() // the streams ready to write join this write
		c.wmu.Lock()
		buf := c.wbuf.b
		c.wbuf.b = c.spare[:0]
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.stall()))
		n, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.wdone += int64(n)
		if cap(buf) <= 64<<10 { // a burst's large buffer is not kept
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		if err != nil {
			c.werr = err
			c.nc.Close() // the reader ends, and with it every stream
		}
		c.wcond.Broadcast()
	}
	if c.werr != nil {
		c.wbuf.b = c.wbuf.b[:0]
	}
}

// flushLocked writes what is pending, for the last GOAWAY; wmu held.
func (c *conn) flushLocked() {
	for c.flushing {
		c.wcond.Wait()
	}
	c.flushing = true
	c.flushAll()
	c.flushing = false
	c.wcond.Broadcast()
}

// writeHeaderBlock writes an encoded header block as HEADERS and as many
// CONTINUATION frames as the client's frame size needs. Under wmu.
func (c *conn) writeHeaderBlock(id uint32, block []byte, end bool, maxFrame uint32) {
	first := true
	for first || len(block) > 0 {
		n := min(len(block), int(maxFrame))
		frag := block[:n]
		block = block[n:]
		if first {
			_ = c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			_ = c.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
}

// resetStream sends RST_STREAM.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.write(func() { _ = c.wfr.WriteRSTStream(id, code) })
}
