package h1

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// hungUp reports whether the peer of a socket shut down its side (or the
// socket failed), even with bytes still unread: POLLRDHUP.
func hungUp(rc syscall.RawConn) bool {
	gone := false
	err := rc.Control(func(fd uintptr) {
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds[:], 0)
		gone = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
	})
	return err != nil || gone
}
