package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Group commit. Every audit write must be durable (synchronous=FULL), and
// a durable commit costs one fsync. SQLite has no group commit of its own,
// so each process runs one writer goroutine that gathers the writes queued
// while the previous commit was syncing and commits them together in one
// BEGIN IMMEDIATE transaction: one fsync for the batch. Each write runs in
// its own SAVEPOINT, so one write's failure (a duplicate idempotency key, a
// lost race) rolls back only that write. Across processes the IMMEDIATE
// transaction still serializes everything: the chain head, limit counters
// and action states are read and written under SQLite's write lock.

// maxBatch bounds how many writes share one commit.
const maxBatch = 128

type writeReq struct {
	fn   func(tx *sql.Tx) error
	done chan error
}

// errClosed is returned for writes after Close.
var errClosed = errors.New("storage: database is closed")

func (db *DB) startWriter() {
	db.writes = make(chan writeReq, maxBatch)
	db.writerDone = make(chan struct{})
	go func() {
		defer close(db.writerDone)
		for first := range db.writes {
			batch := []writeReq{first}
		gather:
			for len(batch) < maxBatch {
				select {
				case r, ok := <-db.writes:
					if !ok {
						break gather
					}
					batch = append(batch, r)
				default:
					break gather
				}
			}
			db.commitBatch(batch)
		}
	}()
}

// commitBatch runs a batch in one transaction and answers every write.
func (db *DB) commitBatch(batch []writeReq) {
	errs := make([]error, len(batch))
	fail := func(err error) {
		for _, r := range batch {
			r.done <- err
		}
	}
	// The batch belongs to many callers, so no one caller's context may
	// cancel it; the busy timeout in the DSN bounds the wait for the lock.
	ctx := context.Background()
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		fail(unavailable("begin", err))
		return
	}
	defer tx.Rollback()
	for i, r := range batch {
		sp := fmt.Sprintf("w%d", i)
		if _, err := tx.ExecContext(ctx, "SAVEPOINT "+sp); err != nil {
			fail(unavailable("savepoint", err))
			return
		}
		if errs[i] = r.fn(tx); errs[i] != nil {
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO "+sp); err != nil {
				fail(unavailable("rollback to savepoint", err))
				return
			}
		}
		if _, err := tx.ExecContext(ctx, "RELEASE "+sp); err != nil {
			fail(unavailable("release savepoint", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(unavailable("commit", err))
		return
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// write runs fn inside a durable write transaction that it may share with
// other writes of this process, and returns fn's error, or the commit's.
// fn must do all its reads of shared state (chain head, usage, statuses)
// through tx.
func (db *DB) write(fn func(tx *sql.Tx) error) (err error) {
	r := writeReq{fn: fn, done: make(chan error, 1)}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return unavailable("write", errClosed)
	}
	db.writes <- r
	db.closeMu.RUnlock()
	return <-r.done
}
