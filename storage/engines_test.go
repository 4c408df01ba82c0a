package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/pgtest"
)

// Both engines run the same tests. Every test in engineTests runs as is on
// SQLite and again under TestPostgres, where openTest and openPath open a
// PostgreSQL database (a fresh one per test, one per path the test names,
// so a test that opens one path twice opens one database twice). Tests
// left out of the table test what only SQLite has (its pragmas, its file,
// query plans, its sqlite3-shell tampering); the PostgreSQL counterparts of
// those are the TestPG tests in this file.

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var engineTests = []struct {
	name string
	fn   func(*testing.T)
}{
	{"ActionRoundTrip", TestActionRoundTrip},
	{"RecordAttemptDefaults", TestRecordAttemptDefaults},
	{"RecordAttemptDuplicateWritesNothing", TestRecordAttemptDuplicateWritesNothing},
	{"ActionNotFound", TestActionNotFound},
	{"APIKeys", TestAPIKeys},
	{"APIKeyTimesSetByHand", TestAPIKeyTimesSetByHand},
	{"APIKeyAudit", TestAPIKeyAudit},
	{"Decide", TestDecide},
	{"DecideUnknownAction", TestDecideUnknownAction},
	{"ClaimApproved", TestClaimApproved},
	{"ExpirePending", TestExpirePending},
	{"ActionsFilter", TestActionsFilter},
	{"DecideRaces", TestDecideRaces},
	{"UsersAndSessions", TestUsersAndSessions},
	{"DecideCheck", TestDecideCheck},
	{"ApprovalDebitsLimits", TestApprovalDebitsLimits},
	{"WindowCountsEverythingInside", TestWindowCountsEverythingInside},
	{"RunningTotals", TestRunningTotals},
	{"ApprovedBeforeCountedAt", TestApprovedBeforeCountedAt},
	{"UsageRunningTotalsMigration", TestUsageRunningTotalsMigration},
	{"HashChain", TestHashChain},
	{"HashCoversEveryField", TestHashCoversEveryField},
	{"RecordJSONFromDatabase", TestRecordJSONFromDatabase},
	{"AppendConcurrentHandles", TestAppendConcurrentHandles},
	{"DecideAndRecordCancelled", TestDecideAndRecordCancelled},
	{"RecordsFilter", TestRecordsFilter},
	{"RecordsTimeFilterSubsecond", TestRecordsTimeFilterSubsecond},
	{"RecordsStopsOnCallbackError", TestRecordsStopsOnCallbackError},
	{"LivePolicyIsNewestLoad", TestLivePolicyIsNewestLoad},
	{"DecideUnderStalePolicy", TestDecideUnderStalePolicy},
	{"ClaimApprovedUnder", TestClaimApprovedUnder},
	{"LiveRatesIsNewestLoad", TestLiveRatesIsNewestLoad},
	{"DecideWithStaleRates", TestDecideWithStaleRates},
	{"UsageReadsLiveRates", TestUsageReadsLiveRates},
	{"PendingPages", TestPendingPages},
	{"PendingBadFilter", TestPendingBadFilter},
	{"AgentPendingCounted", TestAgentPendingCounted},
	{"ActionsLimitAndCount", TestActionsLimitAndCount},
	{"LoginFailuresAcrossProcesses", TestLoginFailuresAcrossProcesses},
	{"CountLoginAttempt", TestCountLoginAttempt},
	{"SessionLimits", TestSessionLimits},
	{"SetPasswordEndsToken", TestSetPasswordEndsToken},
	{"VerifyIntact", TestVerifyIntact},
	{"Lineage", TestLineage},
	{"Users", TestUsers},
	{"AgentLineageShowsApprovalOfOlderAttempt", TestAgentLineageShowsApprovalOfOlderAttempt},
	{"CrossCheckAgrees", TestCrossCheckAgrees},
	{"CrossCheckArgsRewrite", TestCrossCheckArgsRewrite},
	{"KeyedChain", TestKeyedChain},
	{"AppendRefusesForeignHead", TestAppendRefusesForeignHead},
	{"MerkleInclusionEveryRecord", TestMerkleInclusionEveryRecord},
	{"LeafIsExportedRecord", TestLeafIsExportedRecord},
	{"SuspendResume", TestSuspendResume},
	{"SuspendRefusesStalePolicy", TestSuspendRefusesStalePolicy},
	{"ClaimRevert", TestClaimRevert},
	{"MerkleRepair", TestMerkleRepair},
	{"FreeTextWithNUL", TestFreeTextWithNUL},
}

// TestPostgres runs engineTests against PostgreSQL.
func TestPostgres(t *testing.T) {
	pgtest.Get(t)
	for _, tc := range engineTests {
		t.Run(tc.name, tc.fn)
	}
}

// onPostgres reports whether t runs under TestPostgres.
func onPostgres(t testing.TB) bool { return strings.HasPrefix(t.Name(), "TestPostgres/") }

var (
	engineMu  sync.Mutex
	engineDBs = map[string]string{} // test name + path -> database URL
)

// engineDB is the database a test opens for path: path itself on SQLite;
// under TestPostgres, the database created for this test and path.
func engineDB(t testing.TB, p string) string {
	t.Helper()
	if !onPostgres(t) || IsURL(p) {
		return p
	}
	key := p // a temporary path: one per test, shared by its subtests
	engineMu.Lock()
	defer engineMu.Unlock()
	if u, ok := engineDBs[key]; ok {
		return u
	}
	u := pgtest.URL(t)
	engineDBs[key] = u
	return u
}

// TestMigrationsPaired: every migration exists for both engines under the
// same name, so a version number means the same schema on both, and none is
// left in the old flat directory.
func TestMigrationsPaired(t *testing.T) {
	lite, err := migrationFiles("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := migrationFiles("postgres")
	if err != nil {
		t.Fatal(err)
	}
	names := func(files []string) string {
		var out []string
		for _, f := range files {
			out = append(out, path.Base(f))
			if path.Dir(f) == "migrations" {
				t.Errorf("%s is directly in storage/migrations: git mv it to migrations/sqlite/ and write its PostgreSQL twin in migrations/postgres/", f)
			}
		}
		return strings.Join(out, " ")
	}
	if l, p := names(lite), names(pg); l != p {
		t.Fatalf("migrations differ between the engines:\nsqlite:   %s\npostgres: %s", l, p)
	}
}

// TestRebind checks the rewriting of SQLite-dialect statements for
// PostgreSQL.
func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = $1 AND c = $2`},
		{`SELECT ?1, ?2, ?1`, `SELECT $1, $2, $1`},
		{`SELECT user FROM sessions WHERE user = ?`, `SELECT "user" FROM sessions WHERE "user" = $1`},
		{`SELECT '?', "user", s.user, username FROM x -- user ?` + "\n" + `WHERE a = ?`, `SELECT '?', "user", s.user, username FROM x -- user ?` + "\n" + `WHERE a = $1`},
		{`CREATE FUNCTION f() AS $$ user ? $$; SELECT ?`, `CREATE FUNCTION f() AS $$ user ? $$; SELECT $1`},
	} {
		if got := rebind(tc.in); got != tc.want {
			t.Errorf("rebind(%q) =\n%q, want\n%q", tc.in, got, tc.want)
		}
	}
}

// TestRedactURL: a URL's password never shows, wherever it is written.
func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mandate.db", "mandate.db"},
		{"postgres://app:s3cret@db:5432/mandate", "postgres://app:xxxxx@db:5432/mandate"},
		{"postgresql://app@db/mandate?password=s3cret&sslmode=require", "postgresql://app@db/mandate?password=xxxxx&sslmode=require"},
		{"postgres://app:s3cret@db:bad port/x", "postgres://(unparseable URL)"},
	} {
		if got := Redact(tc.in); got != tc.want || strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// An error opening a database quotes the URL without its password.
	_, err := Open(context.Background(), "postgres://app:s3cret@127.0.0.1:1/mandate?connect_timeout=1")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open with an unreachable URL: err = %v, want an error without the password", err)
	}
}

// superTamper runs stmts as the PostgreSQL superuser with triggers off
// (session_replication_role = replica), as an operator with psql and full
// rights could: what audit verify must catch.
func superTamper(t *testing.T, url string, stmts ...string) {
	t.Helper()
	all := "SET session_replication_role = replica; " + strings.Join(stmts, "; ")
	if err := pgtest.Exec(url, all); err != nil {
		t.Fatalf("tamper %q: %v", all, err)
	}
}

// TestPGAuditAppendOnly: the application cannot change or remove a record
// (the triggers refuse, even for the table's owner), and audit verify
// catches an edit, a delete and a reordering made by someone who can
// switch the triggers off.
func TestPGAuditAppendOnly(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	build := func(t *testing.T) (*DB, string) {
		url := pgtest.URL(t)
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		for i := range 6 {
			r := &Record{Time: time.Date(2026, 11, 25, 9, 0, i, 0, time.UTC), Agent: "demo-agent", Tool: "refund_order",
				Args: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%d"}`, i)), Decision: "allow", Phase: PhaseAttempt}
			if err := db.Append(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.Verify(ctx); err != nil {
			t.Fatalf("Verify before tampering: %v", err)
		}
		return db, url
	}
	t.Run("refused", func(t *testing.T) {
		db, url := build(t)
		for _, s := range []string{`UPDATE audit SET agent = 'x' WHERE seq = 3`, `DELETE FROM audit WHERE seq = 3`, `TRUNCATE audit`} {
			if _, err := db.db.ExecContext(ctx, s); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s through Mandate's connection: err = %v, want the append-only trigger to refuse", s, err)
			}
			if err := pgtest.Exec(url, s); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s as the superuser: err = %v, want the append-only trigger to refuse", s, err)
			}
		}
		if _, err := db.Verify(ctx); err != nil {
			t.Fatalf("Verify after refused tampering: %v", err)
		}
	})
	for _, tc := range []struct {
		name, sql string
		seq       int64
		category  string
	}{
		{"edit", `UPDATE audit SET args = '{"order_id":"ord_999"}' WHERE seq = 4`, 4, "edited"},
		{"delete", `DELETE FROM audit WHERE seq = 3`, 3, "deleted"},
		{"reorder", `UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1`, 2, "reordered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, url := build(t)
			superTamper(t, url, tc.sql)
			_, err := db.Verify(ctx)
			var ce *ChainError
			if !asChainError(err, &ce) || ce.Seq != tc.seq || !strings.HasPrefix(ce.Reason, tc.category) {
				t.Fatalf("Verify after %s = %v, want %s at record %d", tc.name, err, tc.category, tc.seq)
			}
		})
	}
}

func asChainError(err error, ce **ChainError) bool {
	c, ok := err.(*ChainError)
	*ce = c
	return ok
}

// TestPGOneChainAcrossHandles: several handles on one PostgreSQL database,
// each with its own writer and pool (as replicas on several machines have),
// append concurrently, and the result is one unbroken chain with every
// record in it exactly once. The chain-head row lock is what orders them.
func TestPGOneChainAcrossHandles(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	url := pgtest.URL(t)
	const handles, each = 3, 40
	var dbs []*DB
	for range handles {
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	var wg sync.WaitGroup
	errs := make(chan error, handles*each)
	for h, db := range dbs {
		for i := range each {
			wg.Go(func() {
				r := &Record{Agent: fmt.Sprintf("replica-%d", h), Tool: "get_order", Args: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), Decision: "allow", Phase: PhaseAttempt}
				if err := db.Append(ctx, r); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	res, err := dbs[0].Verify(ctx)
	if err != nil || res.Count != handles*each {
		t.Fatalf("Verify = %+v, %v; want %d records in one chain", res, err, handles*each)
	}
	// The readiness probe writes through the same lock and adds nothing.
	if err := dbs[1].ProbeWrite(ctx); err != nil {
		t.Fatalf("ProbeWrite: %v", err)
	}
	if seq, head, err := dbs[2].Head(ctx); err != nil || seq != res.Count || head != res.Head {
		t.Fatalf("after ProbeWrite the head is %d %s (%v), want %d %s", seq, head, err, res.Count, res.Head)
	}
}

// TestPGCopy moves a SQLite trail with something in every kind of table
// into PostgreSQL: the chain verifies at both ends, what the guard reads
// (usage counters, the live policy, users, keys, actions) reads the same,
// appending continues the same chain, and a copy into a database that is not
// empty or from a trail that does not verify is refused.
func TestPGCopy(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	lite := openTest(t)
	if err := lite.RecordPolicy(ctx, &PolicyLoad{Version: "v1", Model: "m", Policy: "p", Command: "serve start"}); err != nil {
		t.Fatal(err)
	}
	if err := lite.AddUser(ctx, "alice", "hash"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lite.CreateSession(ctx, "alice", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lite.CreateAPIKey(ctx, "demo-agent", time.Time{}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		a := &Action{ID: fmt.Sprintf("act_%d", i), Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`),
			Decision: "allow", Status: StatusExecuting, CustomerID: "cus_1", AmountMinor: 1000, Currency: "USD", IdempotencyKey: fmt.Sprintf("k%d", i)}
		if err := lite.RecordAttempt(ctx, a, &Record{Agent: "demo-agent", Tool: "refund_order", Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
	}
	probe := &Action{Agent: "demo-agent", Tool: "refund_order", CustomerID: "cus_1", Currency: "USD"}
	wantUsage, err := lite.Usage(ctx, probe)
	if err != nil || wantUsage.AgentRefundedMinor24h != 5000 {
		t.Fatalf("usage before the copy = %+v, %v", wantUsage, err)
	}

	url := pgtest.URL(t)
	pg, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	rep, err := Copy(ctx, lite, pg)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if rep.Records != 7 || rep.Tables["actions"] != 5 || rep.Tables["users"] != 1 || rep.Tables["sessions"] != 1 || rep.Tables["usage_totals"] == 0 {
		t.Fatalf("Copy = %+v", rep)
	}
	if u, err := pg.Usage(ctx, probe); err != nil || u != wantUsage {
		t.Fatalf("usage after the copy = %+v, %v; want %+v", u, err, wantUsage)
	}
	if live, err := pg.LivePolicy(ctx); err != nil || live == nil || live.Version != "v1" || live.Policy != "p" {
		t.Fatalf("live policy after the copy = %+v, %v", live, err)
	}
	if a, err := pg.ActionByKey(ctx, "demo-agent", "k3"); err != nil || a.ID != "act_3" {
		t.Fatalf("ActionByKey after the copy = %+v, %v", a, err)
	}
	// The copy continues: the next record chains after the copied head, and
	// the next policy load numbers after the copied ones.
	if err := pg.Append(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	l := &PolicyLoad{Version: "v1", Model: "m", Policy: "p", Command: "serve start"}
	if err := pg.RecordPolicy(ctx, l); err != nil || l.Seq != 2 {
		t.Fatalf("RecordPolicy after the copy: seq %d, %v; want 2", l.Seq, err)
	}
	if res, err := pg.Verify(ctx); err != nil || res.Count != 8 { // the user's addition, the key's creation, 5 attempts, this one
		t.Fatalf("Verify after appending to the copy = %+v, %v", res, err)
	}
	if _, err := Copy(ctx, lite, pg); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Copy into a database with records: %v, want a refusal", err)
	}
}

// TestPGHotPathQueryPlans is TestHotPathQueryPlans for PostgreSQL: it
// records every statement one call's work sends (pgTrace) and asks
// PostgreSQL for each plan with sequential scans disabled, so that a plan
// which can only scan a growing table shows as one (on tables this small
// the planner would otherwise rightly prefer scanning).
func TestPGHotPathQueryPlans(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	clock := &stepClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), step: time.Second}
	db.Now = clock.Now

	var mu sync.Mutex
	type rec struct {
		q    string
		args []any
	}
	seen := map[string]rec{}
	pgTrace = func(q string, args []driver.NamedValue) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := seen[q]; !ok {
			vals := make([]any, len(args))
			for i, a := range args {
				vals[i] = a.Value
			}
			seen[q] = rec{q, vals}
		}
	}
	defer func() { pgTrace = func(string, []driver.NamedValue) {} }()

	refund := func(id, key, status string) *Action {
		a := &Action{ID: id, Agent: "agent-a", Tool: "refund_order", Args: []byte(`{"order_id":"ord_1"}`),
			IdempotencyKey: key, CustomerID: "cus_1", AmountMinor: 1500, Currency: "USD"}
		if err := db.DecideAndRecord(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args}, func(Usage) {
			a.Decision, a.Status = "allow", status
			if status == StatusPending {
				a.Decision, a.ExpiresAt = "require_approval", clock.Now().Add(time.Minute)
			}
		}); err != nil {
			t.Fatalf("DecideAndRecord(%s): %v", id, err)
		}
		return a
	}
	done := refund("act_1", "key-1", StatusExecuting)
	if _, err := db.ActionByKey(ctx, "agent-a", "key-1"); err != nil {
		t.Fatal(err)
	}
	done.Status = StatusExecuted
	if err := db.RecordOutcome(ctx, done, &Record{Agent: done.Agent, Tool: done.Tool, Outcome: StatusExecuted}); err != nil {
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
	if err := db.AppendRead(ctx, &Record{Agent: "agent-a", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	refund("act_5", "", StatusPending)
	if _, err := db.ExpirePending(ctx, clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ActionsWithStatus(ctx, StatusExecuting, 10); err != nil {
		t.Fatal(err)
	}
	pgTrace = func(string, []driver.NamedValue) {}

	conn, err := db.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, r := range seen {
		verb := strings.ToUpper(strings.Fields(r.q)[0])
		if verb != "SELECT" && verb != "INSERT" && verb != "UPDATE" && verb != "DELETE" {
			continue // SAVEPOINT, SET LOCAL, BEGIN: no table read
		}
		plan, bad := pgScans(t, conn, r.q, r.args...)
		checked++
		if len(bad) > 0 {
			t.Errorf("%s\n  scans a table that grows with every call (%s):\n%s", strings.Join(strings.Fields(r.q), " "), strings.Join(bad, "; "), plan)
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d statements: the trace missed the hot path", checked)
	}
}

// pgNode is a plan node reading a growing table.
var pgNode = regexp.MustCompile(`(Seq Scan|Index Scan using \S+|Index Scan Backward using \S+|Index Only Scan using \S+|Index Only Scan Backward using \S+|Bitmap Heap Scan) on (actions|audit|usage_totals|merkle_nodes)\b`)

// pgScans explains q on conn (where enable_seqscan is off) and returns the
// plan and its nodes that read a growing table whole: a sequential scan, or
// an index scan with no index condition (every entry of the index, in order).
func pgScans(t *testing.T, conn *sql.Conn, q string, args ...any) (string, []string) {
	t.Helper()
	rows, err := conn.QueryContext(context.Background(), "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	var bad []string
	for i, line := range plan {
		m := pgNode.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[1] == "Seq Scan" {
			bad = append(bad, strings.TrimSpace(line))
			continue
		}
		// The node's details follow, indented, until the next node.
		cond := false
		for _, d := range plan[i+1:] {
			if strings.Contains(d, "->") {
				break
			}
			cond = cond || strings.Contains(d, "Index Cond:") || strings.Contains(d, "Recheck Cond:")
		}
		if !cond {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	return strings.Join(plan, "\n"), bad
}

// TestPGQueryPlanCheckFindsScan keeps pgScans honest: a lookup by a column
// no index covers reads the whole audit table, and the check says so.
func TestPGQueryPlanCheckFindsScan(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	db, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q    string
		scan bool
	}{
		{`SELECT seq FROM audit WHERE error = ?`, true},
		{`SELECT seq FROM audit ORDER BY seq`, true},
		{`SELECT seq FROM audit WHERE seq = ?`, false},
		{`SELECT id FROM actions WHERE agent = ? AND idempotency_key = ? AND idempotency_key != ''`, false},
	} {
		args := []any{"x", "y"}[:strings.Count(tc.q, "?")]
		if tc.q == `SELECT seq FROM audit WHERE seq = ?` {
			args = []any{int64(1)}
		}
		plan, bad := pgScans(t, conn, tc.q, args...)
		if got := len(bad) > 0; got != tc.scan {
			t.Errorf("%s: scan found = %v, want %v\n%s", tc.q, got, tc.scan, plan)
		}
	}
}

// TestPGReconnects: when PostgreSQL ends every connection of Mandate's (a
// failover, a restart, an operator's pg_terminate_backend), the writer
// finds out when it begins its next batch, before anything of it has run,
// and begins again on a fresh connection: no write fails, the chain is
// intact.
func TestPGReconnects(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	url := pgtest.URL(t)
	db, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec := func() *Record { return &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt} }
	if err := db.Append(ctx, rec()); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.Exec(url, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := range 3 {
		if err := db.Append(ctx, rec()); err != nil {
			if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
				t.Fatalf("append %d after the connections ended: %v, want unavailable", i, err)
			}
			failed++
			t.Logf("append %d: %v", i, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of 3 appends failed after the connections ended, want none: the writer takes a fresh connection before the batch runs", failed)
	}
	if res, err := db.Verify(ctx); err != nil || res.Count != int64(4-failed) {
		t.Fatalf("Verify = %+v, %v; want %d records", res, err, 4-failed)
	}
}

// TestPGCopyBack copies a PostgreSQL trail into a new SQLite file: limit
// counters' scopes come back as text and the Merkle tree's hashes as bytes,
// so both read as before and the chain and the tree still agree.
func TestPGCopyBack(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	pg, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	for i := range 3 {
		a := &Action{ID: fmt.Sprintf("act_%d", i), Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`),
			Decision: "allow", Status: StatusExecuting, CustomerID: "cus_1", AmountMinor: 700, Currency: "USD"}
		if err := pg.RecordAttempt(ctx, a, &Record{Agent: "demo-agent", Tool: "refund_order", Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
	}
	probe := &Action{Agent: "demo-agent", Tool: "refund_order", CustomerID: "cus_1", Currency: "USD"}
	want, err := pg.Usage(ctx, probe)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pg.TreeRoot(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	lite := openTest(t)
	if _, err := Copy(ctx, pg, lite); err != nil {
		t.Fatalf("Copy to SQLite: %v", err)
	}
	if got, err := lite.Usage(ctx, probe); err != nil || got != want || got.AgentRefundedMinor24h != 2100 {
		t.Fatalf("usage after copying back = %+v, %v; want %+v", got, err, want)
	}
	if got, err := lite.TreeRoot(ctx, 3); err != nil || string(got) != string(root) {
		t.Fatalf("tree root after copying back = %x, %v; want %x", got, err, root)
	}
	// The copy builds SQLite's search keys (audit_index) from the trail.
	var indexed int
	if err := lite.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_index`).Scan(&indexed); err != nil || indexed != 3 {
		t.Fatalf("audit_index after copying to SQLite holds %d records, %v; want 3", indexed, err)
	}
	if err := lite.Append(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	if res, err := lite.Verify(ctx); err != nil || res.Count != 4 {
		t.Fatalf("Verify after appending to the copy = %+v, %v", res, err)
	}
}

// TestPGAppRoleWithoutGrants: a role that was not granted Mandate's tables
// (the owner never opened the database, or the GRANTs were not run) fails
// to open it, closed, with an error saying what to do.
func TestPGAppRoleWithoutGrants(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	url := pgtest.URL(t)
	if err := pgtest.Exec(url, `DO $$ BEGIN CREATE ROLE w12_nogrants LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`); err != nil {
		t.Fatal(err)
	}
	appURL := strings.Replace(url, "postgres://postgres@", "postgres://w12_nogrants@", 1)
	for _, step := range []string{"no schema", "schema, no grants"} {
		if step == "schema, no grants" {
			db, err := Open(ctx, url) // the owner creates the schema
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
		}
		db, err := Open(ctx, appURL)
		if err == nil {
			db.Close()
			t.Fatalf("%s: the role without grants opened the database", step)
		}
		if !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "open the database once as its owner") {
			t.Fatalf("%s: %v, want permission denied and what to do", step, err)
		}
	}
}

// TestPGCopyRefusesNUL: a SQLite trail written before free text was
// cleaned (cleanText) can hold a record with NUL in a text column, which
// PostgreSQL's text cannot store and which the record's hash covers. Copy
// refuses it naming the record and the column, and copies nothing.
func TestPGCopyRefusesNUL(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	lite := openTest(t)
	if err := lite.Append(ctx, &Record{Agent: "demo-agent", Tool: "get_order", Phase: PhaseAttempt}); err != nil {
		t.Fatal(err)
	}
	// Record 2 as an older version appended it, NUL and all.
	_, prev, err := lite.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{Time: time.Now(), Agent: "demo-agent", Tool: "refund_order", Phase: PhaseOutcome, Outcome: StatusFailed, Error: "declined\x00", Seq: 2, PrevHash: prev}
	f := r.fields()
	r.Hash = hashRecord(prev, r.Seq, r.hashed())
	if _, err := lite.db.ExecContext(ctx, `INSERT INTO audit (seq, time, agent, tool, args, attrs, decision, rule, policy_version,
			action_id, phase, outcome, error, duration_us, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`,
		r.Seq, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], r.PrevHash, r.Hash); err != nil {
		t.Fatal(err)
	}
	if res, err := lite.Verify(ctx); err != nil || res.Count != 2 {
		t.Fatalf("the SQLite trail: Verify = %+v, %v; want 2 records intact", res, err)
	}
	pg, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	_, err = Copy(ctx, lite, pg)
	if mandate.ErrorCode(err) != mandate.ECONFLICT || !strings.Contains(err.Error(), "audit record 2 holds a NUL byte in error") {
		t.Fatalf("Copy of a trail with NUL in record 2: %v, want a conflict naming audit record 2 and its column", err)
	}
	if res, err := pg.Verify(ctx); err != nil || res.Count != 0 {
		t.Fatalf("after the refused copy the destination holds %d records (%v), want none", res.Count, err)
	}
}
