//go:build unix && !(linux && (amd64 || arm64))

package h1

import "syscall"

// Elsewhere the calls go through package syscall (see sys_raw.go).

func sysRead(fd int, p []byte) (int, error)  { return syscall.Read(fd, p) }
func sysWrite(fd int, p []byte) (int, error) { return syscall.Write(fd, p) }

func sysPeek(fd int, p []byte) (int, error) {
	n, _, err := syscall.Recvfrom(fd, p, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}
