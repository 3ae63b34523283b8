//go:build unix

package state

import (
	"errors"
	"os"
	"syscall"
)

// flock takes an exclusive lock on f without waiting; ErrInUse when
// another open file holds it.
func flock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lockErr error
	if err := rc.Control(func(fd uintptr) {
		lockErr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
	}); err != nil {
		return err
	}
	if errors.Is(lockErr, syscall.EWOULDBLOCK) {
		return ErrInUse
	}
	return lockErr
}
