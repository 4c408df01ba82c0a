package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// openTest opens a fresh database file in a temporary directory and closes
// it when the test ends.
func openTest(t testing.TB) *DB {
	t.Helper()
	return openPath(t, filepath.Join(t.TempDir(), "mandate.db"))
}

// openPath opens the database at path and closes it when the test ends.
// Under TestPostgres it opens the PostgreSQL database standing for path in
// this test instead (engineDB).
func openPath(t testing.TB, path string) *DB {
	t.Helper()
	path = engineDB(t, path)
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// stepClock is a clock for DB.Now that moves on by step at every reading.
type stepClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// schemaObjects lists the type and name of every object in the schema.
func schemaObjects(t *testing.T, db *DB) []string {
	t.Helper()
	rows, err := db.db.Query(`SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var typ, name string
		if err := rows.Scan(&typ, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, typ+" "+name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// appliedMigrations returns the names in the migrations table, in order.
func appliedMigrations(t *testing.T, db *DB) []string {
	t.Helper()
	rows, err := db.db.Query(`SELECT name FROM migrations ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// embeddedMigrations returns the names of the migrations Open must apply.
func embeddedMigrations(t *testing.T) []string {
	t.Helper()
	files, err := migrationFiles("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no embedded migrations")
	}
	var names []string
	for _, f := range files {
		names = append(names, migrationName(f))
	}
	sort.Strings(names)
	return names
}

func schemaVersion(t *testing.T, db *DB) int {
	t.Helper()
	var v int
	if err := db.db.QueryRow(`PRAGMA schema_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func countRows(t *testing.T, db *DB, table string) int {
	t.Helper()
	var n int
	if err := db.db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOpenCreatesSchema(t *testing.T) {
	db := openTest(t)
	have := map[string]bool{}
	for _, o := range schemaObjects(t, db) {
		have[o] = true
	}
	// What the audit trail and the action state rest on; later migrations
	// may add more.
	for _, want := range []string{
		"table audit",
		"table actions",
		"table migrations",
		"trigger audit_no_update",
		"trigger audit_no_delete",
		"table audit_index",
		"index audit_index_action_id",
		"index audit_index_time",
		"view audit_keys",
	} {
		if !have[want] {
			t.Errorf("schema has no %s", want)
		}
	}
	if got, want := appliedMigrations(t, db), embeddedMigrations(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("applied migrations = %v, want %v", got, want)
	}
	if _, err := os.Stat(db.Path); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

func TestOpenAgainIsNoOp(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	first := openPath(t, path)
	if err := first.Append(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	version := schemaVersion(t, first)
	applied := appliedMigrations(t, first)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		db := openPath(t, path)
		if got := schemaVersion(t, db); got != version {
			t.Fatalf("open %d: schema_version = %d, want %d: a migration ran again", i+2, got, version)
		}
		if got := appliedMigrations(t, db); strings.Join(got, ",") != strings.Join(applied, ",") {
			t.Fatalf("open %d: applied migrations = %v, want %v", i+2, got, applied)
		}
		if got := countRows(t, db, "audit"); got != 1 {
			t.Fatalf("open %d: %d audit records, want the 1 written before", i+2, got)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenConcurrently starts several handles at once on a database that
// has no schema yet, as when an MCP client launches several `mandate serve`
// processes together: each must open, and each migration must be applied
// exactly once.
func TestOpenConcurrently(t *testing.T) {
	t.Run("WAL file without schema", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mandate.db")
		// Create the file in WAL mode, the one step this case leaves out.
		raw, err := sql.Open("sqlite", DSN(path))
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.Ping(); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		openConcurrently(t, path, 4)
	})
	t.Run("new file", func(t *testing.T) {
		// The race this catches (two first opens switching a new file to
		// WAL at once) failed about 1% of opens before it was fixed: 40
		// rounds of 4 catch its return about as often as not, in 20 s of
		// CI under -race rather than 53.
		for range 40 {
			openConcurrently(t, filepath.Join(t.TempDir(), "mandate.db"), 4)
		}
	})
}

func openConcurrently(t *testing.T, path string, n int) {
	t.Helper()
	dbs := make([]*DB, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = Open(context.Background(), path) })
	}
	wg.Wait()
	for i, db := range dbs {
		if db != nil {
			t.Cleanup(func() { db.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("Open %d of %d at once: %v", i, n, errs[i])
		}
	}
	if got, want := appliedMigrations(t, dbs[0]), embeddedMigrations(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("applied migrations = %v, want %v", got, want)
	}
}

// dsnPragmas returns the pragmas that DSN puts in the connection string, by
// name, with their values lower-cased.
func dsnPragmas(t *testing.T, path string) map[string]string {
	t.Helper()
	u, err := url.Parse(DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, p := range u.Query()["_pragma"] {
		name, val, ok := strings.Cut(strings.TrimSuffix(p, ")"), "(")
		if !ok {
			t.Fatalf("pragma %q in DSN has no value", p)
		}
		m[strings.ToLower(name)] = strings.ToLower(val)
	}
	return m
}

// TestPragmasOnEveryConnection holds several pooled connections at once and
// checks that each runs with the DSN's pragmas, not only the first.
func TestPragmasOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	fromDSN := dsnPragmas(t, db.Path)
	synchronous := map[string]string{"off": "0", "normal": "1", "full": "2", "extra": "3"}

	type want struct{ pragma, value string }
	wants := []want{
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL: each commit is durable before it returns
		{"busy_timeout", fromDSN["busy_timeout"]},
		{"foreign_keys", "1"},
	}
	for _, w := range wants {
		dsn := fromDSN[w.pragma]
		if w.pragma == "synchronous" {
			dsn = synchronous[dsn]
		}
		if dsn != w.value {
			t.Fatalf("DSN sets %s to %q, want %q", w.pragma, fromDSN[w.pragma], w.value)
		}
	}
	if ms, err := strconv.Atoi(fromDSN["busy_timeout"]); err != nil || ms < 1000 {
		t.Fatalf("busy_timeout in DSN = %q, want at least 1000 ms", fromDSN["busy_timeout"])
	}

	const n = 4
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := db.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	if open := db.db.Stats().OpenConnections; open < n {
		t.Fatalf("%d open connections, want at least %d distinct ones", open, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n*len(wants))
	for i, c := range conns {
		wg.Go(func() {
			for _, w := range wants {
				var got string
				if err := c.QueryRowContext(ctx, "PRAGMA "+w.pragma).Scan(&got); err != nil {
					errs <- fmt.Errorf("connection %d: PRAGMA %s: %v", i, w.pragma, err)
				} else if strings.ToLower(got) != w.value {
					errs <- fmt.Errorf("connection %d: %s = %q, want %q", i, w.pragma, got, w.value)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestTransactionsBeginImmediate checks that a transaction takes the write
// lock when it begins, before any statement: that is what serializes the
// read of the chain head with the append across processes.
func TestTransactionsBeginImmediate(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()

	// A second handle with no busy timeout fails at once if the lock is held.
	other, err := sql.Open("sqlite", "file:"+db.Path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otx, err := other.BeginTx(ctx, nil)
	if err == nil {
		otx.Rollback()
		t.Fatal("a second writer began while the first transaction was open: transactions are not BEGIN IMMEDIATE")
	}
	if !strings.Contains(err.Error(), "SQLITE_BUSY") && !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second writer: %v, want SQLITE_BUSY", err)
	}
}

// TestUnavailable breaks the database in several ways and checks that every
// write fails with code unavailable, a message that shows nothing of the
// SQL, and nothing half-written.
func TestUnavailable(t *testing.T) {
	cases := []struct {
		name string
		// brk breaks db; it returns a cleanup to run before the checks
		// that nothing was written.
		brk func(t *testing.T, db *DB) (restore func())
	}{
		{
			name: "read-only file and directory",
			brk: func(t *testing.T, db *DB) func() {
				// Close the pooled connections so the next write must open the file again.
				db.db.SetMaxIdleConns(0)
				dir := filepath.Dir(db.Path)
				files, _ := filepath.Glob(db.Path + "*")
				for _, f := range files {
					if err := os.Chmod(f, 0o444); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Chmod(dir, 0o555); err != nil {
					t.Fatal(err)
				}
				restore := func() {
					os.Chmod(dir, 0o755)
					for _, f := range files {
						os.Chmod(f, 0o644)
					}
				}
				t.Cleanup(restore) // also when the test stops early, so TempDir can be removed
				if f, err := os.OpenFile(db.Path, os.O_WRONLY, 0); err == nil {
					f.Close()
					restore()
					t.Skip("this process can write a 0444 file (running as root, which chmod does not stop); the other cases cover an unwritable database")
				}
				return restore
			},
		},
		{
			name: "read-only connection",
			brk: func(t *testing.T, db *DB) func() {
				// One connection, made read-only: SQLite itself refuses the write.
				db.db.SetMaxOpenConns(1)
				if _, err := db.db.Exec(`PRAGMA query_only = 1`); err != nil {
					t.Fatal(err)
				}
				return func() {}
			},
		},
		{
			name: "write lock held by another handle",
			brk: func(t *testing.T, db *DB) func() {
				// The DSN's busy timeout of seconds, cut short so the test is quick.
				short := regexp.MustCompile(`busy_timeout\(\d+\)`)
				dsn := DSN(db.Path)
				if len(short.FindAllString(dsn, -1)) != 1 {
					t.Fatalf("DSN %s has no single busy_timeout", dsn)
				}
				pool, err := sql.Open("sqlite", short.ReplaceAllString(dsn, "busy_timeout(50)"))
				if err != nil {
					t.Fatal(err)
				}
				old := db.db
				db.db = pool
				old.Close()

				other := openPath(t, db.Path)
				tx, err := other.db.Begin()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(`INSERT INTO migrations (name) VALUES ('lock')`); err != nil {
					t.Fatal(err)
				}
				return func() { tx.Rollback() }
			},
		},
		{
			name: "closed handle",
			brk: func(t *testing.T, db *DB) func() {
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				return func() {}
			},
		},
	}
	writes := []struct {
		name  string
		write func(ctx context.Context, db *DB) error
	}{
		{"RecordAttempt", func(ctx context.Context, db *DB) error {
			return db.RecordAttempt(ctx, &Action{ID: "act_1", Agent: "demo-agent", Tool: "refund_order",
				Args: []byte(`{"order_id":"ord_1001"}`), Decision: "allow", Status: StatusExecuting},
				&Record{Agent: "demo-agent", Tool: "refund_order", Decision: "allow"})
		}},
		{"RecordOutcome", func(ctx context.Context, db *DB) error {
			return db.RecordOutcome(ctx, &Action{ID: "act_1", Status: StatusExecuted},
				&Record{Agent: "demo-agent", Tool: "refund_order", Decision: "allow", Outcome: StatusExecuted})
		}},
		{"Append", func(ctx context.Context, db *DB) error {
			return db.Append(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t)
			restore := c.brk(t, db)
			for _, w := range writes {
				err := w.write(context.Background(), db)
				if err == nil {
					restore()
					t.Fatalf("%s succeeded on a broken database", w.name)
				}
				if got := mandate.ErrorCode(err); got != mandate.EUNAVAILABLE {
					t.Fatalf("%s: ErrorCode = %q, want %q (err: %v)", w.name, got, mandate.EUNAVAILABLE, err)
				}
				msg := mandate.ErrorMessage(err)
				if msg == "" {
					t.Fatalf("%s: empty message", w.name)
				}
				lower := strings.ToLower(msg)
				for _, leak := range []string{"insert", "select", "update", "begin", "commit", "values", "sql",
					"readonly", "read-only", "locked", "closed", "storage:", strings.ToLower(db.Path)} {
					if strings.Contains(lower, leak) {
						t.Fatalf("%s: message %q shows %q", w.name, msg, leak)
					}
				}
				// The detail is kept for the log.
				t.Logf("%s: %v", w.name, err)
				var de *dbError
				if !errors.As(err, &de) || de.err == nil {
					t.Fatalf("%s: %v keeps no underlying error for the log", w.name, err)
				}
			}
			restore()

			// Fail closed: nothing of the refused writes reached the file.
			check := openPath(t, db.Path)
			if n := countRows(t, check, "actions"); n != 0 {
				t.Fatalf("%d actions written by failed writes", n)
			}
			if n := countRows(t, check, "audit"); n != 0 {
				t.Fatalf("%d audit records written by failed writes", n)
			}
		})
	}
}

// TestConnsStayOpen: after as many connections at once as serve runs
// calls, they stay open for the next burst (database/sql keeps 2 by
// default, and each new SQLite connection applies the DSN's pragmas and
// prepares its statements anew).
func TestConnsStayOpen(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	for round := range 3 {
		conns := make([]*sql.Conn, idleConns)
		for i := range conns {
			c, err := db.db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		for _, c := range conns {
			c.Close()
		}
		if st := db.db.Stats(); st.MaxIdleClosed != 0 || st.OpenConnections < idleConns {
			t.Fatalf("round %d: %d connections closed for being idle past the limit, %d open; want 0 and at least %d",
				round, st.MaxIdleClosed, st.OpenConnections, idleConns)
		}
	}
}
