package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL, the second engine (issue 12). Several Mandate replicas on
// several machines share one PostgreSQL database; every guarantee SQLite
// gives by serializing writers in one file is given here by PostgreSQL's own
// locks, each named where it is used.
//
// Driver: pgx v5 through its database/sql adapter (pgx/v5/stdlib), not its
// native pool. Every query, scan and transaction in this package is written
// once against database/sql (*sql.DB, *sql.Tx, *sql.Row); going through
// stdlib keeps that code shared by both engines, with database/sql's pool
// (sized in openPostgres). The native pgxpool would have meant a second copy
// of every method for a speed-up that does not matter next to a commit's
// round trip.
//
// SQL differs between the engines in one place: pgConn below rewrites each
// statement the package writes for SQLite into PostgreSQL's dialect as it is
// sent (placeholders, one reserved word, NUL bytes), so a query is written
// once, and only a statement whose meaning differs (a migration, the lock
// taken at the start of a write) has an engine-specific text, chosen where it
// runs.

// IsURL reports whether db names a PostgreSQL database (a postgres:// or
// postgresql:// URL) rather than a SQLite file.
func IsURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// Redact returns db safe to log or show: a URL with its password replaced
// by xxxxx (also in a password= query parameter); a file path unchanged.
func Redact(db string) string {
	if !IsURL(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		// Unparseable: show only the scheme, since the password could be
		// anywhere in it.
		return db[:strings.Index(db, "://")+3] + "(unparseable URL)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// urlPassword is the password written in db, "" if none.
func urlPassword(db string) string {
	u, err := url.Parse(db)
	if err != nil {
		return ""
	}
	if p, ok := u.User.Password(); ok {
		return p
	}
	return u.Query().Get("password")
}

// redactedError hides a password that an error from the driver might quote.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// scrub returns err with every occurrence of secret removed from its message.
func scrub(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, "xxxxx"), err: err}
}

// Pool sizing. One replica's writer holds one connection for its batches;
// readers (the approval queue, audit export, lookups outside the write path)
// take the others. A write transaction holds the chain-head lock, so more
// connections do not make writes faster: they only let reads run beside it.
//
// A reader that needs two connections at once (snapshotConns) takes its
// second while holding its first; pgPairs bounds how many do so at once,
// so that with the writer's connection taken they cannot hold every
// connection between them and each wait for another forever.
const (
	pgMaxOpen = 8
	pgMaxIdle = 4
	pgPairs   = (pgMaxOpen - 1) / 2
)

// openPostgres opens the database at the URL dsn (password in the URL,
// PGPASSWORD or a passfile, as libpq does).
func openPostgres(ctx context.Context, dsn string, opts []Option) (*DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, scrub(err, urlPassword(dsn))
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	// Bound every wait for a lock as SQLite's busy_timeout does, and end
	// the transaction of a process that stopped (not died: a dead one's
	// connection closes and PostgreSQL rolls it back at once) while it
	// held the chain-head lock, so one frozen replica cannot stop the rest.
	for k, v := range map[string]string{"lock_timeout": "10s", "idle_in_transaction_session_timeout": "60s"} {
		if _, ok := cfg.RuntimeParams[k]; !ok {
			cfg.RuntimeParams[k] = v
		}
	}
	sdb := sql.OpenDB(&pgConnector{Connector: stdlib.GetConnector(*cfg)})
	sdb.SetMaxOpenConns(pgMaxOpen)
	sdb.SetMaxIdleConns(pgMaxIdle)
	db := &DB{db: sdb, Path: Redact(dsn), Now: nowFunc, postgres: true, pairs: make(chan struct{}, pgPairs)}
	for _, o := range opts {
		o(db)
	}
	if db.optErr != nil {
		sdb.Close()
		return nil, db.optErr
	}
	err = db.migrate(ctx)
	if err == nil && db.auditKey != nil {
		err = db.CheckWriteKey(ctx)
	}
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open %s: %w", Redact(dsn), scrub(err, urlPassword(dsn)))
	}
	db.startWriter()
	return db, nil
}

// pgAdvisoryKey is the key of the advisory lock under which migrations run:
// any constant, the same in every replica ("mandate" in ASCII).
const pgAdvisoryKey = 0x6d616e64617465

// migratePostgres applies the PostgreSQL migrations not yet applied, all in
// one transaction holding a transaction-level advisory lock: two replicas
// starting at once queue on the lock, and the second finds everything
// applied. PostgreSQL's DDL is transactional, so a failed migration leaves
// nothing half done.
//
// A role that may not create tables (the application role of the owner/app
// split, docs/scaling.md) can open an up-to-date database: nothing is
// created unless a migration is missing.
func (db *DB) migratePostgres(ctx context.Context, names []string) (err error) {
	defer func() { err = grantsHint(err) }()
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+strconv.Itoa(pgAdvisoryKey)+`)`); err != nil {
		return err
	}
	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT to_regclass('migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return err
	}
	applied := map[string]bool{}
	if !exists {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE migrations (name TEXT PRIMARY KEY)`); err != nil {
			return err
		}
	} else {
		rows, err := tx.QueryContext(ctx, `SELECT name FROM migrations`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			applied[n] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	for _, name := range names {
		if applied[migrationName(name)] {
			continue
		}
		body, err := migrationFS.ReadFile(name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO migrations (name) VALUES (?)`, migrationName(name)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// grantsHint adds to a permission error met while opening the database
// (SQLSTATE 42501: "permission denied for schema public" or "for table
// migrations") what the operator left out, since the application role of
// the owner/app split can do nothing until the owner has created the
// schema and granted it the tables.
func grantsHint(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		return err
	}
	return fmt.Errorf("%w: this role may not read or create Mandate's tables; open the database once as its owner (that creates or upgrades the schema), then grant this role the tables (docs/scaling.md, \"Setting up the database\")", err)
}

// lockChainHead starts every PostgreSQL write transaction (see writer.go):
// SELECT … FOR UPDATE on the one chain_head row. Every write of every
// replica takes this row lock first, so write transactions run one at a
// time across replicas, as BEGIN IMMEDIATE makes them on SQLite. In READ
// COMMITTED each later statement of the transaction takes a new snapshot,
// which holds everything the previous holders committed before they let
// go, so every read-modify-write done in a write is serialized by this one
// lock: the chain head (appendRecord reads the last record, as on SQLite,
// and no other replica can append until this one commits), limit counters,
// the pending cap, idempotency keys, an approval or a recovery claimed
// once, the live policy. One lock rather than finer row locks or
// SERIALIZABLE: every write appends to the one chain anyway, so finer locks
// would serialize on the head all the same, and SERIALIZABLE would turn
// the same conflicts into retries.
func lockChainHead(ctx context.Context, tx *sql.Tx) error {
	var id int
	return tx.QueryRowContext(ctx, `SELECT id FROM chain_head WHERE id = 1 FOR UPDATE`).Scan(&id)
}

// isUniqueViolation reports whether err is a unique-constraint violation
// of constraint (PostgreSQL's name) or of columns (SQLite's message names
// "table.column, …").
func isUniqueViolation(err error, constraint, columns string) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505" && pe.ConstraintName == constraint
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed: "+columns)
}

// isForeignKeyViolation reports whether err is a foreign-key violation on
// either engine.
func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23503"
	}
	return err != nil && strings.Contains(err.Error(), "FOREIGN KEY")
}

// The SQL rewriting layer: a database/sql connector whose connections
// rewrite each statement from the package's SQLite dialect before pgx sees it.

type pgConnector struct{ driver.Connector }

func (c *pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{conn.(*stdlib.Conn)}, nil
}

// pgConn is a pgx connection that rewrites statements (rebind) and
// arguments (pgArgs).
type pgConn struct{ *stdlib.Conn }

func (c *pgConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.Conn.PrepareContext(ctx, rebind(query))
	if err != nil {
		return nil, err
	}
	return &pgStmt{st, query}, nil
}

func (c *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	pgTrace(query, args)
	return c.Conn.ExecContext(ctx, rebind(query), pgArgs(args))
}

func (c *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	pgTrace(query, args)
	return c.Conn.QueryContext(ctx, rebind(query), pgArgs(args))
}

type pgStmt struct {
	driver.Stmt
	query string
}

func (s *pgStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	pgTrace(s.query, args)
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, pgArgs(args))
}

func (s *pgStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	pgTrace(s.query, args)
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, pgArgs(args))
}

// pgTrace sees every statement sent to PostgreSQL, as written (before
// rebind); the query-plan test replaces it to record the hot path.
var pgTrace = func(query string, args []driver.NamedValue) {}

// pgArgs sends a string holding a NUL byte as bytea: PostgreSQL's text
// cannot hold NUL, and the limit counters' scopes ("agent_refunds\x00NAME")
// separate their parts with it, so usage_totals.scope is bytea there.
// Free text is cleaned of NUL before it gets here (cleanText): into a text
// column the bytea would be refused.
func pgArgs(args []driver.NamedValue) []driver.NamedValue {
	for i, a := range args {
		if s, ok := a.Value.(string); ok && strings.IndexByte(s, 0) >= 0 {
			out := append([]driver.NamedValue(nil), args...)
			out[i].Value = []byte(s)
			for j := i + 1; j < len(out); j++ {
				if s, ok := out[j].Value.(string); ok && strings.IndexByte(s, 0) >= 0 {
					out[j].Value = []byte(s)
				}
			}
			return out
		}
	}
	return args
}

var rebound sync.Map // query -> its PostgreSQL text

// rebind turns a statement written for SQLite into PostgreSQL's dialect:
// ? and ?N placeholders become $N, and the bare word user (a column name
// in SQLite; in PostgreSQL a reserved word meaning current_user) becomes
// "user". String literals, quoted identifiers, dollar-quoted bodies and
// comments are left alone.
func rebind(q string) string {
	if v, ok := rebound.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(q) && q[j] != c {
				j++
			}
			b.WriteString(q[i:min(j+1, len(q))])
			i = j + 1
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			b.WriteString(q[i : i+j])
			i += j
		case c == '$' && i+1 < len(q) && q[i+1] == '$':
			j := strings.Index(q[i+2:], "$$")
			if j < 0 {
				b.WriteString(q[i:])
				i = len(q)
				break
			}
			b.WriteString(q[i : i+2+j+2])
			i += 2 + j + 2
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			if j > i+1 {
				b.WriteString("$" + q[i+1:j])
			} else {
				n++
				b.WriteString("$" + strconv.Itoa(n))
			}
			i = j
		case isIdent(c):
			j := i
			for j < len(q) && (isIdent(q[j]) || q[j] >= '0' && q[j] <= '9') {
				j++
			}
			word := q[i:j]
			if strings.EqualFold(word, "user") && (i == 0 || q[i-1] != '.') {
				word = `"user"`
			}
			b.WriteString(word)
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	out := b.String()
	rebound.Store(q, out)
	return out
}

func isIdent(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// snapshotConns returns two connections reading one consistent snapshot,
// and end, which closes it, for a reader that merges two result sets
// (CrossCheck). SQLite reads both streams on one connection inside one
// BEGIN, so conn2 is conn. PostgreSQL's READ COMMITTED would take a new
// snapshot per statement, and one connection cannot stream two result sets
// at once, so there both are REPEATABLE READ transactions, the second
// importing the first's snapshot (pg_export_snapshot, SET TRANSACTION
// SNAPSHOT): both see exactly the same committed state. At most pgPairs
// callers hold or wait for a pair at once; the others wait their turn
// (until ctx ends) without holding a connection.
func (db *DB) snapshotConns(ctx context.Context) (conn, conn2 *sql.Conn, end func(), err error) {
	bg := context.WithoutCancel(ctx)
	if !db.postgres {
		conn, err = db.db.Conn(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
			conn.Close()
			return nil, nil, nil, err
		}
		return conn, conn, func() { conn.ExecContext(bg, "ROLLBACK"); conn.Close() }, nil
	}
	select {
	case db.pairs <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, nil, ctx.Err()
	}
	conn, err = db.db.Conn(ctx)
	if err != nil {
		<-db.pairs
		return nil, nil, nil, err
	}
	begin := db.snapshotBegin()
	var snap string
	if _, err = conn.ExecContext(ctx, begin); err == nil {
		err = conn.QueryRowContext(ctx, "SELECT pg_export_snapshot()").Scan(&snap)
	}
	if err == nil {
		conn2, err = db.db.Conn(ctx)
	}
	if err == nil {
		if _, err = conn2.ExecContext(ctx, begin); err == nil {
			_, err = conn2.ExecContext(ctx, "SET TRANSACTION SNAPSHOT "+pgQuote(snap))
		}
	}
	end = func() {
		conn.ExecContext(bg, "ROLLBACK")
		conn.Close()
		if conn2 != nil {
			conn2.ExecContext(bg, "ROLLBACK")
			conn2.Close()
		}
		<-db.pairs
	}
	if err != nil {
		end()
		return nil, nil, nil, err
	}
	return conn, conn2, end, nil
}

// pgQuote quotes s as a PostgreSQL string literal.
func pgQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// snapshotBegin is the statement that starts a read transaction whose
// statements all see one snapshot: BEGIN on SQLite (a read transaction in
// WAL mode is one snapshot); on PostgreSQL, whose READ COMMITTED takes a new
// snapshot per statement, REPEATABLE READ.
func (db *DB) snapshotBegin() string {
	if db.postgres {
		return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	}
	return "BEGIN"
}
