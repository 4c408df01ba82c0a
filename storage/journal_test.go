package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func lookupRecord(id string) *Record {
	return &Record{Agent: "demo-agent", Tool: "get_order", Args: []byte(`{"order_id":"ord_1001"}`), Attrs: []byte(`{}`),
		Decision: "allow", Outcome: "read", Phase: PhaseAttempt, ActionID: id}
}

// openJournaled opens the database at path with its lookup journal, as
// serve does (importing the journals nobody holds). The test closes it.
func openJournaled(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.OpenLookupJournal(context.Background()); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db
}

// lookups counts the trail's lookup records by action id.
func lookups(t *testing.T, db *DB) map[string]int {
	t.Helper()
	got := map[string]int{}
	if err := db.Records(context.Background(), Filter{Tool: "get_order"}, func(r *Record) error {
		got[r.ActionID]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestLookupJournalLifecycle: a journaled lookup returns before its commit,
// is in the trail once committed, the journal is emptied when nothing is
// left to commit, and Close removes it.
func TestLookupJournalLifecycle(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock: lookups wait for their commit instead")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db := openJournaled(t, path)
	names, _ := lookupJournals(path)
	if len(names) != 1 {
		t.Fatalf("journals %v, want this process's one", names)
	}
	for i := range 50 {
		wait, err := db.AppendLookup(ctx, lookupRecord(fmt.Sprintf("act_j%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := lookups(t, db); len(got) != 50 {
		t.Fatalf("%d lookups in the trail, want 50", len(got))
	}
	// The writer empties the journal after the batch that committed the
	// last of them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		fi, err := os.Stat(names[0])
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal still holds %d bytes with everything committed", fi.Size())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if names, _ := lookupJournals(path); len(names) != 0 {
		t.Fatalf("journals %v left after Close, want none", names)
	}
}

// writeJournal leaves a journal as a killed process would: records, the
// last line torn mid-write, and nobody holding it.
func writeJournal(t *testing.T, path string, recs ...*Record) string {
	t.Helper()
	name := path + "-lookups-deadbeef00000000"
	var b []byte
	for _, r := range recs {
		if r.Time.IsZero() {
			r.Time = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		}
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b = append(append(b, line...), '\n')
	}
	torn, _ := json.Marshal(lookupRecord("act_torn"))
	b = append(b, torn[:len(torn)/2]...)
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestLookupJournalImport: the journal of a stopped process is imported by
// the next server that opens its own: every record not yet in the trail is
// appended once (one that was committed before the process stopped is not
// appended again, and a torn last line, a lookup never shown, is skipped),
// the chain verifies, and the journal is removed.
func TestLookupJournalImport(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	committed := lookupRecord("act_committed")
	if err := db.Append(ctx, committed); err != nil {
		t.Fatal(err)
	}
	name := writeJournal(t, path, lookupRecord("act_committed"), lookupRecord("act_lost_1"), lookupRecord("act_lost_2"))

	if err := db.OpenLookupJournal(ctx); err != nil {
		t.Fatal(err)
	}
	got := lookups(t, db)
	want := map[string]int{"act_committed": 1, "act_lost_1": 1, "act_lost_2": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lookups in the trail %v, want %v", got, want)
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Fatalf("imported journal still there (%v)", err)
	}
	if rep, err := db.Verify(ctx); err != nil || rep.Count != 3 {
		t.Fatalf("verify: %+v %v, want 3 records", rep, err)
	}
	// A second import finds nothing.
	if n, err := db.ImportLookupJournals(ctx); err != nil || n != 0 {
		t.Fatalf("second import: %d records, %v", n, err)
	}
}

// TestLookupJournalOfLiveProcessUntouched: another process's journal is
// left alone while that process holds it.
func TestLookupJournalOfLiveProcessUntouched(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	a, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.OpenLookupJournal(ctx); err != nil {
		t.Fatal(err)
	}
	// A record in a's journal that a has not committed (written as a
	// would, without queueing it).
	line, _ := json.Marshal(lookupRecord("act_in_flight"))
	a.journal.mu.Lock()
	a.journal.f.Write(append(line, '\n'))
	a.journal.dirty = true
	a.journal.mu.Unlock()

	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if n, err := b.ImportLookupJournals(ctx); err != nil || n != 0 {
		t.Fatalf("import while a lives: %d records, %v; want 0", n, err)
	}
	if got := lookups(t, b); got["act_in_flight"] != 0 {
		t.Fatalf("a live process's journal was imported: %v", got)
	}
}

// TestLookupJournalWriteFails: a lookup whose journal write fails is
// refused (nothing recorded, so nothing may be shown), and the journal is
// kept for import rather than emptied.
func TestLookupJournalWriteFails(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock")
	}
	ctx := context.Background()
	db := openTest(t)
	if err := db.OpenLookupJournal(ctx); err != nil {
		t.Fatal(err)
	}
	db.journal.mu.Lock()
	db.journal.f.Close() // every write now fails
	db.journal.mu.Unlock()
	if _, err := db.AppendLookup(ctx, lookupRecord("act_refused")); err == nil {
		t.Fatal("AppendLookup succeeded with a journal that cannot be written")
	}
	if got := lookups(t, db); got["act_refused"] != 0 {
		t.Fatalf("a refused lookup reached the trail: %v", got)
	}
	// Later lookups wait for their own commit instead.
	wait, err := db.AppendLookup(ctx, lookupRecord("act_after"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookups(t, db); got["act_after"] != 1 {
		t.Fatalf("lookup after the journal failed: %v", got)
	}
}
