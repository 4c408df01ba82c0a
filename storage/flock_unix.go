//go:build unix

package storage

import "syscall"

// flockSupported says whether lookup journals can be told from their
// processes' lifetimes (journal.go).
const flockSupported = true

// tryFlock takes an exclusive flock on fd without waiting; the kernel
// drops it when the process dies.
func tryFlock(fd uintptr) bool {
	return syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
