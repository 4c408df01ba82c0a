package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The query-plan test records every statement the hot path sends to SQLite
// (through a driver that wraps modernc's) and asks SQLite how it would run
// each one. A statement that reads a table which grows with every call by
// scanning it, rather than searching an index, costs more with every action
// ever recorded: that is a defect, found here rather than in production a
// million actions later. Because the statements are recorded, not listed by
// hand, a new query on the hot path is checked without anyone remembering to.

// planDriverName is the recording driver; every storage test opens through it
// (see init), and only databases registered with recordQueries are recorded.
const planDriverName = "sqlite-queryplan"

func init() {
	base, err := sql.Open("sqlite", "")
	if err != nil {
		panic(err)
	}
	sql.Register(planDriverName, planDriver{base.Driver()})
	base.Close()
	driverName = planDriverName
}

// recorded is one statement with the arguments of its first use.
type recorded struct {
	query string
	args  []driver.NamedValue
}

var planLog = struct {
	sync.Mutex
	on map[string][]recorded // DSN -> statements in first-use order
}{on: map[string][]recorded{}}

// recordQueries starts recording the statements sent to the database at path
// and returns a function that stops and returns them, each once.
func recordQueries(path string) func() []recorded {
	dsn := DSN(path)
	planLog.Lock()
	planLog.on[dsn] = []recorded{}
	planLog.Unlock()
	return func() []recorded {
		planLog.Lock()
		defer planLog.Unlock()
		got := planLog.on[dsn]
		delete(planLog.on, dsn)
		return got
	}
}

func record(dsn, query string, args []driver.NamedValue) {
	planLog.Lock()
	defer planLog.Unlock()
	seen, ok := planLog.on[dsn]
	if !ok {
		return
	}
	for _, r := range seen {
		if r.query == query {
			return
		}
	}
	planLog.on[dsn] = append(seen, recorded{query: query, args: append([]driver.NamedValue(nil), args...)})
}

type planDriver struct{ driver.Driver }

func (d planDriver) Open(dsn string) (driver.Conn, error) {
	c, err := d.Driver.Open(dsn)
	if err != nil {
		return nil, err
	}
	return &planConn{Conn: c, dsn: dsn}, nil
}

// planConn forwards to modernc's connection, recording each statement.
type planConn struct {
	driver.Conn
	dsn string
}

// planStmt records the arguments a prepared statement is first run with.
type planStmt struct {
	driver.Stmt
	dsn, query string
}

func (s *planStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	record(s.dsn, s.query, args)
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *planStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	record(s.dsn, s.query, args)
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

func (c *planConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &planStmt{Stmt: st, dsn: c.dsn, query: query}, nil
}

func (c *planConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	record(c.dsn, query, args)
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *planConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	record(c.dsn, query, args)
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c *planConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

// growing are the tables that gain rows with every call.
var growing = regexp.MustCompile(`^SCAN (actions|audit|audit_index|usage_totals|merkle_nodes|checkpoints)\b`)

// scans returns the plan lines of query that scan a growing table.
func scans(ctx context.Context, db *DB, q recorded) ([]string, error) {
	if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(q.query)), "PRAGMA") {
		return nil, nil // connection settings read no table
	}
	args := make([]any, len(q.args))
	for i, a := range q.args {
		if a.Name != "" {
			args[i] = sql.Named(a.Name, a.Value)
		} else {
			args[i] = a.Value
		}
	}
	rows, err := db.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q.query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var bad []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return nil, err
		}
		if growing.MatchString(detail) {
			bad = append(bad, detail)
		}
	}
	return bad, rows.Err()
}

// TestHotPathQueryPlans runs everything one tools/call can do to the
// database (count usage and record the attempt, look up an idempotency key,
// record the outcome, read an action, approve, claim, expire, append a
// read) and fails if any statement scans a growing table.
func TestHotPathQueryPlans(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db := openPath(t, path)
	clock := &stepClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), step: time.Second}
	db.Now = clock.Now

	stop := recordQueries(path)
	refund := func(id, key, status string) *Action {
		a := &Action{ID: id, Agent: "agent-a", Tool: "refund_order", Args: []byte(`{"order_id":"ord_1"}`),
			IdempotencyKey: key, CustomerID: "cus_1", AmountMinor: 1500, Currency: "USD"}
		rec := &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args}
		err := db.DecideAndRecord(ctx, a, rec, func(Usage) {
			a.Decision, a.Status = "allow", status
			if status == StatusPending {
				a.Decision, a.ExpiresAt = "require_approval", clock.Now().Add(time.Minute)
			}
		})
		if err != nil {
			t.Fatalf("DecideAndRecord(%s): %v", id, err)
		}
		return a
	}
	done := refund("act_1", "key-1", StatusExecuting)
	if _, err := db.ActionByKey(ctx, "agent-a", "key-1"); err != nil {
		t.Fatal(err)
	}
	if err := db.DecideAndRecord(ctx, &Action{ID: "act_dup", Agent: "agent-a", Tool: "refund_order", Args: []byte(`{}`), IdempotencyKey: "key-1"},
		&Record{}, func(Usage) {}); !errors.Is(err, ErrDuplicateKey) {
		t.Fatalf("a reused key: got %v, want ErrDuplicateKey", err)
	}
	done.Status, done.Result = StatusExecuted, []byte(`{"refund_id":"re_1"}`)
	if err := db.RecordOutcome(ctx, done, &Record{Agent: done.Agent, Tool: done.Tool, Outcome: StatusExecuted}); err != nil {
		t.Fatal(err)
	}
	failed := refund("act_2", "", StatusExecuting)
	failed.Status, failed.Error = StatusFailed, "refused"
	if err := db.RecordOutcome(ctx, failed, &Record{Agent: failed.Agent, Tool: failed.Tool, Outcome: StatusFailed}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Action(ctx, "act_1"); err != nil {
		t.Fatal(err)
	}
	if err := db.Append(ctx, &Record{Agent: "agent-a", Tool: "get_order", ActionID: "act_3", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	refund("act_4", "key-4", StatusPending)
	if _, err := db.Decide(ctx, "act_4", Review{Approver: "boss", Approve: true}, func(a *Action, u Usage) (Review, error) {
		return Review{Approve: true, Decision: "allow"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ClaimApproved(ctx, "act_4"); err != nil {
		t.Fatal(err)
	}
	refund("act_5", "", StatusPending)
	if n, err := db.ExpirePending(ctx, clock.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ExpirePending = %d, %v; want 1 expired", n, err)
	}
	if _, err := db.ActionsWithStatus(ctx, StatusExecuting, 10); err != nil {
		t.Fatal(err)
	}
	queries := stop()

	// The test must have seen the statements it is about, or it proves nothing.
	var sawKey, sawUsage, sawHead bool
	for _, q := range queries {
		sawKey = sawKey || strings.Contains(q.query, "idempotency_key = ?") && strings.HasPrefix(strings.TrimSpace(q.query), "SELECT")
		sawUsage = sawUsage || strings.Contains(q.query, "FROM usage_totals")
		sawHead = sawHead || strings.Contains(q.query, "FROM audit")
	}
	if !sawKey || !sawUsage || !sawHead || len(queries) < 10 {
		t.Fatalf("recorded %d statements (idempotency lookup %v, usage %v, chain head %v): the recorder missed the hot path", len(queries), sawKey, sawUsage, sawHead)
	}
	for _, q := range queries {
		bad, err := scans(ctx, db, q)
		if err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN %s: %v", q.query, err)
		}
		if len(bad) > 0 {
			t.Errorf("%s\n  scans a table that grows with every call: %s", strings.Join(strings.Fields(q.query), " "), strings.Join(bad, "; "))
		}
	}
}

// TestQueryPlanCheckFindsScan keeps the check honest: the idempotency lookup
// as it was before the fix scans actions, and the check must say so.
func TestQueryPlanCheckFindsScan(t *testing.T) {
	db := openTest(t)
	tests := []struct {
		query string
		scan  bool
	}{
		{`SELECT id FROM actions WHERE agent = ? AND idempotency_key = ?`, true},
		{`SELECT id FROM actions WHERE agent = ? AND idempotency_key = ? AND idempotency_key != ''`, false},
		{`SELECT id FROM actions WHERE id = ?`, false},
	}
	for _, tt := range tests {
		bad, err := scans(context.Background(), db, recorded{query: tt.query, args: []driver.NamedValue{{Ordinal: 1, Value: "a"}, {Ordinal: 2, Value: "k"}}[:strings.Count(tt.query, "?")]})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(bad) > 0; got != tt.scan {
			t.Errorf("%s: scan found = %v (%v), want %v", tt.query, got, bad, tt.scan)
		}
	}
}
