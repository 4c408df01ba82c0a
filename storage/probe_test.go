package storage

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestCommitObserverAndProbeWrite: the commit observer sees every write
// once, in batches; ProbeWrite adds nothing to the audit chain, and fails
// while another connection holds the write lock, then succeeds again.
func TestCommitObserverAndProbeWrite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	var mu sync.Mutex
	var stats []CommitStats
	db, err := Open(ctx, path, WithCommitObserver(func(c CommitStats) {
		mu.Lock()
		stats = append(stats, c)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	const n = 40
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.Append(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt, Outcome: "read", Decision: "allow"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// The writer tells the observer after it has answered the batch's
	// callers, so the last batch may not be observed yet: wait for it.
	writes := 0
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		writes = 0
		for _, c := range stats {
			writes += c.Writes
		}
		mu.Unlock()
		if writes >= n || time.Now().After(deadline) {
			break
		}
	}
	mu.Lock()
	for _, c := range stats {
		if c.Err != nil || !c.Durable || c.Writes < 1 || c.Duration <= 0 {
			t.Errorf("commit %+v: want a durable, successful batch of at least one write with a duration", c)
		}
	}
	mu.Unlock()
	if writes != n {
		t.Fatalf("observed %d writes in commits, want %d", writes, n)
	}

	seq, hash, err := db.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ProbeWrite(ctx); err != nil {
		t.Fatalf("ProbeWrite on a healthy database: %v", err)
	}
	if s2, h2, _ := db.Head(ctx); s2 != seq || h2 != hash {
		t.Fatalf("ProbeWrite changed the audit chain: %d %s -> %d %s", seq, hash, s2, h2)
	}

	// Another process's connection holds the write lock.
	other, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.BeginTx(ctx, nil) // IMMEDIATE, from the DSN
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := db.ProbeWrite(pctx); err == nil {
		t.Fatalf("ProbeWrite succeeded while another connection held the write lock")
	}
	tx.Rollback()
	// The first probe finishes on its own; a new one gets through.
	deadline := time.Now().Add(20 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := db.ProbeWrite(pctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ProbeWrite after the lock was released: %v", err)
		}
	}
}
