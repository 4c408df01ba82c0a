package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/pgtest"
)

// PostgreSQL's pool is capped at pgMaxOpen connections, one of them the
// writer's. These tests hold or use up the rest and check that nothing
// then waits forever, or waits while holding the chain-head lock.

// TestPGCrossCheckConcurrent: CrossCheck reads through two connections at
// once (snapshotConns). Many at once (every view of the admin audit page
// runs one) must all finish, not each hold a first connection and wait
// for a second the others hold.
func TestPGCrossCheckConcurrent(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 20 {
		if err := db.Append(ctx, &Record{Agent: "a", Tool: "get_order", Args: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), Phase: PhaseAttempt}); err != nil {
			t.Fatal(err)
		}
	}
	const callers = 2 * pgMaxOpen
	for round := range 3 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var wg sync.WaitGroup
		var failed atomic.Int64
		var first atomic.Value
		start := make(chan struct{})
		for range callers {
			wg.Go(func() {
				<-start
				if _, err := db.CrossCheck(cctx); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			})
		}
		close(start)
		wg.Wait()
		cancel()
		if n := failed.Load(); n > 0 {
			t.Fatalf("round %d: %d of %d concurrent CrossChecks failed (first: %v); pool %+v", round, n, callers, first.Load(), db.db.Stats())
		}
	}
	// Every pair was given back: the writer and one reader still get in.
	if err := db.Append(ctx, &Record{Agent: "a", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CrossCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPGWriterNeedsNoPoolUnderLock: a write that runs a statement this
// writer has not run before (a policy load) while readers hold the rest of
// the pool runs on the writer's own connection. It used to prepare the
// statement through the pool, waiting for a connection while it held the
// chain-head lock, so another replica's writes waited on that lock and
// failed with lock_timeout.
func TestPGWriterNeedsNoPoolUnderLock(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	url := pgtest.URL(t)
	var dbs [2]*DB
	for i := range dbs {
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		// Each writer takes its connection.
		if err := db.Append(ctx, &Record{Agent: "a", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
			t.Fatal(err)
		}
		dbs[i] = db
	}
	a, b := dbs[0], dbs[1]
	// Readers hold every other connection of a's pool (long exports,
	// audit pages).
	for range pgMaxOpen - 1 {
		c, err := a.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	done := make(chan error, 1)
	go func() {
		done <- a.RecordPolicy(ctx, &PolicyLoad{Version: "v1", Model: "m", Policy: "p", Command: "admin reload"})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RecordPolicy with the readers' connections held: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RecordPolicy waited 5 s for a pooled connection while holding the chain-head lock")
	}
	t0 := time.Now()
	if err := b.Append(ctx, &Record{Agent: "b", Tool: "get_order", Phase: PhaseAttempt}); err != nil || time.Since(t0) > 2*time.Second {
		t.Fatalf("the other replica's append took %v: %v", time.Since(t0).Round(time.Millisecond), err)
	}
}

// TestPGWriterConnWaitBounded: a writer without a connection (none yet, or
// its last one dropped after a failover) whose pool readers hold entirely
// fails the batch as unavailable after writerConnWait instead of waiting
// for ever; once a connection is free, writes go through again.
func TestPGWriterConnWaitBounded(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	old := writerConnWait
	writerConnWait = 300 * time.Millisecond
	t.Cleanup(func() { writerConnWait = old })
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The writer takes its connection at its first batch: none yet, so
	// the readers can take all of them.
	var held []func() error
	for range pgMaxOpen {
		c, err := db.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c.Close)
	}
	release := func() {
		for _, c := range held {
			c()
		}
	}
	done := make(chan error, 1)
	go func() { done <- db.Append(ctx, &Record{Agent: "a", Tool: "get_order", Phase: PhaseAttempt}) }()
	select {
	case err := <-done:
		if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
			release()
			t.Fatalf("Append with the pool held: %v, want unavailable", err)
		}
	case <-time.After(5 * time.Second):
		release() // lets the writer, and so db.Close, finish
		t.Fatalf("Append with the pool held still waits after 5 s, want unavailable in about %v", 2*writerConnWait)
	}
	release()
	if err := db.Append(ctx, &Record{Agent: "a", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatalf("Append once the readers are done: %v", err)
	}
	if res, err := db.Verify(ctx); err != nil || res.Count != 1 {
		t.Fatalf("Verify = %+v, %v; want the one record", res, err)
	}
}
