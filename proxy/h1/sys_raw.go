//go:build linux && (amd64 || arm64)

package h1

import (
	"syscall"
	"unsafe"
)

// The codec's reads, writes and peeks on its sockets are raw system calls.
// syscall.Read and syscall.Write tell the scheduler that the call may block
// (entersyscall): a P that stays in a call for one sysmon tick (20 µs; a
// loopback write runs the receiver's TCP stack too and often takes that
// long) is taken from its thread and handed to another one, a wake-up
// through a futex, and while sysmon keeps finding such Ps it polls every
// 20 µs instead of backing off to 10 ms. On a socket in non-blocking mode
// (all of Go's network sockets) these calls never block: waiting is the
// poller's job (RawConn.Read and Write).
//
// The calls are recvfrom(2) and sendto(2) without an address, which on a
// connected socket do what read(2) and write(2) do, past the file layer
// (vfs_read, vfs_write and their checks: a few percent of the proxy's CPU
// in a profile under wrk); MSG_NOSIGNAL spares the process a SIGPIPE that
// Go ignores on a socket anyway (the call fails with EPIPE either way).

func sysRead(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)), 0, 0, 0)
	return result(r, e)
}

func sysWrite(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	return result(r, e)
}

// sysPeek looks at the next byte without taking it and without blocking.
func sysPeek(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return result(r, e)
}

func bufPtr(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Pointer(&p[0])
}

// result is what syscall.Read returns: -1 and the errno on failure (an
// Errno below 256 converts to an error without allocating).
func result(r uintptr, e syscall.Errno) (int, error) {
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
