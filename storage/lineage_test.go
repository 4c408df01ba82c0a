package storage

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/internal/pgtest"
)

// lineageDB records a mixed history from two agents and a person: account
// changes, refunds (one approved), a cancellation in a trace, lookups, and
// a record whose arguments are not JSON. It returns the database, the
// record seqs of each action by action id, and the time between the old
// and the recent records.
func lineageDB(t *testing.T, path string) (*DB, map[string][]int64, time.Time) {
	t.Helper()
	ctx := context.Background()
	db := openPath(t, path)
	clock := &stepClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), step: time.Second}
	db.Now = clock.Now
	act := func(id, agent, tool, args, customer, status, trace string) *Action {
		t.Helper()
		a := &Action{ID: id, Agent: agent, Tool: tool, Args: []byte(args), CustomerID: customer}
		rec := &Record{Agent: agent, Tool: tool, Args: a.Args, TraceID: trace}
		if err := db.DecideAndRecord(ctx, a, rec, func(Usage) {
			a.Decision, a.Status = "allow", status
			if status == StatusPending {
				a.Decision, a.ExpiresAt = "require_approval", clock.Now().Add(time.Hour)
			}
			rec.Decision = a.Decision
		}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return a
	}
	done := func(a *Action, changes string, trace string) {
		t.Helper()
		a.Status, a.Result = StatusExecuted, []byte(`{}`)
		if err := db.RecordOutcome(ctx, a, &Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Outcome: StatusExecuted,
			Changes: json.RawMessage(changes), TraceID: trace}); err != nil {
			t.Fatal(err)
		}
	}
	shown := func(id, agent, tool, args, customer, outcome string) {
		t.Helper()
		if err := db.Append(ctx, &Record{Agent: agent, Tool: tool, Args: []byte(args), ActionID: id, Phase: PhaseAttempt, Decision: "allow", Outcome: outcome, ShownCustomer: customer}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	read := func(id, agent, tool, args string) { t.Helper(); shown(id, agent, tool, args, "", OutcomeRead) }
	// Old history, a day before the rest.
	read("act_old", "agent-a", "get_customer", `{"customer_id":"cus_ada"}`)
	clock.t = clock.t.Add(24 * time.Hour)
	cut := clock.Now()

	done(act("act_u1", "agent-a", "update_account", `{"customer_id":"cus_ada","field":"phone","reason":"r","value":"+441234000111"}`, "cus_ada", StatusExecuting, ""),
		`{"tool":"update_account","customer_id":"cus_ada","fields":[{"field":"phone","before":"+441234567890","after":"+441234000111"}],"source":"read_before_call"}`, "")
	r1 := act("act_r1", "agent-a", "refund_order", `{"order_id":"ord_1","amount":"60.00","reason":"r"}`, "cus_ada", StatusPending, "")
	if _, err := db.Decide(ctx, "act_r1", Review{Approver: "boss", Approve: true}, func(a *Action, u Usage) (Review, error) {
		return Review{Approve: true, Decision: "allow"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	claimed, err := db.ClaimApproved(ctx, "act_r1")
	if err != nil {
		t.Fatal(err)
	}
	_ = r1
	done(claimed, `{"tool":"refund_order","customer_id":"cus_ada","order_id":"ord_1","fields":[],"source":"read_before_call"}`, "")
	done(act("act_r2", "agent-b", "refund_order", `{"order_id":"ord_2","amount":"5.00","reason":"r"}`, "cus_bob", StatusExecuting, ""), `{"tool":"refund_order","fields":[],"source":"read_before_call"}`, "")
	read("act_g1", "agent-b", "get_order", `{"order_id":"ord_1"}`)
	read("act_g2", "agent-a", "get_customer", `{"customer_id":"cus_bob"}`)
	read("act_bad", "agent-a", "get_order", `not json, as a record written by hand might be`)
	trace := "4bf92f3577b34da6a3ce929d0e0e4736"
	done(act("act_c1", "agent-b", "cancel_order", `{"order_id":"ord_3","reason":"r"}`, "cus_ada", StatusExecuting, trace), `{"tool":"cancel_order","fields":[],"source":"read_before_call"}`, trace)
	// Lookups that showed a customer their arguments do not name, and
	// lookups that found nothing and so showed nobody.
	shown("act_f1", "agent-c", "find_customer", `{"email":"ada@example.com"}`, "cus_ada", OutcomeRead)
	shown("act_s1", "agent-c", "get_action_status", `{"action_id":"act_r2"}`, "cus_bob", OutcomeRead)
	shown("act_o9", "agent-c", "get_order", `{"order_id":"ord_9"}`, "cus_bob", OutcomeRead)
	shown("act_nf", "agent-c", "find_customer", `{"email":"nobody@example.com"}`, "", OutcomeNotFound)
	shown("act_n2", "agent-c", "get_customer", `{"customer_id":"cus_gone"}`, "", OutcomeNotFound)

	seqs := map[string][]int64{}
	if err := db.Records(ctx, Filter{}, func(r *Record) error {
		seqs[r.ActionID] = append(seqs[r.ActionID], r.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return db, seqs, cut
}

func TestLineage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, seqs, cut := lineageDB(t, path)
	if len(seqs["act_r1"]) < 3 {
		t.Fatalf("the approved refund has records %v; want attempt, approval and outcome", seqs["act_r1"])
	}
	for _, indexed := range []bool{false, true} {
		// First with every record after audit_index's prefix (found
		// through audit_keys' tail), then with all of them indexed.
		if indexed {
			indexAll(t, db)
		}
		t.Run(map[bool]string{false: "unindexed", true: "indexed"}[indexed], func(t *testing.T) { checkLineage(t, db, seqs, cut) })
	}
}

// indexAll catches audit_index up with the whole trail, as the writer does
// in a commit nobody waits on.
func indexAll(t *testing.T, db *DB) {
	t.Helper()
	if db.postgres {
		return
	}
	if err := db.write(func(tx *Tx) error { _, err := tx.ExecContext(context.Background(), indexTail); return err }); err != nil {
		t.Fatal(err)
	}
	var indexed, records int
	db.db.QueryRow(`SELECT (SELECT COUNT(*) FROM audit_index), (SELECT COUNT(*) FROM audit)`).Scan(&indexed, &records)
	if indexed != records || records == 0 {
		t.Fatalf("audit_index holds %d of %d records", indexed, records)
	}
}

func checkLineage(t *testing.T, db *DB, seqs map[string][]int64, cut time.Time) {
	ctx := context.Background()
	trace := "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name    string
		f       LineageFilter
		actions []string
	}{
		{"customer: its account, its orders' actions and lookups", LineageFilter{CustomerID: "cus_ada"}, []string{"act_old", "act_u1", "act_r1", "act_g1", "act_c1", "act_f1"}},
		{"customer since", LineageFilter{CustomerID: "cus_ada", Since: cut}, []string{"act_u1", "act_r1", "act_g1", "act_c1", "act_f1"}},
		{"another customer: shown by status and order lookups", LineageFilter{CustomerID: "cus_bob"}, []string{"act_r2", "act_g2", "act_s1", "act_o9"}},
		{"a lookup that found nothing names its id only", LineageFilter{CustomerID: "cus_gone"}, []string{"act_n2"}},
		{"order", LineageFilter{OrderID: "ord_1"}, []string{"act_r1", "act_g1"}},
		{"order no action touched", LineageFilter{OrderID: "ord_9"}, []string{"act_o9"}},
		{"agent of lookups", LineageFilter{Agent: "agent-c"}, []string{"act_f1", "act_s1", "act_o9", "act_nf", "act_n2"}},
		{"agent: with the approval of its action", LineageFilter{Agent: "agent-a", Since: cut}, []string{"act_u1", "act_r1", "act_g2", "act_bad"}},
		{"agent with no since", LineageFilter{Agent: "agent-b"}, []string{"act_r2", "act_g1", "act_c1"}},
		{"trace alone", LineageFilter{TraceID: trace}, []string{"act_c1"}},
		{"customer in a trace", LineageFilter{CustomerID: "cus_ada", TraceID: trace}, []string{"act_c1"}},
		{"nobody", LineageFilter{CustomerID: "cus_nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []int64
			for _, a := range tt.actions {
				want = append(want, seqs[a]...)
			}
			slices.Sort(want)
			var got []int64
			if err := db.Lineage(ctx, tt.f, func(r *Record) error { got = append(got, r.Seq); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("seqs %v, want %v (actions %v)", got, want, tt.actions)
			}
		})
	}
	t.Run("records carry what changed and the trace", func(t *testing.T) {
		var changes, traced int
		if err := db.Lineage(ctx, LineageFilter{CustomerID: "cus_ada"}, func(r *Record) error {
			if len(r.Changes) > 0 {
				changes++
			}
			if r.TraceID == trace {
				traced++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if changes != 3 || traced != 2 {
			t.Fatalf("%d records with changes, %d in the trace; want 3 and 2", changes, traced)
		}
	})
	t.Run("export by trace", func(t *testing.T) {
		var got []int64
		if err := db.Records(ctx, Filter{TraceID: trace}, func(r *Record) error { got = append(got, r.Seq); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, seqs["act_c1"]) {
			t.Fatalf("export --trace: %v, want %v", got, seqs["act_c1"])
		}
	})
	if _, err := db.Verify(ctx); err != nil {
		t.Fatalf("the chain with changes and traces does not verify: %v", err)
	}
	// Lookups, found or not, have no action row, and the cross-check
	// knows it.
	cc, err := db.CrossCheck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Disagreements) > 0 {
		t.Fatalf("cross-check disagrees: %+v", cc.Disagreements)
	}
	t.Run("export carries the customer shown", func(t *testing.T) {
		var got []string
		if err := db.Records(ctx, Filter{Agent: "agent-c"}, func(r *Record) error {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			var back Record
			if err := json.Unmarshal(b, &back); err != nil {
				return err
			}
			got = append(got, back.Outcome+":"+back.ShownCustomer)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := []string{"read:cus_ada", "read:cus_bob", "read:cus_bob", "not_found:", "not_found:"}
		if !slices.Equal(got, want) {
			t.Fatalf("exported %v, want %v", got, want)
		}
	})
}

// TestAgentLineageShowsApprovalOfOlderAttempt: an agent's action asked for
// before --since and approved by a person inside the window: the agent's
// lineage since then shows the approval that let it happen, with the
// outcome (a review found only the outcome).
func TestAgentLineageShowsApprovalOfOlderAttempt(t *testing.T) {
	ctx := context.Background()
	db := openPath(t, filepath.Join(t.TempDir(), "mandate.db"))
	clock := &stepClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), step: time.Second}
	db.Now = clock.Now
	a := &Action{ID: "act_r1", Agent: "agent-a", Tool: "refund_order", Args: []byte(`{"order_id":"ord_1","amount":"60.00","reason":"r"}`), CustomerID: "cus_ada"}
	rec := &Record{Agent: "agent-a", Tool: a.Tool, Args: a.Args}
	if err := db.DecideAndRecord(ctx, a, rec, func(Usage) {
		a.Decision, a.Status, a.ExpiresAt = "require_approval", StatusPending, clock.Now().Add(48*time.Hour)
		rec.Decision = a.Decision
	}); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(25 * time.Hour)
	since := clock.t
	if _, err := db.Decide(ctx, "act_r1", Review{Approver: "boss", Approve: true}, func(*Action, Usage) (Review, error) {
		return Review{Approve: true, Decision: "allow"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	claimed, err := db.ClaimApproved(ctx, "act_r1")
	if err != nil {
		t.Fatal(err)
	}
	claimed.Status, claimed.Result = StatusExecuted, []byte(`{}`)
	if err := db.RecordOutcome(ctx, claimed, &Record{Agent: "agent-a", Tool: a.Tool, Args: a.Args, Outcome: StatusExecuted,
		Changes: json.RawMessage(`{"tool":"refund_order","customer_id":"cus_ada","order_id":"ord_1","fields":[],"source":"read_before_call"}`)}); err != nil {
		t.Fatal(err)
	}
	var phases []string
	if err := db.Lineage(ctx, LineageFilter{Agent: "agent-a", Since: since}, func(r *Record) error {
		phases = append(phases, r.Phase+" by "+r.Agent)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hasApproval := false
	for _, p := range phases {
		if p == PhaseApproval+" by boss" {
			hasApproval = true
		}
	}
	if !hasApproval {
		t.Fatalf("lineage --agent agent-a --since %s = %v: the approval by boss inside the window is missing", since.Format(time.RFC3339), phases)
	}
}

// TestLineageQueryPlans: every lineage searches indexes; none scans the
// audit trail or the actions, which grow with every call.
func TestLineageQueryPlans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, _, cut := lineageDB(t, path)
	for _, indexed := range []bool{false, true} {
		if indexed {
			indexAll(t, db)
		}
		checkLineagePlans(t, db, path, cut)
	}
}

func checkLineagePlans(t *testing.T, db *DB, path string, cut time.Time) {
	ctx := context.Background()
	stop := recordQueries(path)
	for _, f := range []LineageFilter{
		{CustomerID: "cus_ada"}, {CustomerID: "cus_ada", Since: cut, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{OrderID: "ord_1"}, {Agent: "agent-a", Since: cut}, {TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
	} {
		if err := db.Lineage(ctx, f, func(*Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := db.Correlation(ctx, "act_c1"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Filter{{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}, {Agent: "agent-a"}, {ActionID: "act_r1"}, {Since: cut}} {
		if err := db.Records(ctx, f, func(*Record) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.CheckAction(ctx, "act_r1"); err != nil {
		t.Fatal(err)
	}
	queries := stop()
	if len(queries) < 11 {
		t.Fatalf("recorded %d statements, want the 11 lineage, correlation, export and check queries", len(queries))
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

// TestNewColumnsHashed: changes, trace_id and conversation_id are covered
// by the hash chain, so editing, adding or removing any is detected; a
// record without them hashes exactly as before they existed.
func TestNewColumnsHashed(t *testing.T) {
	plain := &Record{Time: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), Agent: "a", Tool: "t", Phase: PhaseAttempt}
	if got, want := plain.hashed(), plain.fields(); !slices.Equal(got, want) {
		t.Fatalf("a record without the new columns hashes %v, want the original fields %v", got, want)
	}
	withChanges := *plain
	withChanges.Changes = json.RawMessage(`{"tool":"t"}`)
	if got := withChanges.hashed(); len(got) != len(plain.fields())+4 || got[len(got)-2] != "changes" {
		t.Fatalf("hashed with changes = %v; want approver, comment, then \"changes\" and its value", got)
	}
	for _, tt := range []struct{ name, stmt string }{
		{"changes edited", `UPDATE audit SET changes = replace(changes, '+441234567890', '+449999999999') WHERE changes != ''`},
		{"changes removed", `UPDATE audit SET changes = '' WHERE changes != ''`},
		{"trace edited", `UPDATE audit SET trace_id = '0af7651916cd43dd8448eb211c80319c' WHERE trace_id != ''`},
		{"trace added", `UPDATE audit SET trace_id = '0af7651916cd43dd8448eb211c80319c' WHERE seq = 1`},
		{"conversation added", `UPDATE audit SET conversation_id = 'conv-1' WHERE seq = 2`},
		{"shown customer edited", `UPDATE audit SET shown_customer = 'cus_other' WHERE shown_customer != ''`},
		{"shown customer removed", `UPDATE audit SET shown_customer = '' WHERE shown_customer != ''`},
		{"shown customer added", `UPDATE audit SET shown_customer = 'cus_ada' WHERE seq = 2`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, _, _ := lineageDB(t, filepath.Join(t.TempDir(), "mandate.db"))
			if _, err := db.Verify(context.Background()); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			vtTamper(t, db, tt.stmt)
			if _, err := db.Verify(context.Background()); err == nil {
				t.Fatalf("%s: the chain still verifies", tt.stmt)
			}
		})
	}
}

// TestAuditIndexOffTheAttempt: an attempt's transaction, which the agent
// waits for, writes no search keys; the commit of an outcome, which nobody
// waits for, indexes once a run of records is behind; a writer that only
// ever writes urgently still indexes once indexEvery records are. Until
// indexed, a record is found all the same (audit_keys' tail).
func TestAuditIndexOffTheAttempt(t *testing.T) {
	db := openPath(t, filepath.Join(t.TempDir(), "mandate.db"))
	if db.postgres {
		t.Skip("SQLite only: PostgreSQL keeps its indexes on audit")
	}
	ctx := context.Background()
	indexed := func() (n int64) {
		t.Helper()
		if err := db.db.QueryRow(`SELECT COUNT(*) FROM audit_index`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	found := func(f LineageFilter, want int) {
		t.Helper()
		n := 0
		if err := db.Lineage(ctx, f, func(*Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("lineage %+v: %d records, want %d", f, n, want)
		}
	}
	actions := indexRun / 2 // two records each: the last outcome makes the run
	for i := range actions {
		id := "act_" + itoa(i)
		a := &Action{ID: id, Agent: "bot", Tool: "refund_order", Args: []byte(`{"order_id":"ord_1","amount":"1.00","reason":"r"}`), CustomerID: "cus_1"}
		if err := db.DecideAndRecord(ctx, a, &Record{Agent: "bot", Tool: "refund_order", Args: a.Args}, func(Usage) { a.Decision, a.Status = "allow", StatusExecuting }); err != nil {
			t.Fatal(err)
		}
		if n := indexed(); n != 0 {
			t.Fatalf("attempt %d: audit_index holds %d records before a run was behind", i, n)
		}
		found(LineageFilter{OrderID: "ord_1"}, 2*i+1)
		found(LineageFilter{CustomerID: "cus_1"}, 2*i+1)
		if i == actions-1 {
			break // its outcome is the one that indexes: below
		}
		a.Status, a.Result = StatusExecuted, []byte(`{}`)
		db.RecordOutcomeBehind(ctx, a, &Record{Agent: "bot", Tool: "refund_order", Args: a.Args, Outcome: StatusExecuted})
		db.Settle(ctx)
	}
	a := &Action{ID: "act_" + itoa(actions-1), Agent: "bot", Tool: "refund_order", Args: []byte(`{"order_id":"ord_1","amount":"1.00","reason":"r"}`), Status: StatusExecuted, Result: []byte(`{}`)}
	db.RecordOutcomeBehind(ctx, a, &Record{Agent: "bot", Tool: "refund_order", Args: a.Args, Outcome: StatusExecuted})
	db.Settle(ctx)
	if n := indexed(); n != int64(2*actions) {
		t.Fatalf("after %d records and an outcome's commit audit_index holds %d", 2*actions, n)
	}
	found(LineageFilter{OrderID: "ord_1"}, 2*actions)
	found(LineageFilter{Agent: "bot"}, 2*actions)

	before := indexed()
	for i := range indexEvery {
		if err := db.Append(ctx, &Record{Agent: "bot", Tool: "get_order", Args: []byte(`{"order_id":"ord_2"}`), ActionID: "act_r" + itoa(i), Phase: PhaseAttempt, Outcome: "read"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := indexed(); n != before+indexEvery {
		t.Fatalf("after %d urgent appends audit_index holds %d records, want %d", indexEvery, n, before+indexEvery)
	}
	found(LineageFilter{OrderID: "ord_2"}, indexEvery)
}

// TestPGLineageByCustomerSearchesAnIndex: on PostgreSQL, a customer's
// records (named in the arguments or shown by a lookup) are found through
// the index on audit_keys.customer_id's expression (migration 0026), not by
// reading the whole trail.
func TestPGLineageByCustomerSearchesAnIndex(t *testing.T) {
	pgtest.Get(t)
	ctx := context.Background()
	db, _, _ := lineageDB(t, pgtest.URL(t))
	conn, err := db.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	plan, bad := pgScans(t, conn, `SELECT seq FROM audit_keys WHERE customer_id = $1`, "cus_ada")
	if len(bad) > 0 || !strings.Contains(plan, "audit_customer") {
		t.Fatalf("a customer's records are not found through audit_customer (%v):\n%s", bad, plan)
	}
}

// TestLineageAfterMigration0027: a trail indexed before migration 0027,
// whose audit_index rows name no customer for a refund's or a
// cancellation's records (their arguments name only the order), is found
// by customer after the upgrade exactly as a new one, and audit verify's
// index check agrees with every row.
func TestLineageAfterMigration0027(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	db, seqs, cut := lineageDB(t, path)
	if db.postgres {
		t.Skip("SQLite's audit_index only")
	}
	indexAll(t, db)
	ctx := context.Background()
	// Back to what 0026 left: customer_id as the record shows or names it,
	// the view without the action's customer, the actions index, and 0027
	// not applied.
	for _, q := range []string{
		`UPDATE audit_index SET customer_id = (SELECT COALESCE(NULLIF(shown_customer, ''), json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'))
			FROM audit WHERE audit.seq = audit_index.seq)`,
		`DROP VIEW audit_keys`,
		`CREATE VIEW audit_keys AS
			SELECT seq, time, agent, action_id, phase, customer_id, order_id FROM audit_index
			UNION ALL
			SELECT seq, time, agent, action_id, phase,
				COALESCE(NULLIF(shown_customer, ''), json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id')),
				json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id')
			FROM audit WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_index)`,
		`CREATE INDEX actions_customer ON actions (customer_id) WHERE customer_id != ''`,
		`DELETE FROM migrations WHERE name = 'migrations/0027_audit_index_action_customer.sql'`,
	} {
		if _, err := db.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var unnamed int
	if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_index WHERE action_id IN ('act_r1', 'act_c1') AND customer_id IS NULL`).Scan(&unnamed); err != nil || unnamed < 4 {
		t.Fatalf("before the upgrade, %d index rows of act_r1 and act_c1 name no customer (%v); want their every record", unnamed, err)
	}
	if c, err := db.CheckIndex(ctx); err != nil || len(c.Mismatches) == 0 {
		t.Fatalf("the index as 0026 left it should disagree with 0027's keys: %+v, %v", c, err)
	}
	db.Close()

	db = openPath(t, path) // applies 0027
	if c, err := db.CheckIndex(ctx); err != nil || len(c.Mismatches) != 0 || c.More != 0 {
		t.Fatalf("after 0027, audit verify's index check: %+v, %v", c, err)
	}
	var idx int
	if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'actions_customer'`).Scan(&idx); err != nil || idx != 0 {
		t.Fatalf("actions_customer still there (%d, %v)", idx, err)
	}
	checkLineage(t, db, seqs, cut)
}
