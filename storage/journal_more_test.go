package storage

// The lookup journal's edges: Close racing lookups, database paths a glob
// would misread, file permissions, and a journal that never goes idle.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// reimported opens the database at path as the next serve would (importing
// the journals nobody holds) and returns the lookups in its trail.
func reimported(t *testing.T, path string) map[string]int {
	t.Helper()
	db := openJournaled(t, path)
	defer db.Close()
	return lookups(t, db)
}

// TestLookupJournaledDuringCloseIsKept plays Close and a lookup in the one
// order that used to lose it: Close has drained the writer, a lookup is
// then journaled (the journal is still open) and accepted, so its data may
// be shown; it can never commit in this process, so the journal must stay
// for the next serve to import rather than be emptied and removed.
func TestLookupJournaledDuringCloseIsKept(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock on this platform: no journal")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db := openJournaled(t, path)
	// Close, first half: no more writes, the writer drained.
	db.closeMu.Lock()
	db.closed = true
	close(db.writes)
	db.closeMu.Unlock()
	<-db.writerDone

	wait, err := db.AppendLookup(ctx, lookupRecord("act_during_close"))
	shown := err == nil && wait(ctx) == nil

	// Close, second half.
	db.closeJournal()
	db.db.Close()

	if !shown {
		t.Fatal("a lookup journaled during Close was refused; this test wants the accepted case")
	}
	if got := reimported(t, path); got["act_during_close"] != 1 {
		t.Fatalf("a lookup accepted during Close is in the trail %d times after the next serve's import, want 1", got["act_during_close"])
	}
}

// TestLookupsRacingCloseAreKept is the same with a real Close while four
// goroutines keep looking up: every lookup accepted (its data shown) is in
// the trail exactly once after the next serve's import.
func TestLookupsRacingCloseAreKept(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock on this platform: no journal")
	}
	ctx := context.Background()
	for round := range 10 {
		path := filepath.Join(t.TempDir(), "mandate.db")
		db := openJournaled(t, path)
		var mu sync.Mutex
		var shown []string
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := 0; i < 100000; i++ {
					id := fmt.Sprintf("act_r%02d_g%d_%05d", round, g, i)
					wait, err := db.AppendLookup(ctx, lookupRecord(id))
					if err != nil || wait(ctx) != nil {
						return // refused: closing
					}
					mu.Lock()
					shown = append(shown, id)
					mu.Unlock()
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		db.Close()
		wg.Wait()
		got := reimported(t, path)
		for _, id := range shown {
			if got[id] != 1 {
				t.Fatalf("round %d: lookup %s was accepted but is in the trail %d times after import, want 1", round, id, got[id])
			}
		}
	}
}

// TestLookupJournalPathWithGlobCharacters: a database path holding '[' is
// a file name, not a pattern; the journals a killed serve left next to it
// are imported and removed like any others.
func TestLookupJournalPathWithGlobCharacters(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock on this platform: no journal")
	}
	for _, base := range []string{"mandate[1].db", "mandate[.db", "m*?.db"} {
		t.Run(base, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), base)
			db, err := Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
			name := writeJournal(t, path, lookupRecord("act_orphan_1"), lookupRecord("act_orphan_2"))
			got := reimported(t, path)
			if got["act_orphan_1"] != 1 || got["act_orphan_2"] != 1 {
				t.Errorf("orphaned journal not imported: trail %v", got)
			}
			if _, err := os.Stat(name); err == nil {
				t.Errorf("orphaned journal %s still there after a serve started", filepath.Base(name))
			}
		})
	}
}

// TestLookupJournalNotWorldReadable: journal records name customers, so a
// journal takes the database's owner and group permissions but never gives
// others any, even next to a database created under umask 022.
func TestLookupJournalNotWorldReadable(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock on this platform: no journal")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	if err := db.OpenLookupJournal(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := db.journal.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o660 {
		t.Fatalf("journal mode %v next to a 0664 database, want 0660 (the owner's and group's, nothing for others)", got)
	}
}

// TestLookupJournalRotates: a server under steady load always has some
// write-behind queued, so its journal is never idle enough to be emptied.
// Past journalRotate bytes it is set aside for a new one, and a set-aside
// journal is removed once its records have committed, while lookups keep
// coming. Nothing is lost on the way: while the writer is held up, the
// journals together hold every lookup, and afterwards the trail does.
func TestLookupJournalRotates(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock on this platform: no journal")
	}
	defer func(n int64) { journalRotate = n }(journalRotate)
	journalRotate = 4096
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db := openPath(t, path)
	if err := db.OpenLookupJournal(ctx); err != nil {
		t.Fatal(err)
	}

	// Hold SQLite's write lock from another connection: the writer waits
	// (its busy timeout is far longer than this test) and nothing commits.
	release := holdWriteLock(t, path)
	const n = 100
	var want []string
	for i := range n {
		id := fmt.Sprintf("act_rot_%03d", i)
		if _, err := db.AppendLookup(ctx, lookupRecord(id)); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	names, err := lookupJournals(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 3 {
		t.Fatalf("%d journals after %d lookups with a %d-byte limit, want it set aside several times", len(names), n, journalRotate)
	}
	var journaled []string
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > journalRotate+1024 {
			t.Errorf("journal %s holds %d bytes, past the %d-byte limit by more than a record", filepath.Base(name), fi.Size(), journalRotate)
		}
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("journal %s: %v", filepath.Base(name), err)
			}
			journaled = append(journaled, r.ActionID)
		}
		f.Close()
	}
	slices.Sort(journaled)
	if !slices.Equal(journaled, want) {
		t.Fatalf("the journals hold %d records, want exactly the %d lookups made", len(journaled), n)
	}

	// Let the writer go, and keep looking up: the set-aside journals go
	// even though some write-behind is queued all along.
	if err := release(); err != nil {
		t.Fatal(err)
	}
	setAside := map[string]bool{}
	for _, name := range names {
		setAside[name] = true
	}
	db.journal.mu.Lock()
	delete(setAside, db.journal.f.Name())
	db.journal.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		id := fmt.Sprintf("act_more_%05d", i)
		if _, err := db.AppendLookup(ctx, lookupRecord(id)); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
		left := 0
		for name := range setAside {
			if _, err := os.Stat(name); err == nil {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d set-aside journals still there after 10 s of lookups", left, len(setAside))
		}
	}
	db.Settle(ctx)
	got := lookups(t, db)
	for _, id := range want {
		if got[id] != 1 {
			t.Fatalf("lookup %s is in the trail %d times, want 1", id, got[id])
		}
	}
}

// TestShownLookupReachesTheTrailOnceWritable: the trail refuses a write (a
// moment of disk full, a lock timeout) while a journaled lookup commits.
// Its data was shown already, so its record must reach the trail: once the
// trail takes writes again, the live server imports its own kept journal
// (a review found the record waiting for the next serve), exactly once,
// and journals again.
func TestShownLookupReachesTheTrailOnceWritable(t *testing.T) {
	if !flockSupported {
		t.Skip("no flock")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db := openJournaled(t, path)
	defer db.Close()
	raw, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit
		BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}
	wait, err := db.AppendLookup(ctx, lookupRecord("act_shown"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); err != nil {
		t.Fatal("a journaled lookup is shown at once:", err)
	}
	db.Settle(ctx)
	if db.BehindErr() == nil {
		t.Fatal("the write-behind should have failed")
	}
	if _, err := raw.Exec(`DROP TRIGGER audit_full`); err != nil {
		t.Fatal(err)
	}
	// The trail works again and the server keeps serving lookups.
	for _, id := range []string{"act_later1", "act_later2"} {
		w, err := db.AppendLookup(ctx, lookupRecord(id))
		if err != nil {
			t.Fatal(err)
		}
		if err := w(ctx); err != nil {
			t.Fatal(err)
		}
	}
	db.Settle(ctx)
	other, err := Open(ctx, path) // another process: admin, audit export
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var got map[string]int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = lookups(t, other); got["act_shown"] == 1 {
			break
		}
	}
	if got["act_shown"] != 1 || got["act_later1"] != 1 || got["act_later2"] != 1 {
		t.Fatalf("lookup records in the trail while the server lives: %v; want each once", got)
	}
	// Journaling again: the next lookup is in the journal, not waited for.
	db.journal.mu.Lock()
	kept := db.journal.kept
	db.journal.mu.Unlock()
	if kept {
		t.Fatal("the journal is still kept after its records were imported")
	}
	w, err := db.AppendLookup(ctx, lookupRecord("act_after"))
	if err != nil || w(ctx) != nil {
		t.Fatal(err)
	}
	db.Settle(ctx)
	if got := lookups(t, other); got["act_after"] != 1 || got["act_shown"] != 1 {
		t.Fatalf("after journaling again: %v", got)
	}
}
