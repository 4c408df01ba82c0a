package storage

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate/internal/wlock"
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

// Deferred durability. The attempt must be on disk before the backend is
// called, so a batch holding one commits with synchronous=FULL (an fsync).
// Two kinds of record need not delay an answer for an fsync: an action's
// outcome (if it is lost, the action stays executing and recovery asks the
// backend by its idempotency key and records what happened) and the record of
// an allowed lookup. A batch of only those commits with synchronous=NORMAL:
// committed and visible to every process at once and safe from a killed
// process (the WAL is in the OS's cache), made durable by the next FULL commit
// or checkpoint, whose fsync covers every earlier WAL frame; only a power
// loss in between can undo it.
//
// The writer owns one connection and switches its synchronous setting when a
// batch needs the other one (a PRAGMA that touches no page). It used to own
// one connection per setting, but in WAL mode a connection's page cache is
// dropped whenever another connection has written: alternating attempts and
// outcomes then read every page they touched back from the file, which cost
// more than the rest of the transaction.

// faultPoint is called at named points of the write path; it does nothing
// unless the binary is built with the mandate_faultinject tag, whose fault
// tests kill the process there (faultinject.go).
var faultPoint = func(name string) {}

type writeReq struct {
	fn   func(tx *Tx) error
	done chan error
	lazy bool // need not be fsynced before it is answered (see above)
	// behind is the write-behind's number (behind.go), 0 for a write whose
	// caller waits for its answer.
	behind uint64
	// patient is set for a write-behind nobody waits for (an outcome, a
	// journaled lookup).
	patient bool
	// queued is when a patient write was queued: it waits at most
	// companyWait from then.
	queued time.Time
	// journaled is set for a lookup record already in the journal
	// (journal.go): if it fails to commit, the journal keeps it.
	journaled bool
}

// companyWait is how long a patient write (an outcome or a journaled
// lookup: nobody waits for it) may wait for its commit, so that several
// share one transaction (see writerQueue). Readers of this process wait
// for it at most this long (settle); other processes see it this much
// later.
const companyWait = 2 * time.Millisecond

// writerQueue chooses what the writer commits next. Urgent writes, whose
// callers wait (attempts, refusals, decisions), go first, as one batch of
// everything queued. Patient writes (outcomes and journaled lookups: nobody
// waits for them) fill the writer's idle moments: right after an urgent
// batch when nothing else is queued, which for an agent calling one tool
// after another is while its backend call runs; or, with nothing urgent,
// once the oldest has waited companyWait, so a run of them shares one
// commit. Under constant load they join an urgent batch once they have
// waited companyWait, so they are never starved. Either way an urgent write
// never waits for a patient one's work in its own transaction unless that
// one has waited its turn.
type writerQueue struct {
	in         <-chan writeReq
	hurry      <-chan struct{} // a reader waits for the patient writes: no more waiting for company
	wait       time.Duration   // companyWait (tests lengthen it)
	closed     bool
	patient    []writeReq
	since      time.Time // when the oldest patient write was queued
	urgentLast bool      // the last batch was urgent
	timer      *time.Timer
}

func (w *writerQueue) add(r writeReq, urgent *[]writeReq) {
	if !r.patient {
		*urgent = append(*urgent, r)
		return
	}
	if len(w.patient) == 0 {
		w.since = r.queued
	}
	w.patient = append(w.patient, r)
}

// takePatient removes up to n patient writes, oldest first.
func (w *writerQueue) takePatient(n int) []writeReq {
	n = max(0, min(n, len(w.patient)))
	out := w.patient[:n:n]
	w.patient = w.patient[n:]
	if len(w.patient) == 0 {
		w.patient = nil
	} else {
		w.since = w.patient[0].queued
	}
	return out
}

// joiners adds to batch the writes queued since it was chosen, urgent or
// patient, up to maxBatch: the writer had to wait for another process's
// turn and holds the write lock by now, and they would otherwise wait for
// another turn each.
func (w *writerQueue) joiners(batch []writeReq) []writeReq {
drain:
	for !w.closed && len(batch) < maxBatch {
		select {
		case r, ok := <-w.in:
			if !ok {
				w.closed = true
				break drain
			}
			batch = append(batch, r)
		default:
			break drain
		}
	}
	if len(w.patient) > 0 && len(batch) < maxBatch && !patientOnly(batch) {
		batch = append(batch, w.takePatient(maxBatch-len(batch))...)
	}
	return batch
}

// contended is how long a wait for the write lock means another process
// held it (an uncontended flock takes microseconds).
const contended = 100 * time.Microsecond

// patientOnly reports whether every write of batch is patient.
func patientOnly(batch []writeReq) bool {
	for _, r := range batch {
		if !r.patient {
			return false
		}
	}
	return true
}

// next returns the next batch to commit, or nil once the queue is closed
// and everything in it has been returned.
func (w *writerQueue) next() []writeReq {
	var urgent []writeReq
	for {
	drain: // everything queued now, without waiting
		for !w.closed && len(urgent) < maxBatch && len(w.patient) < maxBatch {
			select {
			case r, ok := <-w.in:
				if !ok {
					w.closed = true
					break drain
				}
				w.add(r, &urgent)
			default:
				break drain
			}
		}
		aged := len(w.patient) > 0 && time.Since(w.since) >= w.wait
		select {
		case <-w.hurry:
			aged = len(w.patient) > 0
		default:
		}
		switch {
		case len(urgent) > 0:
			if aged || w.closed {
				urgent = append(urgent, w.takePatient(maxBatch-len(urgent))...)
			}
			w.urgentLast = true
			return urgent
		case len(w.patient) > 0 && (aged || w.closed || w.urgentLast || len(w.patient) >= maxBatch):
			w.urgentLast = false
			return w.takePatient(maxBatch)
		case w.closed:
			return nil
		}
		w.urgentLast = false
		if len(w.patient) == 0 {
			r, ok := <-w.in
			if !ok {
				w.closed = true
				continue
			}
			w.add(r, &urgent)
			continue
		}
		// Only patient writes, young: wait for company or their turn.
		w.timer.Reset(w.wait - time.Since(w.since))
		select {
		case r, ok := <-w.in:
			w.timer.Stop()
			if !ok {
				w.closed = true
				continue
			}
			w.add(r, &urgent)
		case <-w.timer.C:
		case <-w.hurry:
			w.timer.Stop()
			w.since = time.Now().Add(-w.wait) // aged now
		}
	}
}

// errClosed is returned for writes after Close.
var errClosed = errors.New("storage: database is closed")

func (db *DB) startWriter() {
	db.writes = make(chan writeReq, maxBatch)
	db.hurry = make(chan struct{}, 1)
	db.writerDone = make(chan struct{})
	if !db.postgres && db.Path != "" && !strings.Contains(db.Path, ":memory:") {
		// Several processes on one file: wait for the write lock in the
		// kernel's queue, not in SQLite's sleeping busy handler (wlock).
		db.wlock = wlock.Open(db.Path)
	}
	go func() {
		defer close(db.writerDone)
		defer db.wlock.Close()
		defer func() {
			if db.wconn != nil {
				db.wconn.Close()
			}
		}()
		w := &writerQueue{in: db.writes, hurry: db.hurry, wait: companyWait, timer: time.NewTimer(time.Hour)}
		w.timer.Stop()
		for {
			batch := w.next()
			if batch == nil {
				return
			}
			start := time.Now()
			// Waiting for another process's turn, this one's later writes
			// may arrive: they join the batch once the lock is ours, one
			// turn instead of several (four processes on one file).
			held := db.wlock.Lock()
			if time.Since(start) > contended {
				batch = w.joiners(batch)
			}
			err := db.commitBatch(batch, held)
			if err != nil && db.postgres && db.wconn != nil {
				// The connection may be gone (a failover, a restarted
				// server, a terminated backend): the next batch takes a
				// fresh one from the pool rather than failing on this one.
				db.wconn.Close()
				db.wconn = nil
			}
			if db.onCommit != nil {
				db.onCommit(CommitStats{Writes: len(batch), Durable: durable(batch), Duration: time.Since(start), Err: err})
			}
			behind := false
			for _, r := range batch {
				if r.behind != 0 {
					db.finishBehind(r, <-r.done) // nobody else waits for it
					behind = true
				}
			}
			if behind {
				db.emptyJournal()
			}
		}
	}()
}

// CommitStats describes one group commit, for metrics.
type CommitStats struct {
	Writes   int           // writes that shared the transaction
	Durable  bool          // committed with an fsync (synchronous=FULL)
	Duration time.Duration // from queueing for the write lock to the commit's return
	Err      error         // the transaction could not begin or commit
}

// Option configures Open.
type Option func(*DB)

// WithCommitObserver has f called after every group commit, on the writer
// goroutine, so it must be quick. Storage knows nothing of metrics; cmd
// passes telemetry's recorder here.
func WithCommitObserver(f func(CommitStats)) Option {
	return func(db *DB) { db.onCommit = f }
}

// durable reports whether a batch commits with an fsync: it does when any
// of its writes is not lazy.
func durable(batch []writeReq) bool {
	for _, r := range batch {
		if !r.lazy {
			return true
		}
	}
	return false
}

// commitBatch runs a batch in one transaction and answers every write. It
// returns the error that failed the whole transaction, if one did.
func (db *DB) commitBatch(batch []writeReq, held bool) error {
	errs := make([]error, len(batch))
	fail := func(err error) error {
		for _, r := range batch {
			r.done <- err
		}
		return err
	}
	// The batch belongs to many callers, so no one caller's context may
	// cancel it; the busy timeout in the DSN bounds the wait for the lock
	// (lock_timeout on PostgreSQL, see openPostgres).
	ctx := context.Background()
	sync := "NORMAL"
	if durable(batch) {
		sync = "FULL"
	}
	defer db.wlock.Unlock(held) // after the Rollback below
	tx, err := db.begin(ctx, sync)
	if err != nil && db.postgres {
		// Nothing of the batch has run: once more, on a fresh connection
		// (begin dropped the dead one), so a failover costs no call.
		tx, err = db.begin(ctx, sync)
	}
	if err != nil {
		return fail(unavailable("begin", err))
	}
	defer tx.Rollback()
	wtx := &Tx{Tx: tx, db: db}
	if db.postgres {
		// PostgreSQL: the chain-head row lock serializes this transaction
		// with every other replica's writes (lockChainHead).
		if err := lockChainHead(ctx, tx); err != nil {
			return fail(unavailable("lock chain head", err))
		}
	}
	if len(batch) == 1 {
		// Alone, a write needs no savepoint: its failure rolls back the
		// whole transaction, which holds nothing else.
		if err := batch[0].fn(wtx); err != nil {
			batch[0].done <- err
			return nil
		}
		indexed := db.indexAudit(ctx, wtx, batch)
		if err := tx.Commit(); err != nil {
			return fail(unavailable("commit", err))
		}
		db.indexedTo = max(db.indexedTo, indexed)
		batch[0].done <- nil
		return nil
	}
	for i, r := range batch {
		if _, err := wtx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			return fail(unavailable("savepoint", err))
		}
		head := wtx.head
		if errs[i] = r.fn(wtx); errs[i] != nil {
			wtx.head = head // what this write appended is rolled back
			if _, err := wtx.ExecContext(ctx, "ROLLBACK TO w"); err != nil {
				return fail(unavailable("rollback to savepoint", err))
			}
		}
		if _, err := wtx.ExecContext(ctx, "RELEASE w"); err != nil {
			return fail(unavailable("release savepoint", err))
		}
	}
	indexed := db.indexAudit(ctx, wtx, batch)
	if err := tx.Commit(); err != nil {
		return fail(unavailable("commit", err))
	}
	db.indexedTo = max(db.indexedTo, indexed)
	for i, r := range batch {
		r.done <- errs[i]
	}
	return nil
}

// indexRun is how many of this writer's appends a commit nobody waits for
// lets gather before it indexes them: one statement inserts the keys of a
// run, whose time, agent and seq entries share index pages, where one per
// record would write each of those pages again. indexEvery is how far
// behind the index may fall before a batch that someone waits for catches
// it up anyway: a process that only ever writes urgently (approvals from
// the CLI, a benchmark of appends) still indexes, a run at a time.
const (
	indexRun   = 64
	indexEvery = 256
)

// indexAudit catches audit_index up with the trail, inside the batch's
// transaction, once this writer has appended indexRun records since it
// last did and the batch holds a write nobody waits on the commit of
// (outcomes, lookups: see writerQueue), or once it has appended indexEvery.
// The keys of the run are inserted in one statement, off the attempts'
// critical path; until then readers find the newest records through
// audit_keys (migration 0023), whose unindexed tail stays this short. It
// returns the largest seq indexed, 0 if it did nothing. A failure leaves
// the index behind, which costs readers a longer tail, not a record: it
// is rolled back alone (unless SQLite rolled back the whole transaction,
// when the commit fails and every write of the batch is refused). SQLite
// only: PostgreSQL keeps its indexes on audit.
func (db *DB) indexAudit(ctx context.Context, tx *Tx, batch []writeReq) int64 {
	if db.postgres {
		return 0
	}
	if tx.head == nil {
		return 0 // appended nothing: nothing new to index here
	}
	behind := tx.head.seq - db.indexedTo
	due := behind >= indexEvery
	for _, r := range batch {
		due = due || (r.patient && behind >= indexRun)
	}
	if !due {
		return 0
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT ix"); err != nil {
		return 0
	}
	// This transaction appended the trail's head, so the index now ends
	// there.
	to := tx.head.seq
	if _, err := tx.ExecContext(ctx, indexTail); err != nil {
		tx.ExecContext(ctx, "ROLLBACK TO ix")
		to = 0
	}
	tx.ExecContext(ctx, "RELEASE ix")
	// The Merkle tree's nodes for the same run, from the leaves witnessed
	// when they were appended (merkle.go growTree). A failure leaves the
	// tree behind for its readers to catch up (treeUp).
	if _, err := tx.ExecContext(ctx, "SAVEPOINT tree"); err != nil {
		return to
	}
	if err := db.growTree(ctx, tx); err != nil {
		tx.ExecContext(ctx, "ROLLBACK TO tree")
	}
	tx.ExecContext(ctx, "RELEASE tree")
	return to
}

// indexTail is the statement that adds the keys of every record after
// audit_index's prefix.
var indexTail = `
	INSERT INTO audit_index (seq, time, agent, action_id, phase, customer_id, order_id)
	SELECT seq, time, agent, action_id, phase, ` + indexedCustomer("audit") + `, ` + argsOrder + `
	FROM audit WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_index)`

// writerConn takes a connection for the writer from the pool. On
// PostgreSQL it pings it first, once per new writer connection: after a
// failover or a server restart the pool's idle connections are all dead,
// and a failed ping discards one (pgx reports it as driver.ErrBadConn) so
// the next try gets another or a new one, instead of the next batches
// failing on each dead one in turn.
func (db *DB) writerConn(ctx context.Context) (*sql.Conn, error) {
	// The batch's context never ends (commitBatch): bound the wait for a
	// connection when readers hold the whole pool, as lock_timeout bounds
	// the wait for the lock, so the batch fails closed instead of hanging.
	ctx, cancel := context.WithTimeout(ctx, writerConnWait)
	defer cancel()
	for try := 0; ; try++ {
		c, err := db.db.Conn(ctx)
		if err != nil || !db.postgres {
			return c, err
		}
		if err = c.PingContext(ctx); err == nil {
			return c, nil
		}
		c.Close()
		if try == pgMaxOpen {
			return nil, err
		}
	}
}

// writerConnWait bounds the writer's wait for a connection from the pool;
// a test shortens it.
var writerConnWait = 10 * time.Second

// begin starts a write transaction on the writer's connection with
// synchronous set to sync (FULL or NORMAL), changing it only when the last
// batch used the other one.
//
// On PostgreSQL the same choice is synchronous_commit, set for the one
// transaction: off for a batch of only outcomes and lookups, so its commit
// returns before the WAL is flushed. Committed and visible to every
// replica at once; only a crash of the PostgreSQL server in the next
// moments (wal_writer_delay) can lose it, which recovery repairs as on SQLite.
func (db *DB) begin(ctx context.Context, sync string) (*sql.Tx, error) {
	if db.wconn == nil {
		c, err := db.writerConn(ctx)
		if err != nil {
			return nil, err
		}
		db.wconn, db.wsync = c, ""
	}
	if db.postgres {
		tx, err := db.wconn.BeginTx(ctx, nil)
		if err == nil && sync == "NORMAL" {
			if _, err = tx.ExecContext(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
				tx.Rollback()
			}
		}
		if err != nil {
			db.wconn.Close() // a fresh connection for the next batch
			db.wconn = nil
			return nil, err
		}
		return tx, nil
	}
	if db.wsync != sync {
		if _, err := db.wconn.ExecContext(ctx, "PRAGMA synchronous = "+sync); err != nil {
			db.wconn.Close() // a fresh connection for the next batch
			db.wconn = nil
			return nil, err
		}
		db.wsync = sync
	}
	tx, err := db.wconn.BeginTx(ctx, nil)
	if err != nil {
		db.wconn.Close() // a fresh connection for the next batch
		db.wconn = nil
	}
	return tx, err
}

// write runs fn inside a durable write transaction that it may share with
// other writes of this process, and returns fn's error, or the commit's.
// fn must do all its reads of shared state (chain head, usage, statuses)
// through tx.
func (db *DB) write(fn func(tx *Tx) error) error {
	return db.enqueue(fn, false)
}

// writeLazy is write for a record whose loss in a power cut is repaired or
// tolerated (see "Deferred durability"): it returns once committed, without
// waiting for an fsync.
func (db *DB) writeLazy(fn func(tx *Tx) error) error {
	return db.enqueue(fn, true)
}

// AppendRead adds the audit record of an allowed lookup, like Append but
// without waiting for an fsync: a read changes nothing, so the record need
// not be on disk before the data is shown (see "Deferred durability").
// Refusals use Append.
func (db *DB) AppendRead(ctx context.Context, rec *Record) error {
	return db.writeLazy(db.appendFn(ctx, rec))
}

func (db *DB) enqueue(fn func(tx *Tx) error, lazy bool) error {
	r := writeReq{fn: fn, done: make(chan error, 1), lazy: lazy}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return unavailable("write", errClosed)
	}
	db.writes <- r
	db.closeMu.RUnlock()
	return <-r.done
}

// Tx is a write transaction whose statements are prepared once and reused:
// preparing a statement costs more than running it, and the writer runs the
// same few statements for every record. On SQLite database/sql keeps them
// (prepared); on PostgreSQL pgx does, per connection, on the writer's own:
// preparing through the pool there would wait for a second connection
// while holding the chain-head lock, which every replica's writes wait on.
type Tx struct {
	*sql.Tx
	db   *DB
	head *chainHead // the audit chain head this transaction appended, if any
}

type chainHead struct {
	seq  int64
	hash string
}

// ExecContext runs a cached prepared statement for query in the transaction.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if t.db.postgres {
		return t.Tx.ExecContext(ctx, query, args...)
	}
	st, err := t.db.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return t.Tx.StmtContext(ctx, st).ExecContext(ctx, args...)
}

// QueryRowContext runs a cached prepared statement for query in the
// transaction.
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if t.db.postgres {
		return t.Tx.QueryRowContext(ctx, query, args...)
	}
	st, err := t.db.prepared(ctx, query)
	if err != nil {
		return t.Tx.QueryRowContext(ctx, query, args...) // reports the same error
	}
	return t.Tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
}

// prepared returns the statement for query, preparing it on first use.
// database/sql then prepares it once per connection and keeps it. SQLite
// only (see Tx): its pool has no cap, so this never waits for a connection.
func (db *DB) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	db.stmtMu.Lock()
	defer db.stmtMu.Unlock()
	if st, ok := db.stmts[query]; ok {
		return st, nil
	}
	st, err := db.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if db.stmts == nil {
		db.stmts = map[string]*sql.Stmt{}
	}
	db.stmts[query] = st
	return st, nil
}

// ProbeWrite reports whether this process can write the database now, for
// a readiness check. It queues a write like any other, which waits for the
// write lock (BEGIN IMMEDIATE) behind the writes already queued, and
// rewrites the header's user_version with the value it has (unused by
// Mandate), so the commit really writes to the file system: a full or
// read-only disk, an I/O error or an immutable file fail it, where a
// transaction rolled back would write nothing and notice none of them.
// Nothing is added to any table. It gives up when ctx ends; the queued
// probe then finishes on its own.
func (db *DB) ProbeWrite(ctx context.Context) error {
	r := writeReq{fn: probeWrite, done: make(chan error, 1), lazy: true}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return unavailable("probe write", errClosed)
	}
	db.writes <- r
	db.closeMu.RUnlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return unavailable("probe write", ctx.Err())
	}
}

func probeWrite(tx *Tx) error {
	ctx := context.Background()
	if tx.db.postgres {
		// The transaction already waited for the chain-head lock; rewriting
		// the row with its own values makes the commit write WAL.
		if _, err := tx.Tx.ExecContext(ctx, "UPDATE chain_head SET id = id WHERE id = 1"); err != nil {
			return unavailable("probe write", err)
		}
		return nil
	}
	var v int64
	if err := tx.Tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return unavailable("probe write", err)
	}
	if _, err := tx.Tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.FormatInt(v, 10)); err != nil {
		return unavailable("probe write", err)
	}
	return nil
}
