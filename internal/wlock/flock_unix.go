//go:build unix

package wlock

import (
	"errors"
	"syscall"
)

const supported = true

func try(fd uintptr) bool {
	return syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

func block(fd uintptr) bool {
	for {
		err := syscall.Flock(int(fd), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err == nil
		}
	}
}

func unlock(fd uintptr) {
	syscall.Flock(int(fd), syscall.LOCK_UN)
}
