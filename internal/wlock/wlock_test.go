//go:build unix

package wlock

import (
	"path/filepath"
	"testing"
)

// TestQueue checks that two handles on one file (as two processes have)
// exclude each other, and that Unlock hands the turn over.
func TestQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	a, b := Open(path), Open(path)
	defer a.Close()
	defer b.Close()
	if !a.Lock() {
		t.Fatal("a: Lock on a free file did not take it")
	}
	if try(b.f.Fd()) {
		t.Fatal("b took the lock while a held it")
	}
	got := make(chan bool)
	go func() { got <- b.Lock() }()
	a.Unlock(true)
	if !<-got {
		t.Fatal("b: Lock did not take the lock a gave back")
	}
	if try(a.f.Fd()) {
		t.Fatal("a took the lock while b held it")
	}
	b.Unlock(true)
	if !try(a.f.Fd()) {
		t.Fatal("a could not take the lock after b gave it back")
	}
}

// TestUnusable checks that a queue file that cannot be created leaves Lock a
// no-op rather than an error: SQLite's busy handler still serializes.
func TestUnusable(t *testing.T) {
	l := Open(filepath.Join(t.TempDir(), "missing-dir", "mandate.db"))
	if l.Lock() {
		t.Fatal("Lock reported holding a lock on a file it could not open")
	}
	l.Unlock(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
