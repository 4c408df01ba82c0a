// Package wlock is a wait queue for SQLite writers in several processes.
//
// SQLite serializes writers across processes with its own lock, and a writer
// that finds it taken waits in the busy handler, which sleeps 1, 2, 5, 10, 15,
// 20, 25… ms between tries: with four `mandate serve` processes on one
// database most of a writer's time went to sleeping long after the lock was
// free. A Lock is an exclusive flock(2) on a file next to the database, taken
// just before BEGIN IMMEDIATE and released just after COMMIT: a waiter blocks
// in the kernel and wakes the moment the holder lets go.
//
// It only orders the waiters; it guards nothing. Correctness still rests on
// the BEGIN IMMEDIATE transaction, so a process that does not take the Lock
// (an older binary, a platform without flock, a file that cannot be
// created) is still serialized by SQLite, only less promptly. The kernel
// drops the lock of a killed process, and a wait is bounded, so a stopped
// holder costs the others at most Wait before they fall back to SQLite's
// busy handler and its timeout.
package wlock

import (
	"os"
	"sync"
	"time"
)

// Wait bounds how long Lock blocks for another process before giving up the
// queue and letting SQLite's busy handler wait instead.
const Wait = 2 * time.Second

// Lock is the write queue for one database file. Its methods must not be
// called concurrently: each process has one writer per database.
type Lock struct {
	f *os.File // nil: no queue, SQLite's busy handler alone
}

// Open opens (creating it if needed) the queue file path+"-wlock" for the
// database at path. It never fails: without the file, Lock does nothing.
func Open(path string) *Lock {
	if !supported {
		return &Lock{}
	}
	// Like SQLite's -wal and -shm files, it gets the database file's
	// permissions, so every user who may write the database may queue.
	perm := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	f, err := os.OpenFile(path+"-wlock", os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return &Lock{}
	}
	return &Lock{f: f}
}

// Lock waits, up to Wait, for this process's turn to write. It reports
// whether it holds the lock; Unlock must follow either way.
func (l *Lock) Lock() bool {
	if l == nil || l.f == nil {
		return false
	}
	fd := l.f.Fd()
	if try(fd) {
		return true
	}
	// Block in the kernel on a helper goroutine, so the wait can be bounded.
	var (
		mu        sync.Mutex
		abandoned bool
		got       = make(chan bool, 1)
	)
	go func() {
		ok := block(fd)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if ok {
				unlock(fd)
			}
			return
		}
		got <- ok
	}()
	t := time.NewTimer(Wait)
	defer t.Stop()
	select {
	case ok := <-got:
		return ok
	case <-t.C:
		mu.Lock()
		defer mu.Unlock()
		select {
		case ok := <-got:
			return ok
		default:
			abandoned = true
			return false
		}
	}
}

// Unlock lets the next process write; held is what Lock returned.
func (l *Lock) Unlock(held bool) {
	if held && l != nil && l.f != nil {
		unlock(l.f.Fd())
	}
}

// Close closes the queue file, which releases the lock if held.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
