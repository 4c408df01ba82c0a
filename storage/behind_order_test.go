package storage

// The order of write-behinds against the reads and decisions that follow
// them in the same process (behind.go).

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFailedOutcomeCountsBeforeNextDecision: an agent's refund
// fails at the backend; the agent is told nothing happened (the failed
// outcome, which gives the limits back, is queued behind the answer) and
// asks again at once. The second decision, in this same process, must
// not count the failed refund against the agent's limits. The writer is
// kept busy (SQLite's write lock held from another connection) while both
// are queued, so the order in which the writer takes them is the only
// thing under test.
func TestFailedOutcomeCountsBeforeNextDecision(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	db := openPath(t, path)
	first := executing(t, db, 1)[0]

	release := holdWriteLock(t, path)
	// An unrelated write keeps the writer waiting for the lock.
	busy := make(chan error, 1)
	go func() {
		busy <- db.Append(ctx, &Record{Agent: "x", Tool: "get_order", Decision: "allow", Phase: PhaseAttempt})
	}()
	for len(db.writes) != 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the writer took it and waits in BEGIN

	// The refund failed: its outcome is queued behind the answer.
	failed := *first
	failed.Status, failed.Error = StatusFailed, "card declined"
	db.RecordOutcomeBehind(ctx, &failed, &Record{Agent: first.Agent, Tool: first.Tool, Args: first.Args, Decision: "allow", Outcome: StatusFailed})

	// The agent asks again.
	var seen Usage
	again := &Action{ID: "act_behind_again", Agent: first.Agent, Tool: first.Tool, Args: first.Args, Decision: "allow",
		Status: StatusExecuting, CustomerID: first.CustomerID, AmountMinor: first.AmountMinor, Currency: first.Currency}
	decided := make(chan error, 1)
	go func() {
		decided <- db.DecideAndRecord(ctx, again, &Record{Agent: again.Agent, Tool: again.Tool, Args: again.Args, Decision: "allow"},
			func(u Usage) { seen = u })
	}()
	for deadline := time.Now().Add(5 * time.Second); len(db.writes) != 2; {
		if time.Now().After(deadline) {
			t.Fatal("the outcome and the decision were not both queued")
		}
		time.Sleep(time.Millisecond)
	}
	release()
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	if err := <-decided; err != nil {
		t.Fatal(err)
	}
	db.Settle(ctx)
	if seen.AgentRefunds24h != 0 || seen.CustomerRefunds30d != 0 || seen.AgentRefundedMinor24h != 0 {
		t.Fatalf("the retry was decided with usage %+v: the refund that failed (outcome queued before the retry) still counts", seen)
	}
}

// holdWriteLock takes SQLite's write lock on the database at path from
// another connection, as another process would, until release (or the
// end of the test): the writer waits for it and nothing commits.
func holdWriteLock(t *testing.T, path string) (release func() error) {
	t.Helper()
	other, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := other.BeginTx(context.Background(), nil) // BEGIN IMMEDIATE, from the DSN
	if err != nil {
		other.Close()
		t.Fatal(err)
	}
	var once sync.Once
	var rerr error
	release = func() error {
		once.Do(func() {
			rerr = tx.Rollback()
			other.Close()
		})
		return rerr
	}
	t.Cleanup(func() { release() })
	return release
}

// hookDriver wraps modernc's driver; hookRows, when set, is called as the
// rows of a query sent straight to a connection (the pool's reads) close.
type hookDriver struct{ driver.Driver }

var hookRows atomic.Pointer[func(query string)]

func init() {
	base, err := sql.Open("sqlite", "")
	if err != nil {
		panic(err)
	}
	sql.Register("sqlite-rowhook", hookDriver{base.Driver()})
	base.Close()
}

func (d hookDriver) Open(dsn string) (driver.Conn, error) {
	c, err := d.Driver.Open(dsn)
	if err != nil {
		return nil, err
	}
	return &hookConn{c}, nil
}

type hookConn struct{ driver.Conn }

func (c *hookConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *hookConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *hookConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return &hookRowsT{Rows: rows, query: query}, nil
}

func (c *hookConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

type hookRowsT struct {
	driver.Rows
	query string
}

func (r *hookRowsT) Close() error {
	err := r.Rows.Close()
	if f := hookRows.Load(); f != nil {
		(*f)(r.query)
	}
	return err
}

// TestActionSeesOutcomeQueuedBeforeIt: an outcome queued behind the answer
// before Action is called must be seen by Action (this process reads its
// own write-behinds), also when the writer commits it between Action's
// read of the row and its question whether anything is queued: asked
// after the read, nothing would be queued any more and the executing row
// read before the commit would be returned. The hook holds Action right
// after its read.
func TestActionSeesOutcomeQueuedBeforeIt(t *testing.T) {
	ctx := context.Background()
	saved := driverName
	driverName = "sqlite-rowhook"
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, err := Open(ctx, path)
	driverName = saved
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := executing(t, db, 1)[0]

	// Hold the outcome back: SQLite's write lock from another connection.
	unlock := holdWriteLock(t, path)
	queueOutcome(ctx, db, a) // queued before Action is called

	read, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(q string) {
		if strings.Contains(q, "FROM actions WHERE id = ?") {
			once.Do(func() { close(read); <-release })
		}
	}
	hookRows.Store(&hook)
	defer hookRows.Store(nil)

	type res struct {
		a   *Action
		err error
	}
	got := make(chan res, 1)
	go func() {
		x, err := db.Action(ctx, a.ID)
		got <- res{x, err}
	}()
	<-read // Action has read the row: executing
	unlock()
	for deadline := time.Now().Add(5 * time.Second); db.behindQueued(); {
		if time.Now().After(deadline) {
			t.Fatal("the outcome was never committed")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.a.Status != StatusExecuted {
		t.Fatalf("Action returned %s for an action whose outcome was queued (and is now committed) before the call; want executed", r.a.Status)
	}
}
