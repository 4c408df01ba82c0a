package storage

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCountLoginAttempt counts login attempts from two database handles on
// one database at once, as two admin processes would: the backoff check
// and the count are one transaction, so no more attempts get through than
// one after another would, and an attempt that did not fail is taken back.
func TestCountLoginAttempt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	dbs := []*DB{openPath(t, path), openPath(t, path)}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// Three free failures, then a minute.
	a := LoginAttempt{Keys: []string{"user:alice", "addr:192.0.2.1"}, Forget: time.Hour,
		Delay: func(_ string, n int) time.Duration {
			if n < 3 {
				return 0
			}
			return time.Minute
		}}
	var wg sync.WaitGroup
	var counted atomic.Int64
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(db *DB) {
			defer wg.Done()
			until, err := db.CountLoginAttempt(ctx, now, a)
			if err != nil {
				t.Error(err)
			} else if until.IsZero() {
				counted.Add(1)
			} else if !until.Equal(now.Add(time.Minute)) {
				t.Errorf("blocked until %v, want a minute", until)
			}
		}(dbs[i%2])
	}
	wg.Wait()
	if n := counted.Load(); n != 3 {
		t.Fatalf("%d of 40 attempts at once were let through, want 3", n)
	}
	// One of them was right after all: taken back, the other two leave
	// alice free to try again.
	if err := dbs[0].UncountLoginAttempt(ctx, a); err != nil {
		t.Fatal(err)
	}
	if until, err := dbs[1].LoginBlockedUntil(ctx, now, a.Keys...); err != nil || !until.IsZero() {
		t.Fatalf("after taking one back: blocked until %v (%v), want free", until, err)
	}
	// A counted failure is not counted twice: its block runs from when
	// it was found wrong, for the count it already holds.
	if until, err := dbs[1].CountLoginAttempt(ctx, now, a); err != nil || !until.IsZero() {
		t.Fatalf("third attempt: blocked until %v (%v), want counted", until, err)
	}
	later := now.Add(time.Second)
	until, err := dbs[0].RecordLoginFailure(ctx, later, LoginFailure{User: "alice", Keys: a.Keys, Counted: true,
		Delay: a.Delay, Forget: a.Forget, Audit: &Record{Agent: "alice", Tool: "admin_login", Decision: "deny", Phase: "attempt", Outcome: "refused"}})
	if err != nil || !until.Equal(later.Add(time.Minute)) {
		t.Fatalf("counted failure: blocked until %v (%v), want a minute from %v", until, err, later)
	}
	// Taking back a key's only attempt forgets the key.
	if err := dbs[0].ClearLoginFailures(ctx, a.Keys...); err != nil {
		t.Fatal(err)
	}
	if until, err := dbs[0].CountLoginAttempt(ctx, now, a); err != nil || !until.IsZero() {
		t.Fatalf("after clearing: blocked until %v (%v), want counted", until, err)
	}
	if err := dbs[1].UncountLoginAttempt(ctx, a); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := dbs[0].db.QueryRowContext(ctx, `SELECT COUNT(*) FROM login_throttle`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d backoff rows left (%v), want none", rows, err)
	}
}
