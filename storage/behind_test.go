package storage

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// executing records n allowed refund attempts, each executing.
func executing(t *testing.T, db *DB, n int) []*Action {
	t.Helper()
	ctx := context.Background()
	var acts []*Action
	for i := range n {
		a := &Action{ID: fmt.Sprintf("act_behind_%03d", i), Agent: "demo-agent", Tool: "refund_order",
			Args: []byte(`{"amount":"1.00","order_id":"ord_1001","reason":"r"}`), Decision: "allow", Status: StatusExecuting,
			CustomerID: "cus_ada", AmountMinor: 100, Currency: "USD"}
		if err := db.RecordAttempt(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
		acts = append(acts, a)
	}
	return acts
}

// queueOutcome queues a's executed outcome as a write-behind.
func queueOutcome(ctx context.Context, db *DB, a *Action) {
	done := *a
	done.Status, done.Result = StatusExecuted, []byte(`{"refund_id":"re_1"}`)
	db.RecordOutcomeBehind(ctx, &done, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Decision: "allow", Outcome: StatusExecuted})
}

// TestWriteBehindReadsOwnWrites: an outcome queued behind the answer is
// seen by every read of this process right away (Action, ActionByKey's
// sibling reads, Records, Verify), though nobody waited for its commit.
func TestWriteBehindReadsOwnWrites(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	acts := executing(t, db, 20)
	for _, a := range acts {
		queueOutcome(ctx, db, a)
	}
	for _, a := range acts {
		got, err := db.Action(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusExecuted {
			t.Fatalf("%s: status %s right after its outcome was queued, want executed", a.ID, got.Status)
		}
	}
	outcomes := 0
	if err := db.Records(ctx, Filter{}, func(r *Record) error {
		if r.Phase == PhaseOutcome {
			outcomes++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if outcomes != len(acts) {
		t.Fatalf("%d outcome records, want %d", outcomes, len(acts))
	}
	if rep, err := db.Verify(ctx); err != nil || rep.Count != int64(2*len(acts)) {
		t.Fatalf("verify: %+v, %v; want %d records", rep, err, 2*len(acts))
	}
}

// TestWriteBehindCloseCommitsAll: Close commits every write-behind still
// queued, so a server that stops normally loses no outcome or lookup
// record; another process opening the file sees all of them.
func TestWriteBehindCloseCommitsAll(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	acts := executing(t, db, 50)
	var wg sync.WaitGroup
	for _, a := range acts {
		wg.Add(2)
		go func() { defer wg.Done(); queueOutcome(ctx, db, a) }()
		go func() {
			defer wg.Done()
			db.AppendLookup(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Args: []byte(`{"order_id":"ord_1001"}`), Decision: "allow", Outcome: "read", Phase: PhaseAttempt})
		}()
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var executed, reads int
	if err := raw.QueryRow(`SELECT (SELECT COUNT(*) FROM actions WHERE status = 'executed'),
		(SELECT COUNT(*) FROM audit WHERE tool = 'get_order')`).Scan(&executed, &reads); err != nil {
		t.Fatal(err)
	}
	if executed != len(acts) || reads != len(acts) {
		t.Fatalf("after Close: %d executed actions and %d lookup records, want %d of each", executed, reads, len(acts))
	}
}

// TestWriteBehindFailure: a write-behind that cannot be committed is
// reported to the failure hook and by BehindErr, and its Wait returns the
// error (so a lookup shows nothing); the outcome's action stays executing
// for recovery. Once a write-behind succeeds again, BehindErr clears.
func TestWriteBehindFailure(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	var mu sync.Mutex
	var failures []error
	db, err := Open(ctx, path, WithWriteBehindFailure(func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	acts := executing(t, db, 1)
	raw, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit
		BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}

	queueOutcome(ctx, db, acts[0])
	wait, err := db.AppendLookup(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Decision: "allow", Outcome: "read", Phase: PhaseAttempt})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); err == nil {
		t.Fatal("a lookup record that cannot be written: Wait returned nil")
	}
	if db.BehindErr() == nil {
		t.Fatal("BehindErr is nil after a failed write-behind")
	}
	got, err := db.Action(ctx, acts[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusExecuting {
		t.Fatalf("status %s after its outcome failed to commit, want executing (left for recovery)", got.Status)
	}
	mu.Lock()
	n := len(failures)
	mu.Unlock()
	if n != 2 {
		t.Fatalf("failure hook told %d times, want 2 (the outcome and the lookup)", n)
	}

	if _, err := raw.Exec(`DROP TRIGGER audit_full`); err != nil {
		t.Fatal(err)
	}
	wait, err = db.AppendLookup(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Decision: "allow", Outcome: "read", Phase: PhaseAttempt})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); err != nil {
		t.Fatalf("after the trail is writable again: %v", err)
	}
	if err := db.BehindErr(); err != nil {
		t.Fatalf("BehindErr = %v after a write-behind succeeded", err)
	}
}
