// Package storage is Mandate's own database: the audit trail and the state
// of every action. It is SQLite (modernc, no cgo) in WAL mode by default,
// shared by every `mandate serve` process and `mandate admin`: anything that
// must be serialized across them (the audit chain head, an action's status)
// is read and written inside one BEGIN IMMEDIATE transaction. Given a
// postgres:// URL it is PostgreSQL instead, shared by replicas on several
// machines, with the same API and guarantees (postgres.go).
package storage

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/wlock"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// migrationFS holds each engine's migrations, in migrations/sqlite and
// migrations/postgres, numbered alike so that a version is the same schema
// on both. A file directly in migrations/ (where they used to live) is
// taken as SQLite's; TestMigrationsPaired fails until it has a PostgreSQL
// twin and is moved.
//
//go:embed migrations
var migrationFS embed.FS

// DB is the gateway database.
type DB struct {
	db   *sql.DB
	Path string
	// Now is the clock; tests replace it.
	Now func() time.Time

	writes     chan writeReq // to the group-commit writer (writer.go)
	writerDone chan struct{}
	wconn      *sql.Conn   // the writer's own connection (writer.go)
	indexedTo  int64       // the audit_index prefix as this writer last saw it (indexAudit)
	wsync      string      // its synchronous setting: "FULL" or "NORMAL"
	wlock      *wlock.Lock // queues this process's writer behind other processes' (writer.go)
	closeMu    sync.RWMutex
	closed     bool
	stmtMu     sync.Mutex
	stmts      map[string]*sql.Stmt      // prepared once, see Tx
	onCommit   func(CommitStats)         // WithCommitObserver (writer.go)
	auditKey   *AuditKey                 // chains appended records with its MAC (mac.go); nil: plain
	optErr     error                     // an option that could not apply (AuditKeyFile): Open fails
	tree       atomic.Pointer[treeState] // the Merkle tree's last range (merkle.go)
	leaves     witnessed                 // SQLite: leaves appended, not yet in the stored tree (merkle.go)
	behind     behindLog                 // write-behinds not yet answered (behind.go)
	hurry      chan struct{}             // settle asks the writer to commit patient writes now
	journal    journal                   // this process's lookup journal (journal.go)
	pairs      chan struct{}             // PostgreSQL: readers holding two connections (snapshotConns)

	// postgres is set for a PostgreSQL database (postgres.go); Path is
	// then its URL without the password.
	postgres bool
}

// nowFunc is the clock a new DB starts with.
var nowFunc = time.Now

// driverName is the database/sql driver Open uses; the query-plan test
// swaps in one that records every statement.
var driverName = "sqlite"

// DSN returns the connection string for a SQLite file with every pragma in
// it, because a PRAGMA run with Exec reaches only one pooled connection.
// synchronous(FULL) makes each commit durable before it returns.
func DSN(path string) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)&_txlock=immediate"
}

// idleConns is how many connections the pool keeps between calls: as
// many as `mandate serve` runs tool calls at once on stdio.
const idleConns = 32

// Open opens or creates the database at path and brings its schema up to
// date. path is a SQLite file, or a postgres:// or postgresql:// URL of a
// PostgreSQL database (which must exist; its tables are created). Errors
// never quote a URL's password.
// An option that cannot apply (an unusable audit key file) fails it
// before the file is created or read.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	if IsURL(path) {
		return openPostgres(ctx, path, opts)
	}
	sdb, err := sql.Open(driverName, DSN(path))
	if err != nil {
		return nil, err
	}
	// Keep as many idle connections as serve runs calls at once: with
	// database/sql's default of 2, each burst of reads opened (and
	// prepared statements on) connections it closed again right after.
	sdb.SetMaxIdleConns(idleConns)
	sdb.SetConnMaxIdleTime(time.Minute)
	db := &DB{db: sdb, Path: path, Now: nowFunc}
	for _, o := range opts {
		o(db)
	}
	if db.optErr != nil {
		sdb.Close()
		return nil, db.optErr
	}
	// Switching a brand-new file to WAL takes a lock SQLite will not wait
	// for, so several processes opening it at once can see SQLITE_BUSY
	// once; they retry, briefly.
	for attempt := 0; ; attempt++ {
		err = db.migrate(ctx)
		if err == nil || attempt == 20 || !strings.Contains(err.Error(), "SQLITE_BUSY") {
			break
		}
		time.Sleep(time.Duration(10+attempt*10) * time.Millisecond)
	}
	if err == nil && db.auditKey != nil {
		err = db.CheckWriteKey(ctx)
	}
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.startWriter()
	if err := db.repairTree(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: the Merkle tree of the audit trail: %w", path, err)
	}
	return db, nil
}

// Close finishes the queued writes and closes the database. Writes after
// Close fail with an unavailable error.
func (db *DB) Close() error {
	db.flushLeaves() // the leaves this process appended, into the stored tree (merkle.go)
	db.closeMu.Lock()
	if !db.closed {
		db.closed = true
		close(db.writes)
	}
	db.closeMu.Unlock()
	<-db.writerDone
	db.closeJournal()
	db.stmtMu.Lock()
	for _, st := range db.stmts {
		st.Close()
	}
	db.stmtMu.Unlock()
	return db.db.Close()
}

// migrationFiles lists an engine's migrations ("sqlite" or "postgres") in
// the order they apply, by file name.
func migrationFiles(engine string) ([]string, error) {
	names, err := fs.Glob(migrationFS, "migrations/"+engine+"/*.sql")
	if err != nil {
		return nil, err
	}
	if engine == "sqlite" {
		legacy, err := fs.Glob(migrationFS, "migrations/*.sql")
		if err != nil {
			return nil, err
		}
		names = append(names, legacy...)
	}
	sort.Slice(names, func(i, j int) bool { return path.Base(names[i]) < path.Base(names[j]) })
	return names, nil
}

// migrationName is how the migrations table records a file: the name it
// had before the engines had their own directories, so a SQLite database
// migrated then does not apply its migrations again.
func migrationName(file string) string { return "migrations/" + path.Base(file) }

// migrate applies the embedded migrations not yet applied, in name order,
// each in its own transaction. SQLite's BEGIN IMMEDIATE serializes two
// processes migrating at once; PostgreSQL takes an advisory lock
// (migratePostgres).
func (db *DB) migrate(ctx context.Context) error {
	engine := "sqlite"
	if db.postgres {
		engine = "postgres"
	}
	names, err := migrationFiles(engine)
	if err != nil {
		return err
	}
	if db.postgres {
		return db.migratePostgres(ctx, names)
	}
	if _, err := db.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)`); err != nil {
		return err
	}
	for _, name := range names {
		if err := db.migrateFile(ctx, name); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

func (db *DB) migrateFile(ctx context.Context, name string) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM migrations WHERE name = ?`, migrationName(name)).Scan(&n); err != nil {
		return err
	} else if n > 0 {
		return nil
	}
	body, err := migrationFS.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO migrations (name) VALUES (?)`, migrationName(name)); err != nil {
		return err
	}
	return tx.Commit()
}

// unavailable wraps a database failure as an error safe to show: the
// details stay in the wrapped error for the log.
func unavailable(op string, err error) error {
	return &dbError{op: op, err: err}
}

type dbError struct {
	op  string
	err error
}

func (e *dbError) Error() string { return fmt.Sprintf("storage: %s: %v", e.op, e.err) }
func (e *dbError) Unwrap() []error {
	return []error{e.err, mandate.Errorf(mandate.EUNAVAILABLE, "the audit database is unavailable, so nothing was done; try again later")}
}

// timeFormat is RFC 3339 in UTC with exactly nine fractional digits:
// fixed width, so comparing the text (as SQL does) compares the times.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// timeText formats t the one way it is stored and hashed.
func timeText(t time.Time) string { return t.UTC().Format(timeFormat) }
