package h1

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffer sizes of the fast path. A client connection holds a read buffer
// only while a request is arriving or being served and a write buffer only
// while a response is being written; an idle keep-alive connection holds
// neither.
const (
	clientBufSize   = 8 << 10         // request head limit of the fast path; larger heads go to net/http
	upstreamBufSize = MaxResponseHead // an instance connection's read buffer holds a whole head
)

// MaxResponseHead is the largest response head an instance may send
// (nginx's default is 4–8 KiB); a larger one is the instance's fault, a
// 502. The net/http path's Transport keeps to it too.
const MaxResponseHead = 16 << 10

// ErrResponseHeadTooLarge is an instance's answer head larger than
// MaxResponseHead.
var ErrResponseHeadTooLarge = errors.New("response head larger than 16 KiB")

// bufPool lends fixed-size byte slices. Pointers to arrays go in and out of
// the sync.Pool, so neither Get nor Put allocates.
type bufPool[T any] struct{ p sync.Pool }

func (bp *bufPool[T]) get() *T {
	if v, _ := bp.p.Get().(*T); v != nil {
		return v
	}
	return new(T)
}

func (bp *bufPool[T]) put(b *T) { bp.p.Put(b) }

type (
	clientBuf   = [clientBufSize]byte
	upstreamBuf = [upstreamBufSize]byte
)

// Buffers are the pools one front end's connections share: the client
// connections of a Server and the instance connections of its Upstreams.
type Buffers struct {
	client   bufPool[clientBuf]
	upstream bufPool[upstreamBuf]
}

var errBufferFull = errors.New("proxy: head larger than the read buffer")

// connReader is a read buffer over a connection that gives its memory back
// while the connection waits: waitData parks on the poller with no buffer
// and takes one only when bytes have arrived.
type connReader struct {
	nc   net.Conn
	rc   syscall.RawConn // nil when the connection has none or the system lacks the calls: waits hold the buffer
	buf  []byte          // nil while released
	r, w int
	take func() []byte
	give func([]byte)

	// The poller callback and its results, kept here so a wait allocates
	// nothing.
	readFn func(fd uintptr) bool
	rn     int
	rerr   error

	peekFn func(fd uintptr) bool
	peeked peekResult
	one    [1]byte

	// onWait, when set, is called by a read through the RawConn that found
	// nothing, before it waits for the poller (once per read; waited then
	// reports it): a deadline set there bounds the wait alone, and a read
	// that finds bytes at once sets none (UpConn.fillBody).
	onWait func()
	waited bool

	// read and write through the RawConn (rawio_unix.go): the callbacks,
	// bound on first use, and their arguments and results.
	fillFn, writeFn func(fd uintptr) bool
	rp, wp          []byte
	wn              int
	werr            error

	// sendFill's callback and its state.
	sendFillFn  func(fd uintptr) bool
	sendCheck   bool // look at the socket before writing wp
	sendStale   bool // the look found it closed or holding bytes
	staleClosed bool // and found it closed (not holding bytes)

	// A write waiting for room in the socket's send buffer: since when
	// (unix nanoseconds; 0: none), for the Server's watch over clients
	// that stop reading their answer (Server.ClientSendTimeout). blocked
	// is the writer's own copy, so that a write that did not wait costs
	// no atomic operation.
	blockedAt atomic.Int64
	blocked   bool
}

// writeWaits records that a write waits for room in the socket's buffer.
func (cr *connReader) writeWaits() {
	if !cr.blocked {
		cr.blocked = true
		cr.blockedAt.Store(time.Now().UnixNano())
	}
}

// writeMoved records that a write made progress.
func (cr *connReader) writeMoved() {
	if cr.blocked {
		cr.blocked = false
		cr.blockedAt.Store(0)
	}
}

// peekResult is what a non-blocking look at a socket found.
type peekResult uint8

const (
	peekUnknown peekResult = iota // no raw access on this system or connection
	peekNothing                   // open, nothing to read
	peekData                      // bytes are waiting
	peekClosed                    // EOF or an error
)

// IdleOpen reports whether an idle connection, seen through rc, looks
// usable: open and with nothing sent by the peer (one non-blocking look
// that consumes nothing; true when rc is nil or the system gives no raw
// access). One the peer closed, idle for idleFor, teaches l. For
// connection pools outside this package.
func IdleOpen(rc syscall.RawConn, idleFor time.Duration, l *IdleLimit) bool {
	switch peekConn(rc) {
	case peekNothing, peekUnknown:
		return true
	case peekClosed:
		l.ClosedAfter(idleFor)
	}
	return false
}

// peekState looks at the socket without reading or blocking. Bytes already
// buffered are not looked at.
func (cr *connReader) peekState() peekResult {
	if cr.rc == nil || cr.peekFn == nil {
		return peekUnknown
	}
	cr.peeked = peekUnknown
	if cr.rc.Read(cr.peekFn) != nil {
		return peekClosed
	}
	return cr.peeked
}

func newConnReader(nc net.Conn, take func() []byte, give func([]byte)) *connReader {
	cr := &connReader{nc: nc, take: take, give: give}
	cr.initRaw()
	return cr
}

func (cr *connReader) buffered() int { return cr.w - cr.r }

func (cr *connReader) bytes() []byte { return cr.buf[cr.r:cr.w] }

func (cr *connReader) discard(n int) {
	cr.r += n
	if cr.r == cr.w {
		cr.r, cr.w = 0, 0
	}
}

// release gives the buffer back; only when nothing is buffered.
func (cr *connReader) release() {
	if cr.buf != nil && cr.r == cr.w {
		cr.give(cr.buf)
		cr.buf, cr.r, cr.w = nil, 0, 0
	}
}

// waitData blocks until the connection has bytes to read (or fails) and
// reads them. Nothing may be buffered. Without a RawConn it reads into a
// buffer taken before blocking.
func (cr *connReader) waitData() error {
	if cr.rc == nil {
		if cr.buf == nil {
			cr.buf = cr.take()
		}
		return cr.fill()
	}
	cr.rn, cr.rerr = 0, nil
	if err := cr.rc.Read(cr.readFn); err != nil {
		return err
	}
	if cr.rerr != nil {
		return cr.rerr
	}
	if cr.rn <= 0 {
		return io.EOF
	}
	cr.r, cr.w = 0, cr.rn
	return nil
}

// fill reads more bytes after what is buffered, moving the buffered bytes
// to the front first when the buffer's end is reached. errBufferFull when
// there is no room.
func (cr *connReader) fill() error {
	if cr.buf == nil {
		cr.buf = cr.take()
	}
	if cr.w == len(cr.buf) {
		if cr.r == 0 {
			return errBufferFull
		}
		cr.w = copy(cr.buf, cr.buf[cr.r:cr.w])
		cr.r = 0
	}
	n, err := cr.read(cr.buf[cr.w:])
	cr.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// read is nc.Read, done with a raw read(2) through the RawConn when the
// connection has one (see sys_raw.go). Its errors are net.Conn.Read's.
func (cr *connReader) read(p []byte) (int, error) {
	if cr.rc == nil {
		return cr.nc.Read(p)
	}
	if cr.fillFn == nil {
		cr.fillFn = cr.readSome
	}
	cr.rp, cr.rn, cr.rerr = p, 0, nil
	err := cr.rc.Read(cr.fillFn)
	cr.rp = nil
	if err == nil {
		err = cr.rerr
	}
	switch {
	case err != nil:
		return 0, connError("read", cr.nc, err)
	case cr.rn == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return cr.rn, nil
}

// sendFill writes p, a request, and reads the first bytes of its answer,
// on a connection with a RawConn and nothing buffered. The write is done
// inside the read's wait: the poller's readiness is reset when the wait
// begins, so an answer that comes after the write is not missed, and the
// read that would find nothing right after the write is not made. With
// check, a pooled connection not looked at yet, one read comes first: it
// must find nothing (EAGAIN), else ErrStaleConn and nothing is written.
// Errors are fill's, and write's for the write.
func (cr *connReader) sendFill(p []byte, check bool) error {
	if cr.buf == nil {
		cr.buf = cr.take()
	}
	if cr.sendFillFn == nil {
		cr.sendFillFn = cr.sendSome
	}
	cr.wp, cr.wn, cr.werr = p, 0, nil
	cr.sendCheck, cr.sendStale = check, false
	cr.rp, cr.rn, cr.rerr = cr.buf[cr.w:], 0, nil
	err := cr.rc.Read(cr.sendFillFn)
	rest := cr.wp // not nil: the socket took only part of the request
	if rest != nil {
		rest = rest[cr.wn:]
	}
	cr.rp, cr.wp = nil, nil
	switch {
	case cr.sendStale:
		return ErrStaleConn
	case cr.werr != nil:
		return connError("write", cr.nc, cr.werr)
	case err == nil && rest != nil:
		if _, err := cr.write(rest); err != nil {
			return err
		}
		return cr.fill()
	case err == nil:
		err = cr.rerr
	}
	switch {
	case err != nil:
		return connError("read", cr.nc, err)
	case cr.rn == 0:
		return io.EOF
	}
	cr.w += cr.rn
	return nil
}

// write is nc.Write, done with raw write(2) calls through the RawConn when
// the connection has one. Its errors are net.Conn.Write's.
func (cr *connReader) write(p []byte) (int, error) {
	if cr.rc == nil {
		// No raw access (TLS): every write counts as waiting until it
		// returns.
		cr.writeWaits()
		n, err := cr.nc.Write(p)
		cr.writeMoved()
		return n, err
	}
	if cr.writeFn == nil {
		cr.writeFn = cr.writeSome
	}
	cr.wp, cr.wn, cr.werr = p, 0, nil
	err := cr.rc.Write(cr.writeFn)
	cr.wp = nil
	if err == nil {
		err = cr.werr
	}
	if err != nil {
		return cr.wn, connError("write", cr.nc, err)
	}
	return cr.wn, nil
}

// connError is err as net.Conn's Read and Write report it: a *net.OpError
// of op (RawConn's own errors say "raw-read" and "raw-write").
func connError(op string, nc net.Conn, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: nc.LocalAddr().Network(), Source: nc.LocalAddr(), Addr: nc.RemoteAddr(), Err: err}
}

// outBuf batches what goes to a connection so a small response leaves in
// one write.
type outBuf struct {
	nc  net.Conn
	cr  *connReader // nc's reader, which writes raw (nil: nc.Write)
	b   []byte      // len is what is pending; nil while released
	err error
}

func (o *outBuf) send(p []byte) {
	if o.cr != nil {
		_, o.err = o.cr.write(p)
		return
	}
	_, o.err = o.nc.Write(p)
}

func (o *outBuf) pending() int { return len(o.b) }

func (o *outBuf) write(p []byte) {
	if o.err != nil {
		return
	}
	if len(o.b)+len(p) > cap(o.b) {
		o.flush()
		if len(p) > cap(o.b) {
			o.send(p)
			return
		}
	}
	o.b = append(o.b, p...)
}

func (o *outBuf) writeString(s string) {
	if o.err != nil {
		return
	}
	if len(o.b)+len(s) > cap(o.b) {
		o.flush()
		if len(s) > cap(o.b) {
			_, o.err = io.WriteString(o.nc, s)
			return
		}
	}
	o.b = append(o.b, s...)
}

func (o *outBuf) flush() {
	if o.err == nil && len(o.b) > 0 {
		o.send(o.b)
	}
	o.b = o.b[:0]
}

// writeCode writes a three-digit status code and a space.
func (o *outBuf) writeCode(code int) {
	if o.err != nil {
		return
	}
	if len(o.b)+4 > cap(o.b) {
		o.flush()
	}
	o.b = append(o.b, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10), ' ')
}
