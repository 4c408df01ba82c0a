package storage

import (
	"context"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// Write-behind. Two kinds of record need not hold up the answer to the
// agent at all, not even for a commit without an fsync (see "Deferred
// durability" in writer.go):
//
//   - an action's outcome: the backend has acted and answered; if the
//     outcome is never recorded (the process is killed, the write fails),
//     the action stays executing and recovery asks the backend by its
//     idempotency key and records what happened, exactly once;
//   - the record of an allowed lookup: it changes nothing.
//
// They are queued to this process's writer like any other write, in the
// order they were made, and committed with the next batch (usually within
// a millisecond, often together with the next attempt), without the caller
// waiting. Close waits for every queued write, so a server that stops
// normally loses none.
//
// This process reads its own writes: every read of actions and audit
// records (Action, ActionByKey, Records, Verify, …) first waits for the
// write-behinds queued before it (settle). Other processes see them once
// committed. A write-behind that fails is logged through the failure hook
// and remembered (BehindErr) until one succeeds, so the caller can stop
// relying on write-behind while the database refuses writes.

// behindLog tracks the write-behinds queued and not yet answered.
type behindLog struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]*behindReq // queued, not yet answered
	err     error                 // the last write-behind's failure, until one succeeds
	failed  int64                 // write-behinds that failed since Open
	onErr   func(error)           // told each failure (WithWriteBehindFailure)
}

// WithWriteBehindFailure has f called, on the writer goroutine, with the
// error of every write-behind that could not be committed (RecordOutcomeBehind,
// AppendLookup), for the log. It must be quick.
func WithWriteBehindFailure(f func(error)) Option {
	return func(db *DB) { db.behind.onErr = f }
}

// behindReq is one queued write-behind.
type behindReq struct {
	done chan struct{} // closed when answered
	err  error         // its answer, once done is closed
}

// Wait is what a write-behind's caller may wait on: the write's error once
// it is committed or has failed, or ctx's error first.
type Wait func(ctx context.Context) error

// queueBehind queues fn as a write-behind: it returns at once, and fn is
// committed with a later batch without an fsync wait. The returned Wait
// lets the caller wait for it later, overlapping other work with it.
//
// A patient write is one nobody will wait for (an outcome): the writer may
// hold it back briefly for another write to share its commit (companyWait).
func (db *DB) queueBehind(fn func(tx *Tx) error, patient bool) Wait {
	id, req := db.behind.register()
	return db.sendBehind(id, req, writeReq{fn: fn, patient: patient})
}

// register numbers a write-behind and counts it as waiting (settle waits
// for it) before it is queued.
func (b *behindLog) register() (uint64, *behindReq) {
	req := &behindReq{done: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	if b.waiting == nil {
		b.waiting = map[uint64]*behindReq{}
	}
	b.waiting[b.next] = req
	return b.next, req
}

// sendBehind queues the registered write-behind id as r.
func (db *DB) sendBehind(id uint64, req *behindReq, r writeReq) Wait {
	wait := func(ctx context.Context) error {
		select {
		case <-req.done:
			return req.err
		case <-ctx.Done():
			return unavailable("write", ctx.Err())
		}
	}
	r.done, r.lazy, r.behind = make(chan error, 1), true, id
	if r.patient {
		r.queued = time.Now()
	}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		// Queued while Close drained the writer (an HTTP handler outliving
		// the shutdown grace): it will never commit here.
		db.finishBehind(r, unavailable("write", errClosed))
		return wait
	}
	db.writes <- r
	db.closeMu.RUnlock()
	return wait
}

// finishBehind answers the write-behind r with err. A journaled lookup
// that did not commit may have been shown: its journal is kept, before the
// answer, for the next serve to import (journal.go).
func (db *DB) finishBehind(r writeReq, err error) {
	if err != nil && r.journaled {
		db.journal.keep()
	}
	db.behind.finish(r.behind, err)
}

// finish marks write-behind id answered with err. An outcome that recovery
// recorded first (a conflict) is not a failure: the record is there.
func (b *behindLog) finish(id uint64, err error) {
	if mandate.ErrorCode(err) == mandate.ECONFLICT {
		err = nil
	}
	b.mu.Lock()
	b.err = err
	if err != nil {
		b.failed++
	}
	onErr := b.onErr
	b.mu.Unlock()
	// The hook is told before the waiter wakes, so that whoever waited
	// finds the failure reported (it was told after, and a test counting
	// the reports after its Wait saw one of two under load).
	if err != nil && onErr != nil {
		onErr(err)
	}
	b.mu.Lock()
	if req, ok := b.waiting[id]; ok {
		req.err = err
		close(req.done)
		delete(b.waiting, id)
	}
	b.mu.Unlock()
}

// oldest returns the number of the oldest write-behind still waiting for
// its answer, 0 when none is.
func (b *behindLog) oldest() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var oldest uint64
	for id := range b.waiting {
		if oldest == 0 || id < oldest {
			oldest = id
		}
	}
	return oldest
}

// behindQueued reports whether any write-behind is queued and not yet
// answered.
func (db *DB) behindQueued() bool {
	db.behind.mu.Lock()
	defer db.behind.mu.Unlock()
	return len(db.behind.waiting) > 0
}

// settle waits until every write-behind queued before it was called has
// been answered, so that this process reads its own writes. It returns at
// once when none is queued, and otherwise asks the writer not to hold
// patient writes back for company (hurry).
func (db *DB) settle(ctx context.Context) {
	b := &db.behind
	b.mu.Lock()
	if len(b.waiting) == 0 {
		b.mu.Unlock()
		return
	}
	select {
	case db.hurry <- struct{}{}:
	default: // already asked
	}
	chans := make([]chan struct{}, 0, len(b.waiting))
	for _, req := range b.waiting {
		chans = append(chans, req.done)
	}
	b.mu.Unlock()
	for _, c := range chans {
		select {
		case <-c:
		case <-ctx.Done():
			return // the read that follows reports the context's error
		}
	}
}

// Settle waits until this process's queued write-behinds are committed (or
// have failed): what a caller about to hand the database to another process
// or to a person needs.
func (db *DB) Settle(ctx context.Context) { db.settle(ctx) }

// BehindFailures returns how many write-behinds have failed since Open:
// each an outcome left executing for recovery, or a lookup record kept in
// the journal or refused. A server reports them when it exits.
func (db *DB) BehindFailures() int64 {
	db.behind.mu.Lock()
	defer db.behind.mu.Unlock()
	return db.behind.failed
}

// BehindErr returns the error of the last write-behind if it failed, or nil
// once a later one has succeeded. While it is set the database refuses
// writes, and a caller that may not lose a record should write and wait.
func (db *DB) BehindErr() error {
	db.behind.mu.Lock()
	defer db.behind.mu.Unlock()
	return db.behind.err
}
