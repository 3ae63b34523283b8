//go:build unix

package h1

import (
	"io"
	"os"
	"syscall"
)

// readSome is the RawConn.Read callback of connReader.read: one read into
// cr.rp, or false (wait for the poller) when nothing is there, first
// calling cr.onWait, once per read, when set.
func (cr *connReader) readSome(fd uintptr) bool {
	for {
		cr.rn, cr.rerr = sysRead(int(fd), cr.rp)
		if cr.rerr != syscall.EINTR {
			break
		}
	}
	switch cr.rerr {
	case nil:
		return true
	case syscall.EAGAIN:
		cr.rn, cr.rerr = 0, nil
		if cr.onWait != nil && !cr.waited {
			cr.waited = true
			cr.onWait()
		}
		return false
	}
	cr.rn, cr.rerr = 0, os.NewSyscallError("read", cr.rerr)
	return true
}

// writeSome is the RawConn.Write callback of connReader.write: it writes
// what is left of cr.wp, or returns false (wait for the poller) when the
// socket's buffer is full.
func (cr *connReader) writeSome(fd uintptr) bool {
	for cr.wn < len(cr.wp) {
		n, err := sysWrite(int(fd), cr.wp[cr.wn:])
		switch {
		case err == nil && n > 0:
			cr.wn += n
			cr.writeMoved()
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			cr.writeWaits()
			return false
		case err == nil:
			cr.werr = io.ErrUnexpectedEOF // as internal/poll reports a write of nothing
			return true
		default:
			cr.werr = os.NewSyscallError("write", err)
			return true
		}
	}
	return true
}

// sendSome is the RawConn.Read callback of connReader.sendFill. Its first
// call looks at the socket when asked to (one read that must find
// nothing) and writes the request; it returns false, to wait for the
// answer, once all of it is written, true (the caller writes the rest)
// when the socket takes only part of it. Later calls read the answer.
func (cr *connReader) sendSome(fd uintptr) bool {
	if cr.wp == nil {
		return cr.readSome(fd)
	}
	if cr.sendCheck {
		cr.sendCheck = false
		var n int
		var err error
		for {
			n, err = sysRead(int(fd), cr.rp)
			if err != syscall.EINTR {
				break
			}
		}
		if err != syscall.EAGAIN { // bytes nobody asked for, the end, or an error
			cr.sendStale, cr.staleClosed = true, n <= 0
			return true
		}
	}
	if !cr.writeSome(fd) || cr.werr != nil {
		return true // the socket is full (the caller writes the rest), or the write failed
	}
	cr.wp = nil
	return false
}
