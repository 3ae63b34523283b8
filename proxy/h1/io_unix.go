//go:build unix

package h1

import "syscall"

// initRaw binds the poller callbacks of a connection that has a RawConn:
// waits then hold no buffer, and a pooled connection can be peeked at.
func (cr *connReader) initRaw() {
	if sc, ok := cr.nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cr.rc = rc
			cr.readFn = cr.readReady
			cr.peekFn = cr.peek
		}
	}
}

// readReady is the RawConn.Read callback: it reads when bytes are there and
// holds no buffer when they are not.
func (cr *connReader) readReady(fd uintptr) bool {
	if cr.buf == nil {
		cr.buf = cr.take()
	}
	for {
		cr.rn, cr.rerr = sysRead(int(fd), cr.buf)
		if cr.rerr != syscall.EINTR {
			break
		}
	}
	if cr.rerr == syscall.EAGAIN {
		cr.give(cr.buf)
		cr.buf = nil
		return false
	}
	return true
}

// peek is the RawConn callback of peekState: one non-blocking look at the
// socket that consumes nothing.
func (cr *connReader) peek(fd uintptr) bool {
	n, err := sysPeek(int(fd), cr.one[:])
	switch {
	case err == syscall.EAGAIN:
		cr.peeked = peekNothing
	case err == nil && n > 0:
		cr.peeked = peekData
	default: // EOF or an error
		cr.peeked = peekClosed
	}
	return true
}

// peekConn is peek for a goroutine that does not own the connection's
// reader: the client of a request that waits for an instance. It goes
// through Control, not Read, so the read deadline of the client's idle
// wait, which may have passed while the request waits (a parkable
// connection's is short), does not make the look fail.
func peekConn(rc syscall.RawConn) peekResult {
	if rc == nil {
		return peekUnknown
	}
	res := peekUnknown
	var one [1]byte
	err := rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN:
			res = peekNothing
		case err == nil && n > 0:
			res = peekData
		default:
			res = peekClosed
		}
	})
	if err != nil {
		return peekClosed
	}
	return res
}
