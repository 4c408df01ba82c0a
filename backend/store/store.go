// Package store is Mandate's embedded default system of record: customers,
// orders and refunds in a SQLite file of their own. It refuses invalid
// changes itself (over-refunds, cancelling shipped orders, duplicate emails)
// inside one BEGIN IMMEDIATE transaction, so the checks hold even when
// several processes share the file.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/internal/wlock"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// The store satisfies every backend interface, so a deployment can use it for
// all three systems of record.
var (
	_ backend.Payments  = (*Store)(nil)
	_ backend.Orders    = (*Store)(nil)
	_ backend.Customers = (*Store)(nil)
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a handle on one database file. Several handles, in one process or
// many, may share a file: every read-then-write runs in a BEGIN IMMEDIATE
// transaction, which SQLite serializes across connections and processes.
type Store struct {
	db *sql.DB
	// w is a pool of one connection for read-write transactions. Several
	// BEGIN IMMEDIATEs from one process would wait for each other in
	// SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between tries: the
	// 100 ms+ tails of concurrent refunds. Queued here they run back to
	// back. Across processes BEGIN IMMEDIATE still serializes them, and
	// wl queues them in the kernel rather than in the busy handler.
	w  *sql.DB
	wl *wlock.Lock
	// wturn is this process's turn on w: a write takes it for its whole
	// transaction, and a lookup that finds it free reads on w too (warm).
	wturn chan struct{}

	// rd runs lookups with the read pool's prepared statements; ws are the
	// write connection's, for beginWrite's transactions. unprepared counts
	// queries that ran without one (a test keeps it at zero).
	rd         reader
	ws         stmts
	unprepared atomic.Int64

	// Now is the clock used for created_at stamps and for Seed; tests fix it.
	Now func() time.Time
}

// Open opens the database at path, creating it if needed, and applies any
// migrations it has not seen yet. Every pragma is in the DSN because a PRAGMA
// sent through Exec would reach only one pooled connection.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, mandate.Errorf(mandate.EINVALID, "store: database path is empty")
	}
	dsn := "file:" + path +
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, dbError(err)
	}
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		db.Close()
		return nil, dbError(err)
	}
	w.SetMaxOpenConns(1)
	keepReaders(db)
	s := &Store{db: db, w: w, wl: wlock.Open(path), wturn: make(chan struct{}, 1), Now: time.Now}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		w.Close()
		s.wl.Close()
		return nil, err
	}
	if err := s.prepare(context.Background()); err != nil {
		db.Close()
		w.Close()
		s.wl.Close()
		return nil, dbError(err)
	}
	return s, nil
}

// idleReaders is how many read connections a pool keeps open between
// calls: as many as `mandate serve` runs tool calls at once on stdio (its
// worker pool). database/sql keeps 2 by default, so with more calls in
// flight it closed the others on return and opened new ones on the next
// burst, each opening the file, applying the DSN's pragmas and preparing
// its statements again: a tenth of serve's CPU with 32 calls in flight.
// An idle connection costs its page cache (at most SQLite's default 2 MB,
// in practice the few pages it read); connections idle for a minute close.
const idleReaders = 32

// keepReaders sizes db's pool of idle read connections (idleReaders).
func keepReaders(db *sql.DB) {
	db.SetMaxIdleConns(idleReaders)
	db.SetConnMaxIdleTime(time.Minute)
}

// prepare prepares the statements of every call, once the migrations have
// made the tables they name.
func (s *Store) prepare(ctx context.Context) error {
	rs, err := prepareAll(ctx, s.db, readQueries, &s.unprepared)
	if err != nil {
		return err
	}
	ws, err := prepareAll(ctx, s.w, writeQueries(), &s.unprepared)
	if err != nil {
		rs.close()
		return err
	}
	s.rd, s.ws = reader{db: s.db, stmts: rs}, ws
	return nil
}

// beginWrite starts a read-write transaction on the write connection, once
// this process's turn in the cross-process queue (wlock) has come. end rolls
// back (a no-op after Commit) and gives the connection and the turn back.
func (s *Store) beginWrite(ctx context.Context) (tx writeTx, end func(), err error) {
	select { // waits for this process's other writes
	case s.wturn <- struct{}{}:
	case <-ctx.Done():
		return writeTx{}, nil, ctx.Err()
	}
	conn, err := s.w.Conn(ctx)
	if err != nil {
		<-s.wturn
		return writeTx{}, nil, err
	}
	held := s.wl.Lock()
	tx.Tx, err = conn.BeginTx(ctx, nil)
	if err != nil {
		s.wl.Unlock(held)
		conn.Close()
		<-s.wturn
		return writeTx{}, nil, err
	}
	tx.stmts = s.ws
	return tx, func() {
		tx.Rollback()
		s.wl.Unlock(held)
		conn.Close()
		<-s.wturn
	}, nil
}

// warm returns where a lookup should read: on the write connection when no
// write of this process holds it, else on the read pool. SQLite drops a
// connection's page cache whenever another connection has written, so
// right after a refund a read connection reads every page of its B-tree
// path again, while the connection that wrote them still holds them:
// BenchmarkFactsAfterRefund, the reads a guarded refund makes before it
// decides, takes about 80 µs on the read pool and 40 µs here. A lookup never
// waits for the write connection; done gives it back.
func (s *Store) warm() (q reader, done func()) {
	select {
	case s.wturn <- struct{}{}:
		return reader{db: s.w, stmts: s.ws}, func() { <-s.wturn }
	default:
		return s.rd, func() {}
	}
}

// Close closes the statements and the database.
func (s *Store) Close() error {
	return errors.Join(s.rd.stmts.close(), s.ws.close(), s.w.Close(), s.db.Close(), s.wl.Close())
}

// migrate applies the embedded migrations in name order, each in its own
// transaction, recording each in the migrations table so it runs once.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx,
		`CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return dbError(err)
	}
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := s.migrateFile(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// migrateFile applies one migration unless it is recorded as applied. The
// check and the apply share a transaction so two processes opening a new
// file at once do not both run it.
func (s *Store) migrateFile(ctx context.Context, name string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return dbError(err)
	}
	defer tx.Rollback()

	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM migrations WHERE name = ?`, name).Scan(&n); err != nil {
		return dbError(err)
	} else if n != 0 {
		return nil
	}
	buf, err := fs.ReadFile(migrationFS, name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(buf)); err != nil {
		return dbError(fmt.Errorf("migration %s: %w", name, err))
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO migrations (name, applied_at) VALUES (?, ?)`,
		name, formatTime(s.now())); err != nil {
		return dbError(err)
	}
	return dbError(tx.Commit())
}

// now reads the injected clock, falling back to time.Now for a Store built
// without Open.
func (s *Store) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}

// timeFormat is RFC 3339 with fixed-width nanoseconds, so stored times sort
// as text.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }

// dbError reports a database failure as unavailable. The driver's error stays
// in the chain (Error, errors.Is) for the server log, never in Message, which
// may reach an agent. Errors that already carry a code pass through; nil
// stays nil.
func dbError(err error) error {
	var e *mandate.Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("%w: %w",
		mandate.Errorf(mandate.EUNAVAILABLE, "the order database is unavailable; nothing was changed, try again later"), err)
}
