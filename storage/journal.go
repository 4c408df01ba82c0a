package storage

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// The lookup journal. An allowed lookup (get_order, get_customer, …) must
// be in the audit trail, and its data should not wait for a SQLite commit:
// a lookup record's transaction costs more than the whole unguarded lookup
// (issue 15). So before the data is shown, its record is appended to a
// journal file of this process with one write(2) and no fsync, then queued
// as a write-behind (behind.go). The journal survives the process being
// killed just as a commit without fsync does (it is in the OS's page cache,
// like the WAL under synchronous=NORMAL, which is what lookup records had
// before): the next process that opens the journal of the database imports
// every journaled record that is not in the trail yet, and an idle process
// empties its journal once its write-behinds are committed. A journal write
// that fails refuses the lookup: nothing is shown that is not recorded.
//
// While the last write-behind failed (the trail refuses writes), lookups
// wait for their own commit instead, and are refused if it fails. On
// PostgreSQL (replicas on several machines, whose journals nobody else
// could read) and where flock is missing there is no journal, and a
// lookup reads while its record commits and waits for it.
//
// Each journal is "<database>-lookups-<random>", held with an exclusive
// flock by its process while it lives: a journal nobody holds belongs to a
// process that has stopped. It is readable and writable by the database
// file's owner and group, never by others: its records name customers.
//
// Under steady load some write-behind is always queued, so the journal is
// never idle enough to be emptied. Once it passes journalRotate bytes the
// process sets it aside (still held) and starts another; a set-aside
// journal is removed as soon as every record in it has committed. A busy
// server so keeps about one journal's worth of records on disk, however
// long it runs.

type journal struct {
	mu    sync.Mutex
	f     *os.File // nil: no journal
	dirty bool     // holds records since it was last emptied
	kept  bool     // a journaled record did not commit: keep the files for import
	size  int64    // bytes in f
	last  uint64   // the write-behind of the newest record in f
	full  []fullJournal
	// importing: importOwn is putting the kept files' records in the trail.
	importing bool
}

// fullJournal is a journal set aside for a new one, held until every
// record in it has committed.
type fullJournal struct {
	f    *os.File
	last uint64 // the write-behind of its newest record
}

// journalRotate is the size past which a journal still holding records not
// yet committed is set aside for a new one (a variable so tests can shrink
// it). A megabyte is a few thousand lookups: a second or so of a busy
// server, and little to import after a crash.
var journalRotate int64 = 1 << 20

// journalPrefix begins the name of every lookup journal of the database at
// path, in its directory.
func journalPrefix(path string) string { return filepath.Base(path) + "-lookups-" }

// OpenLookupJournal imports the journals that stopped processes left (see
// ImportLookupJournals) and starts this process's own, so that AppendLookup
// need not wait for a commit. Without it (and on PostgreSQL, or without
// flock) AppendLookup waits. It is for a server; one-off commands do not
// journal.
func (db *DB) OpenLookupJournal(ctx context.Context) error {
	if db.postgres || db.Path == "" || strings.Contains(db.Path, ":memory:") || !flockSupported {
		return nil
	}
	if _, err := db.ImportLookupJournals(ctx); err != nil {
		return err
	}
	f, err := db.newJournal()
	if err != nil {
		return err
	}
	db.journal.mu.Lock()
	db.journal.f = f
	db.journal.mu.Unlock()
	return nil
}

// newJournal creates a journal file for this process and takes its flock.
func (db *DB) newJournal() (*os.File, error) {
	var b [8]byte
	perm := os.FileMode(0o600)
	if fi, err := os.Stat(db.Path); err == nil {
		// Like -wal and -shm, whoever may write the database, but never
		// everyone: a database created under umask 022 is 0644.
		perm = fi.Mode().Perm() &^ 0o007
	}
	// Between its creation and its flock the journal looks like one a
	// stopped process left: another process starting then may import and
	// remove it (and hold its flock meanwhile). A journal that is not
	// still linked under its name once locked is abandoned for a new one;
	// it was empty.
	for attempt := 0; ; attempt++ {
		rand.Read(b[:])
		name := filepath.Join(filepath.Dir(db.Path), journalPrefix(db.Path)+hex.EncodeToString(b[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, perm)
		if err != nil {
			return nil, unavailable("create lookup journal", err)
		}
		if tryFlock(f.Fd()) && linked(f, name) {
			f.Chmod(perm) // past the umask, as SQLite does for -wal; if refused, the umask's stricter mode stands
			return f, nil
		}
		f.Close()
		if attempt == 10 {
			os.Remove(name)
			return nil, unavailable("lock lookup journal", errors.New("another process kept taking it"))
		}
	}
}

// lookupJournals lists the lookup journals of the database at path. The
// directory is read rather than globbed: a database path may hold '[' or
// '*', which a glob would take as a pattern.
func lookupJournals(path string) ([]string, error) {
	dir, prefix := filepath.Dir(path), journalPrefix(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && !e.IsDir() {
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	return names, nil
}

// ImportLookupJournals appends to the trail every record in a journal that
// no live process holds and that the trail does not have yet (a record
// whose action id and phase are in the trail was committed before its
// process stopped), then removes the journal. It returns how many records
// it appended. A torn last line (the process died mid-write: that lookup
// was never shown) is skipped.
func (db *DB) ImportLookupJournals(ctx context.Context) (int, error) {
	if db.postgres || db.Path == "" || !flockSupported {
		return 0, nil
	}
	names, err := lookupJournals(db.Path)
	if err != nil {
		return 0, unavailable("list lookup journals", err)
	}
	db.journal.mu.Lock()
	own := ""
	if db.journal.f != nil {
		own = db.journal.f.Name()
	}
	db.journal.mu.Unlock()
	total := 0
	for _, name := range names {
		if name == own {
			continue
		}
		n, err := db.importJournal(ctx, name)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// importJournal imports one journal if no process holds it.
func (db *DB) importJournal(ctx context.Context, name string) (int, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return 0, nil // gone already: another process imported it
	}
	defer f.Close()
	if !tryFlock(f.Fd()) {
		return 0, nil // its process is alive
	}
	if !linked(f, name) {
		return 0, nil // another process imported and removed it meanwhile
	}
	recs, err := readJournal(f)
	if err != nil {
		return 0, err
	}
	added, err := db.appendMissing(ctx, recs)
	if err != nil {
		return 0, unavailable(fmt.Sprintf("import lookup journal %s", filepath.Base(name)), err)
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return added, unavailable("remove imported lookup journal", err)
	}
	return added, nil
}

// readJournal reads a journal's records. A torn line (a crash or a failed
// write mid-line: that lookup was never shown) is skipped.
func readJournal(f *os.File) ([]*Record, error) {
	var recs []*Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ActionID == "" {
			continue
		}
		r.Seq, r.PrevHash, r.Hash, r.KeyID = 0, "", "", ""
		recs = append(recs, &r)
	}
	if err := sc.Err(); err != nil {
		return nil, unavailable("read lookup journal", err)
	}
	return recs, nil
}

// appendMissing appends, in one durable transaction, each of recs whose
// action id and phase the trail does not hold yet (one committed before
// its journal was read), and returns how many it appended.
func (db *DB) appendMissing(ctx context.Context, recs []*Record) (int, error) {
	added := 0
	if len(recs) == 0 {
		return 0, nil
	}
	err := db.write(func(tx *Tx) error {
		added = 0
		for _, r := range recs {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_keys WHERE action_id = ? AND phase = ?`, r.ActionID, r.Phase).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			if err := appendRecord(ctx, tx, r); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	return added, err
}

// importOwn puts in the trail the records of this process's kept journals
// (a journaled lookup whose commit failed was shown all the same), once the
// trail takes writes again and no write-behind is waiting, then empties
// them and journals again. Without it such a record would reach the trail
// only when the next serve imports the journals after this one stops. It
// runs on a goroutine of its own (its write goes through the writer, which
// starts it); if the write fails, the writer starts it again after a later
// batch.
func (db *DB) importOwn() {
	j := &db.journal
	j.mu.Lock()
	var names []string
	if j.f != nil {
		names = append(names, j.f.Name())
	}
	for _, full := range j.full {
		names = append(names, full.f.Name())
	}
	j.mu.Unlock()
	var recs []*Record
	err := func() error {
		for _, name := range names {
			f, err := os.Open(name) // this process's own: its flock is held already
			if err != nil {
				return unavailable("read lookup journal", err)
			}
			r, err := readJournal(f)
			f.Close()
			if err != nil {
				return err
			}
			recs = append(recs, r...)
		}
		_, err := db.appendMissing(context.Background(), recs)
		return err
	}()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.importing = false
	if err != nil || j.f == nil {
		return // tried again after a later batch; or closed: kept on disk for the next serve
	}
	if err := j.f.Truncate(0); err != nil {
		return
	}
	for _, full := range j.full {
		name := full.f.Name()
		full.f.Close()
		os.Remove(name)
	}
	j.full = nil
	j.kept, j.dirty, j.size = false, false, 0
}

// linked reports whether f is still the file at name: a journal removed
// after f was opened is not.
func linked(f *os.File, name string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	at, err := os.Stat(name)
	return err == nil && os.SameFile(fi, at)
}

// AppendLookup records an allowed lookup before its data is shown. With a
// journal (OpenLookupJournal) it returns once the record is in the journal
// and the Wait is a no-op; the commit follows as a write-behind. Without
// one, or while the last write-behind failed, the record is queued and the
// Wait waits for its commit: read the data meanwhile, show it only if Wait
// returns nil. An error means nothing was recorded: refuse the lookup.
func (db *DB) AppendLookup(ctx context.Context, rec *Record) (Wait, error) {
	ctx = context.WithoutCancel(ctx)
	if rec.Time.IsZero() {
		rec.Time = db.Now()
	}
	j := &db.journal
	j.mu.Lock()
	if j.f == nil || j.kept || db.BehindErr() != nil {
		j.mu.Unlock()
		return db.queueBehind(db.appendFn(ctx, rec), false), nil
	}
	// MarshalJSON itself: json.Marshal would check and compact its
	// (already compact) output again, a few percent of a lookup's CPU.
	line, err := rec.MarshalJSON()
	if err != nil {
		j.mu.Unlock()
		return nil, unavailable("journal lookup", err)
	}
	if _, err := j.f.Write(append(line, '\n')); err != nil {
		// A short write may have torn the line: keep the file as it is
		// for the next import, and journal no more.
		j.kept = true
		j.mu.Unlock()
		return nil, unavailable("journal lookup", err)
	}
	j.dirty = true
	// Counted as waiting before j.mu is let go, so the journal is not
	// emptied under it; queued after, since the writer may need j.mu to
	// make room.
	id, req := db.behind.register()
	j.size += int64(len(line)) + 1
	j.last = id
	if j.size >= journalRotate {
		db.rotateJournal()
	}
	j.mu.Unlock()
	// Nobody waits for it: it may wait for company (companyWait), so a run
	// of lookups shares one commit.
	db.sendBehind(id, req, writeReq{fn: db.appendFn(ctx, rec), journaled: true, patient: true})
	return func(context.Context) error { return nil }, nil
}

// rotateJournal sets the full journal aside and starts a new one; j.mu is
// held. If no new journal can be made, the full one takes more records and
// the next try is a journalRotate later.
func (db *DB) rotateJournal() {
	j := &db.journal
	f, err := db.newJournal()
	if err != nil {
		j.size = 0
		return
	}
	j.full = append(j.full, fullJournal{f: j.f, last: j.last})
	j.f, j.size, j.dirty = f, 0, false
}

// emptyJournal empties this process's journal once every write-behind has
// committed, so it holds only what may not be in the trail yet, and removes
// each set-aside journal whose records have all committed. The writer
// calls it after each batch.
func (db *DB) emptyJournal() {
	j := &db.journal
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.kept {
		// Nothing is journaled while kept, and with no write-behind
		// waiting none of the kept records can still commit on its own:
		// the trail took this batch, so put them in it now.
		if !j.importing && j.f != nil && db.BehindErr() == nil && db.behind.oldest() == 0 {
			j.importing = true
			go db.importOwn()
		}
		return
	}
	if !j.dirty && len(j.full) == 0 {
		return
	}
	// Write-behinds are numbered in the order they were journaled, so a
	// journal whose newest record is older than every write-behind still
	// waiting holds only committed records.
	oldest := db.behind.oldest()
	kept := j.full[:0]
	for _, full := range j.full {
		if oldest != 0 && oldest <= full.last {
			kept = append(kept, full)
			continue
		}
		name := full.f.Name()
		full.f.Close()
		os.Remove(name)
	}
	clear(j.full[len(kept):])
	j.full = kept
	if j.f == nil || !j.dirty || oldest != 0 {
		return
	}
	if err := j.f.Truncate(0); err == nil {
		j.dirty, j.size = false, 0
	}
}

// closeJournal closes this process's journal after the writer has drained:
// removed when everything in it was committed, kept for the next import
// otherwise.
func (db *DB) closeJournal() {
	db.emptyJournal()
	j := &db.journal
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return
	}
	name, clean := j.f.Name(), !j.dirty && !j.kept
	j.f.Close()
	j.f = nil
	if clean {
		os.Remove(name)
	}
	// Set-aside journals still here hold records that did not commit:
	// closed, they are free for the next serve to import.
	for _, full := range j.full {
		full.f.Close()
	}
	j.full = nil
}

// keep marks the journal as holding a record that did not commit: it is
// no longer emptied, and stays for the next import.
func (j *journal) keep() {
	j.mu.Lock()
	j.kept = true
	j.mu.Unlock()
}
