//go:build linux

package h1

import (
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// A splicer moves a body between two TCP sockets with splice(2) through a
// pipe: the bytes go from one socket's receive queue to the other's send
// queue without being copied to user space. Its waits go through Go's
// poller (syscall.RawConn), so the sockets' deadlines apply as to a Read
// or Write, and a failure is known to be the source's (drain) or the
// destination's (pump).
type splicer struct {
	src, dst syscall.RawConn
	pr, pw   int // the pipe's read and write ends
	inPipe   int // bytes drained and not yet pumped
	want     int // the most the next drain moves
	n        int
	err      error
	drainFn  func(fd uintptr) bool
	pumpFn   func(fd uintptr) bool
	// waits, when set, is dst's reader, told when a pump waits for room
	// and when it moves (connReader.writeWaits).
	waits *connReader
}

// newSplicer returns a splicer from src to dst, or nil when they are not
// both plain TCP connections (a *tls.Conn or any other wrapper must see
// its bytes) or no pipe can be had.
func newSplicer(src, dst net.Conn) *splicer {
	s, ok1 := src.(*net.TCPConn)
	d, ok2 := dst.(*net.TCPConn)
	if !ok1 || !ok2 {
		return nil
	}
	rs, err1 := s.SyscallConn()
	rd, err2 := d.SyscallConn()
	if err1 != nil || err2 != nil {
		return nil
	}
	var p [2]int
	if unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil {
		return nil
	}
	// A pipe as large as one drain; a smaller one (the limit is
	// /proc/sys/fs/pipe-max-size) only costs more calls.
	_, _ = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, spliceMax)
	unpaceLoopback(rd, d.RemoteAddr()) // pacing_linux.go
	sp := &splicer{src: rs, dst: rd, pr: p[0], pw: p[1]}
	sp.drainFn, sp.pumpFn = sp.drainReady, sp.pumpReady
	return sp
}

// close closes the pipe, with whatever it still holds.
func (sp *splicer) close() {
	_ = unix.Close(sp.pr)
	_ = unix.Close(sp.pw)
}

// drain moves up to max bytes from the source into the pipe, which must be
// empty, waiting for the source as a Read does. 0 bytes and a nil error:
// the source is at EOF.
func (sp *splicer) drain(max int) (int, error) {
	sp.want, sp.n, sp.err = max, 0, nil
	if err := sp.src.Read(sp.drainFn); err != nil {
		return 0, err
	}
	if sp.err != nil {
		return 0, sp.err
	}
	sp.inPipe = sp.n
	return sp.n, nil
}

func (sp *splicer) drainReady(fd uintptr) bool {
	for {
		n, err := unix.Splice(int(fd), nil, sp.pw, nil, sp.want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN: // the pipe is empty: the socket has nothing yet
			return false
		}
		sp.n, sp.err = int(n), err
		return true
	}
}

// pump moves what the pipe holds to the destination, waiting for it as a
// Write does. It returns the bytes moved; an error leaves the rest in the
// pipe (sp.inPipe).
func (sp *splicer) pump() (int, error) {
	sp.n, sp.err = 0, nil
	err := sp.dst.Write(sp.pumpFn)
	if err == nil {
		err = sp.err
	}
	return sp.n, err
}

func (sp *splicer) pumpReady(fd uintptr) bool {
	for sp.inPipe > 0 {
		n, err := unix.Splice(sp.pr, nil, int(fd), nil, sp.inPipe, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if n > 0 {
			sp.inPipe -= int(n)
			sp.n += int(n)
			if sp.waits != nil {
				sp.waits.writeMoved()
			}
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN: // the socket's send queue is full
			if sp.waits != nil {
				sp.waits.writeWaits()
			}
			return false
		case nil:
			err = io.ErrNoProgress
		}
		sp.err = err
		return true
	}
	return true
}
