package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
