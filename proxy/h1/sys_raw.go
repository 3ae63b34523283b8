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

func sysRead(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	return result(r, e)
}

func sysWrite(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
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
