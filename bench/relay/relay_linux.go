//go:build linux

package main

import (
	"net"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// loops are the epoll mode's event loops, one per core (GOMAXPROCS), each
// on a locked thread with an epoll set of its own. A pair's descriptors
// are duplicated out of Go's poller, so only its loop waits on them.
type loops struct {
	all  []*loop
	next atomic.Uint32
}

type loop struct {
	ep  int
	buf []byte
}

func startLoops() (*loops, error) {
	ls := &loops{}
	for range runtime.GOMAXPROCS(0) {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return nil, err
		}
		l := &loop{ep: ep, buf: make([]byte, 16<<10)}
		ls.all = append(ls.all, l)
		go l.run()
	}
	return ls, nil
}

// add moves c and up into the next loop.
func (ls *loops) add(c, up *net.TCPConn) {
	l := ls.all[int(ls.next.Add(1))%len(ls.all)]
	a, errA := detach(c)
	b, errB := detach(up)
	if errA != nil || errB != nil {
		for _, fd := range []int{a, b} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		return
	}
	// Each descriptor's event carries its peer (Pad), so the loop keeps
	// no table.
	for _, p := range [][2]int{{a, b}, {b, a}} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(p[0]), Pad: int32(p[1])}
		if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, p[0], &ev); err != nil {
			unix.Close(a)
			unix.Close(b)
			return
		}
	}
}

// detach returns a non-blocking duplicate of c's descriptor and closes c.
func detach(c *net.TCPConn) (int, error) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	unix.CloseOnExec(fd)
	return fd, unix.SetNonblock(fd, true)
}

func (l *loop) run() {
	runtime.LockOSThread()
	evs := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(l.ep, evs, -1)
		if err != nil {
			continue // EINTR
		}
		for i := range evs[:n] {
			l.ready(int(evs[i].Fd), int(evs[i].Pad))
		}
	}
}

// ready moves what fd holds to its peer; at the end of either side, or on
// an error, both are closed (the harness's clients and backend use
// keep-alive and never half-close).
func (l *loop) ready(fd, peer int) {
	for {
		n, err := unix.Read(fd, l.buf)
		switch {
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case err != nil || n == 0:
			l.close(fd, peer)
			return
		}
		if !writeAll(peer, l.buf[:n]) {
			l.close(fd, peer)
			return
		}
		if n < len(l.buf) {
			return // level-triggered: anything left comes as another event
		}
	}
}

func (l *loop) close(a, b int) {
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, a, nil)
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, b, nil)
	unix.Close(a)
	unix.Close(b)
}

// writeAll writes p to fd, waiting with poll(2) when its buffer is full.
func writeAll(fd int, p []byte) bool {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		switch {
		case err == unix.EAGAIN:
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, 1000); err != nil && err != unix.EINTR {
				return false
			}
		case err == unix.EINTR:
		case err != nil:
			return false
		default:
			p = p[n:]
		}
	}
	return true
}
